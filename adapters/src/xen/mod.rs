//! The Citrix XenServer / XCP-ng adapter (XenAPI over XML-RPC) and a faithful pool simulator.
//!
//! Pipeline position: pool master ──XML-RPC──> [`client`] ──bytes──> [`codec`] ──records──>
//! [`mapping`] ──facts──> [`Adapter`] ──[`engine::Observation`]s──> the engine's session.
//!
//! Public API the binary calls:
//! - [`Config`] (serde, `deny_unknown_fields`): `url`, `user`, `password` (a
//!   [`crate::common::SecretSource`]), `tls` ([`crate::common::TlsOptions`]), `call_timeout_ms`,
//!   `event_timeout_secs` (the HTTP timeout of `event.from` is this plus the call timeout),
//!   `max_body_bytes`, `reconnect_min_ms` / `reconnect_max_ms`.
//! - [`Adapter::new`]`(config)?.`[`run`](Adapter::run)`(tx)`: log in, mark the resume point
//!   with `event.inject` on the pool object, read pool, host, VM, VIF, network, PIF, VLAN and
//!   PIF_metrics with `get_all_records`, send
//!   `Observation::Inventory { endpoint, facts, rejected }`, then follow `event.from` and send
//!   `Observation::Delta` with exactly the facts that changed (only the parts of the fact set
//!   a batch touched are re-mapped: [`mapping::Facts`]). Transport loss sends
//!   `Observation::Disconnected { reason }` and retries with capped exponential backoff and
//!   jitter; every reconnect sends a fresh full inventory. `SESSION_AUTHENTICATION_FAILED` stops
//!   with [`Error::AuthenticationFailed`] (no retry loop); `SESSION_INVALID` logs in again;
//!   `HOST_IS_SLAVE [master]` reconnects to the master named when [`redirect::follow`] trusts
//!   it (same scheme, an address the pool lists), else backs off and stays; `EVENT_FROM_TOKEN_PARSE_FAILURE`,
//!   `EVENTS_LOST` and `HANDLE_INVALID` re-read everything. `run` returns `Ok` when `tx` closes.
//!   The policy is the pure state machine [`Retry`] (`step` → [`Next`]).
//! - [`sim::Simulator::start`]`(`[`sim::SimOptions`]`)` for tests, and [`sim::serve`] for
//!   `netfold sim xen --listen ADDR --hosts N --vms-per-host M --vlans K`.
//!
//! The fact mapping and the LLDP keys read from `PIF_metrics.other_config`
//! ([`mapping::LLDP_SYSTEM_NAME`], [`mapping::LLDP_PORT_ID`]) are documented in [`mapping`].
//! Passwords and session refs are never logged.

pub mod adapter;
pub mod client;
pub mod codec;
pub mod config;
pub mod error;
pub mod mapping;
pub mod redirect;
pub mod sim;

pub use adapter::{Adapter, Backoff, Next, Retry};
pub use config::Config;
pub use error::{Error, Recovery, Result};
