//! The adapter's run loop: log in, read the pool, report an `Inventory`, then follow
//! `event.from` and report exact `Delta`s; recover from every XenAPI failure by policy.
//!
//! ```text
//!  login ──> event.inject ──> get_all_records ×8 ──> Inventory ──> event.from loop ──> Delta ...
//!    ^                                                 │ error
//!    └──── Relogin / Reread / FollowMaster(addr) <─────┤
//!    └──── backoff (capped, jittered) <── Disconnected ┘ transport loss
//! ```
//! The policy is [`super::Error::recovery`]; the delay is [`Backoff`]; both are pure.

use std::collections::BTreeMap;
use std::time::Duration;

use engine::{Fact, FactKey, Observation, Rejected};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn, Instrument};

use crate::common::Secret;

use super::client::{Client, Session};
use super::config::Config;
use super::error::{Error, Recovery, Result};
use super::mapping::{self, Mirror, CLASSES};

/// Capped exponential backoff with jitter. Pure: the caller supplies the random draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay before retry number `attempt` (0-based): `min · 2^attempt`, capped at `max`,
    /// then scaled into `[½, 1]` of itself by `jitter ∈ [0, 1]`.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let base = self.min.saturating_mul(2u32.saturating_pow(attempt.min(30))).min(self.max);
        base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// Where to reconnect when a pool member answers `HOST_IS_SLAVE [master]`: the master's
/// address with the current URL's scheme. xapi names the master by address alone (port
/// implied by the scheme); an address with a port (`10.0.0.1:8443`) keeps it.
pub fn master_url(current: &str, master: &str) -> String {
    if master.contains("://") {
        return master.to_string();
    }
    let scheme = current.split_once("://").map_or("https", |(s, _)| s);
    let host = if master.parse::<std::net::Ipv6Addr>().is_ok() { format!("[{master}]") } else { master.to_string() };
    format!("{scheme}://{host}")
}

/// The XenAPI adapter for one pool.
pub struct Adapter {
    config: Config,
    password: Secret,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter").field("url", &self.config.url).field("user", &self.config.user).finish()
    }
}

/// How far one connection got before it ended.
struct Ended {
    error: Error,
    /// An `Inventory` was sent on this connection.
    reported: bool,
}

impl Adapter {
    /// Validates the config and reads the password (once; it is never logged).
    pub fn new(config: Config) -> Result<Self> {
        config.validate()?;
        let password = config.password.load()?;
        Ok(Self { config, password })
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            min: Duration::from_millis(self.config.reconnect_min_ms),
            max: Duration::from_millis(self.config.reconnect_max_ms),
        }
    }

    /// Runs until `tx` is closed (returns `Ok`) or a failure that retrying cannot fix (bad
    /// credentials, unusable config: returns the error).
    pub async fn run(self, tx: mpsc::Sender<Observation>) -> Result<()> {
        let mut url = self.config.url.clone();
        let mut attempt: u32 = 0;
        let mut live = false;
        let mut redirects = 0u32;
        loop {
            let span = tracing::info_span!("xen_session", endpoint = %url);
            let Ended { error, reported } = self.connection(&url, &tx).instrument(span).await;
            if reported {
                live = true;
                attempt = 0;
                redirects = 0;
            }
            let recovery = error.recovery();
            let pause = match &recovery {
                Recovery::Stop => {
                    if matches!(error, Error::ChannelClosed) {
                        return Ok(());
                    }
                    error!(endpoint = %url, error = %error, "XenAPI adapter stopped");
                    if live {
                        let _ = tx.send(Observation::Disconnected { reason: error.to_string() }).await;
                    }
                    return Err(error);
                }
                Recovery::FollowMaster(master) => {
                    let next = master_url(&url, master);
                    info!(from = %url, to = %next, "pool member is a slave; following the master");
                    url = next;
                    redirects += 1;
                    // A pool that keeps redirecting is backed off like a transport failure.
                    redirects > 3
                }
                Recovery::Relogin | Recovery::Reread => {
                    info!(endpoint = %url, error = %error, ?recovery, "re-reading the pool");
                    // Immediate when the connection had got going; otherwise avoid a hot loop.
                    !reported
                }
                Recovery::Reconnect => {
                    warn!(endpoint = %url, error = %error, attempt, "XenAPI connection lost");
                    if live {
                        live = false;
                        if tx.send(Observation::Disconnected { reason: error.to_string() }).await.is_err() {
                            return Ok(());
                        }
                    }
                    true
                }
            };
            if pause {
                let delay = self.backoff().delay(attempt, rand::random::<f64>());
                attempt = attempt.saturating_add(1);
                debug!(delay_ms = delay.as_millis() as u64, attempt, "backing off");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = tx.closed() => return Ok(()),
                }
            }
        }
    }

    /// One connection: login, full read, inventory, then events until something fails.
    async fn connection(&self, url: &str, tx: &mpsc::Sender<Observation>) -> Ended {
        let mut reported = false;
        let error = match self.connection_inner(url, tx, &mut reported).await {
            Ok(never) => match never {},
            Err(e) => e,
        };
        Ended { error, reported }
    }

    async fn connection_inner(
        &self,
        url: &str,
        tx: &mpsc::Sender<Observation>,
        reported: &mut bool,
    ) -> Result<std::convert::Infallible> {
        let c = &self.config;
        c.tls.warn_if_insecure(url);
        let client = Client::new(url, &c.tls, c.call_timeout(), c.event_http_timeout(), c.max_body_bytes)?;
        let session = Session::login(client, &c.user, &self.password).await?;
        debug!("logged in");
        // Mark "now" in the event stream before reading, so event.from resumes without a gap.
        // Without a pool object (or event.inject) the empty token re-delivers every object.
        let mut token = match session.get_all("pool").await?.first() {
            Some(pool) => session.event_inject("pool", pool).await?,
            None => String::new(),
        };
        let mut mirror = Mirror::default();
        for class in CLASSES {
            for (r, rec) in session.get_all_records(class).await? {
                mirror.upsert(class, &r, &rec);
            }
        }
        let (mut facts, mut rejected) = mirror.facts();
        info!(facts = facts.len(), rejected = rejected.len(), "XenAPI inventory read");
        send(
            tx,
            Observation::Inventory {
                endpoint: url.to_string(),
                facts: facts.values().cloned().collect(),
                rejected: rejected.clone(),
            },
        )
        .await?;
        *reported = true;
        loop {
            let batch = session.event_from(&CLASSES, &token, c.event_timeout_secs).await?;
            token = batch.token;
            if batch.events.is_empty() {
                continue;
            }
            for e in &batch.events {
                mirror.apply(e);
            }
            let (next, next_rejected) = mirror.facts();
            let changes = mapping::diff(&facts, &next);
            let fresh = mapping::new_rejections(&rejected, &next_rejected);
            debug!(events = batch.events.len(), changes = changes.len(), rejected = fresh.len(), "event batch");
            if !changes.is_empty() || !fresh.is_empty() {
                send(tx, Observation::Delta { changes, rejected: fresh }).await?;
            }
            facts = next;
            rejected = next_rejected;
        }
    }
}

async fn send(tx: &mpsc::Sender<Observation>, o: Observation) -> Result<()> {
    tx.send(o).await.map_err(|_| Error::ChannelClosed)
}

/// The facts of an inventory, keyed (used by tests and callers that diff).
pub fn keyed(facts: &[Fact]) -> BTreeMap<FactKey, Fact> {
    facts.iter().map(|f| (f.key(), f.clone())).collect()
}

/// Rejections sorted for comparison.
pub fn sorted(mut r: Vec<Rejected>) -> Vec<Rejected> {
    r.sort_by(|a, b| (&a.what, &a.why).cmp(&(&b.what, &b.why)));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps_with_jitter_in_the_upper_half() {
        let b = Backoff { min: Duration::from_millis(100), max: Duration::from_secs(2) };
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(800));
        assert_eq!(b.delay(10, 1.0), Duration::from_secs(2));
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::from_secs(1));
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(50));
    }

    #[test]
    fn master_url_keeps_the_scheme() {
        assert_eq!(master_url("https://10.0.0.2", "10.0.0.1"), "https://10.0.0.1");
        assert_eq!(master_url("http://127.0.0.1:4000", "127.0.0.1:4001"), "http://127.0.0.1:4001");
        assert_eq!(master_url("https://[fe80::2]", "fe80::1"), "https://[fe80::1]");
    }
}
