//! Test peers for netfold, apart from the product: each is written from the vendor's reference
//! with its own wire code and depends on no netfold crate, so a mistake in a netfold codec or
//! constant is not made on both sides of a test (`tests/independence.rs` keeps it so).
//!
//! - [`vsphere`]: a vCenter simulator (vSphere SOAP `urn:vim25`; `docs/vsphere-simulator.md`).
//! - [`xen`]: a XenServer pool simulator (xapi XML-RPC; `docs/xen-simulator.md`).
//! - [`eapi`]: an Arista eAPI switch (`runCmds` JSON-RPC with EOS's JSON shapes).
//! - [`ovs_lab`]: a private Open vSwitch (its own ovsdb-server and ovs-vswitchd).
//! - [`postgres`]: a private PostgreSQL cluster (Debian's server binaries) for the store's tests.
//! - [`vcsim`]: VMware's own vCenter simulator, built from Debian's govmomi and run as a peer.
//! - [`fault`]: the misbehaviours a test can switch on in either hypervisor simulator.
//! - [`xml`]: the simulators' XML reader.

pub mod eapi;
pub mod fault;
pub mod ovs_lab;
pub mod postgres;
pub mod vcsim;
pub mod vsphere;
pub mod xen;
pub mod xml;
