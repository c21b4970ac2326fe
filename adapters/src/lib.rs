//! netfold's protocol adapters: only what runs in production (the test peers live in `sims`).
//!
//! Layout (each hypervisor adapter has the same file set: `config`, `client`, `codec`,
//! `mapping`, `error`):
//! - [`common`]: what every adapter shares — secrets (never logged), TLS options, the HTTP client.
//! - [`driver`]: the one hypervisor session driver both adapters plug into.
//! - [`vsphere`]: VMware vSphere (SOAP `urn:vim25`).
//! - [`xen`]: Citrix XenServer / XCP-ng over XenAPI XML-RPC.
//! - [`ovs`]: Open vSwitch over OVSDB (RFC 7047) as a managed switch.
//! - [`eapi`]: Arista EOS eAPI as a managed switch.
//!
//! Adapters report [`engine::Observation`]s; they never write events and know nothing of the log.

pub mod common;
pub mod driver;
pub mod eapi;
pub mod ovs;
pub mod vsphere;
pub mod xen;
