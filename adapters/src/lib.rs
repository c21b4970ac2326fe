//! netfold's protocol adapters and the faithful simulators of each peer.
//!
//! Layout (each adapter has the same file set: `config`, `client`, `codec`, `mapping`, `sim`):
//! - [`common`]: what every adapter shares — secrets (never logged), TLS options, the HTTP client.
//! - [`vsphere`]: VMware vSphere (SOAP `urn:vim25`) adapter and vCenter simulator.
//! - [`xen`]: Citrix XenServer / XCP-ng over XenAPI XML-RPC, with a pool simulator.
//! - [`ovs`]: Open vSwitch over OVSDB (RFC 7047) as a managed switch.
//! - [`eapi`]: Arista EOS eAPI as a managed switch, and its fixture server `eapi::sim`.
//!
//! Adapters report [`engine::Observation`]s; they never write events and know nothing of the log.

pub mod common;
pub mod driver;
pub mod eapi;
pub mod ovs;
pub mod sim_fault;
pub mod vsphere;
pub mod xen;
