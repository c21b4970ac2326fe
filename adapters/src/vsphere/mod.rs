//! The vSphere adapter: learns hosts, uplinks (CDP/LLDP), port groups and VM NICs from a vCenter
//! or ESXi host over the vSphere Web Services API (SOAP 1.1, `urn:vim25`), and reports them to
//! the engine as [`engine::Observation`]s. Its test peer, a vCenter simulator, lives in the
//! `sims` crate with its own SOAP code.
//!
//! Public API the binary calls:
//! - [`Config`] (serde, `deny_unknown_fields`): `url`, `user`, `password = { password_env | password_file }`,
//!   `tls`, timeouts (`connect_timeout_ms`, `liveness_secs`, `request_timeout_ms`), `wait_max_seconds`,
//!   `page_size`, `topology_refresh_ms`, `resync_secs`, backoff (`backoff_initial_ms`, `backoff_max_ms`,
//!   `fatal_retry_secs`), `max_body_bytes`.
//! - [`Adapter::new`]`(config)?` then [`Adapter::run`]`(link, grace, health).await`: the
//!   protocol steps run by the one session [`crate::driver`], which owns retries, liveness and
//!   loss reporting and never stops on an error. A session logs in, creates its own
//!   `PropertyCollector` and a container view, reads the full inventory as a new filter's first
//!   update sets (`CreateFilter`, then `WaitForUpdatesEx` from version `""`, paged by
//!   `maxObjectUpdates`; + `QueryNetworkHint` per host), then follows that filter with
//!   `WaitForUpdatesEx` from the version they ended at (`maxWaitSeconds` below the liveness
//!   bound, so a hung vCenter fails a request) and sends one `Delta` per update set with exactly
//!   the facts that changed; CDP/LLDP is re-read every `topology_refresh_ms`. An object whose
//!   change the mirror cannot apply is re-read with `RetrievePropertiesEx`. Logout destroys the
//!   collector (and its filters) first.
//!
//! Layout (the Xen adapter's file set): [`adapter`] (the protocol steps the driver runs),
//! [`config`], [`client`] (the only module owning reqwest), [`split`] (large replies read element
//! by element), [`codec`] (pure SOAP decoding/encoding), [`mapping`] (vendor data → facts),
//! [`error`].

pub mod adapter;
pub mod client;
pub mod codec;
pub mod config;
pub mod error;
pub mod mapping;
pub mod split;

pub use adapter::{Adapter, Session};
pub use config::Config;
pub use error::{Error, Result};
