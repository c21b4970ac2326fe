//! The Citrix XenServer / XCP-ng adapter (XenAPI over XML-RPC). Its test peer, a pool
//! simulator, lives in the `sims` crate with its own XML-RPC code.
//!
//! Pipeline position: pool master ──XML-RPC──> [`client`] ──bytes──> [`codec`] ──records──>
//! [`mapping`] ──facts──> [`Adapter`] ──[`engine::Observation`]s──> the engine's session.
//!
//! Public API the binary calls:
//! - [`Config`] (serde, `deny_unknown_fields`): `url`, `user`, `password` (a
//!   [`crate::common::SecretSource`]), `tls` ([`crate::common::TlsOptions`]), timeouts
//!   (`connect_timeout_ms`, `liveness_secs`, `call_timeout_ms`), `event_timeout_secs` (below the
//!   liveness bound, so a hung xapi fails an `event.from`), `max_body_bytes`, backoff
//!   (`backoff_initial_ms`, `backoff_max_ms`, `fatal_retry_secs`), `resync_secs`.
//! - [`Adapter::new`]`(config)?.`[`run`](Adapter::run)`(link, grace, health)`: the protocol
//!   steps ([`adapter`]) run by the one session [`crate::driver`], which owns retries, liveness
//!   and loss reporting. A session logs in (following `HOST_IS_SLAVE [master]` only where
//!   [`redirect::follow`] trusts it: the same scheme, an address the pool lists), marks the
//!   resume point with `event.inject` on the pool object, reads pool, host, VM, VIF, network,
//!   PIF, VLAN and PIF_metrics with `get_all_records`, sends
//!   `Observation::Inventory { endpoint, facts, rejected }`, then follows `event.from` and sends
//!   `Observation::Delta` with exactly the facts that changed (only the parts of the fact set a
//!   batch touched are re-mapped: [`mapping::Facts`]). `SESSION_INVALID`, `EVENTS_LOST`,
//!   `HANDLE_INVALID` and a bad token log in again and re-read; `SESSION_AUTHENTICATION_FAILED`
//!   and a reply over the size cap retry on the slow schedule.
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

pub use adapter::Adapter;
pub use config::Config;
pub use error::{Error, Recovery, Result};
