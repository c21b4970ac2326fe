//! The vSphere adapter: learns hosts, uplinks (CDP/LLDP), port groups and VM NICs from a vCenter
//! or ESXi host over the vSphere Web Services API (SOAP 1.1, `urn:vim25`), and reports them to
//! the engine as [`engine::Observation`]s. Plus [`sim`], a vCenter simulator serving the same
//! SOAP subset over loopback HTTP.
//!
//! Public API the binary calls:
//! - [`Config`] (serde, `deny_unknown_fields`): `url`, `user`, `password = { password_env | password_file }`,
//!   `tls`, `request_timeout_ms`, `wait_max_seconds`, `page_size`, `topology_refresh_ms`,
//!   `backoff_initial_ms`, `backoff_max_ms`, `max_body_bytes`.
//! - [`Adapter::new`]`(config)?` then [`Adapter::run`]`(tx).await`: runs until the receiver is
//!   dropped (`Ok(())`), the future is cancelled, or a fatal error (`Err`: wrong password,
//!   oversized response, bad config). It logs in, sends the full `Inventory`
//!   (`RetrievePropertiesEx` paging + `QueryNetworkHint` per host), then follows
//!   `CreateFilter` + `WaitForUpdatesEx` and sends one `Delta` per update set with exactly the
//!   facts that changed; CDP/LLDP is re-read every `topology_refresh_ms` (a `Delta` when it
//!   changed). A transport failure sends `Disconnected { reason }` and reconnects with capped
//!   exponential backoff and jitter; a dropped session (`NotAuthenticated`) logs in again at
//!   once. After every (re-)login a fresh full `Inventory` is sent; the engine diffs it.
//! - [`sim::Simulator::start`]`(SimOptions) -> SimHandle` (URL, credentials, control methods)
//!   and [`sim::serve`]`(SimOptions)` for `netfold sim vcenter` (prints URL and credentials,
//!   serves until Ctrl-C; [`sim::serve_until`] takes the shutdown future).
//!
//! Layout: [`config`], [`client`] (the only module owning reqwest), [`codec`] (pure SOAP
//! decoding/encoding), [`mapping`] (vendor data → facts), [`sim`], [`error`].

pub mod client;
pub mod codec;
pub mod config;
pub mod error;
pub mod mapping;
pub mod sim;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::time::Duration;

use engine::{Observation, Rejected};
use futures::StreamExt;
use rand::Rng;
use tokio::sync::mpsc;

use crate::common::{HttpClient, Secret};
use client::Session;
use codec::MoRef;
use mapping::{Inventory, Mapper};

pub use config::Config;
pub use error::{Error, Result};

/// How many `QueryNetworkHint` calls run at once.
const HINT_CONCURRENCY: usize = 8;

/// The reconnect schedule: [`engine::backoff::Backoff`] and how many attempts have failed since
/// the last session reached steady state.
#[derive(Clone, Debug)]
pub struct Backoff {
    schedule: engine::backoff::Backoff,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { schedule: engine::backoff::Backoff::new(initial, max), attempt: 0 }
    }

    /// The next delay: attempt *n* waits a random time in `[d/2, d]`, `d = min(max, initial·2^n)`.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let d = self.schedule.delay(self.attempt, rng.gen_range(0.0..=1.0));
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// Back to the initial delay (after a session reached steady state).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Why a session ended.
enum Stop {
    /// The observation receiver is gone: stop quietly.
    Closed,
    Failed(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Failed(e)
    }
}

/// The vSphere adapter for one endpoint.
pub struct Adapter {
    config: Config,
    url: String,
    password: Secret,
    http: HttpClient,
}

impl Adapter {
    /// Validates the config, reads the password and builds the HTTP client.
    pub fn new(config: Config) -> Result<Self> {
        config.validate()?;
        let password = config.password.load()?;
        let http = HttpClient::new(&config.tls, config.request_timeout(), config.max_body_bytes)?;
        Ok(Self { url: config.sdk_url(), config, password, http })
    }

    /// Runs until the receiver is dropped (`Ok`) or a fatal error (`Err`); see the module doc.
    pub async fn run(self, tx: mpsc::Sender<Observation>) -> Result<()> {
        let mut backoff = Backoff::new(
            Duration::from_millis(self.config.backoff_initial_ms),
            Duration::from_millis(self.config.backoff_max_ms),
        );
        let mut live = false;
        loop {
            let mut steady = false;
            let err = match self.session(&tx, &mut steady).await {
                Ok(never) => match never {},
                Err(Stop::Closed) => return Ok(()),
                Err(Stop::Failed(e)) => e,
            };
            live |= steady;
            if !err.is_retryable() {
                tracing::error!(endpoint = %self.url, error = %err.chain(), "vSphere adapter stopped");
                if live {
                    // The engine must learn the session is gone (its grace period starts).
                    let _ = tx.send(Observation::Disconnected { reason: err.chain() }).await;
                }
                return Err(err);
            }
            if steady {
                backoff.reset();
            }
            if matches!(err, Error::NotAuthenticated { .. }) && steady {
                tracing::info!(endpoint = %self.url, "vSphere session dropped by the server; logging in again");
                continue;
            }
            if live {
                live = false;
                if tx.send(Observation::Disconnected { reason: err.chain() }).await.is_err() {
                    return Ok(());
                }
            }
            let delay = backoff.next_delay(&mut rand::thread_rng());
            tracing::warn!(endpoint = %self.url, error = %err.chain(), retry_in_ms = delay.as_millis() as u64, "vSphere connection failed");
            tokio::time::sleep(delay).await;
        }
    }

    /// One session: login, then [`Adapter::follow`] until it fails. When the receiver is gone
    /// the session is logged out (best effort) so it does not linger on vCenter.
    async fn session(&self, tx: &mpsc::Sender<Observation>, steady: &mut bool) -> Result<Infallible, Stop> {
        self.config.tls.warn_if_insecure(&self.url);
        let s = Session::login(&self.http, &self.url, &self.config.user, &self.password).await?;
        let r = self.follow(&s, tx, steady).await;
        if let Err(Stop::Closed) = &r {
            if let Err(e) = s.logout().await {
                tracing::debug!(endpoint = %self.url, error = %e, "vSphere logout failed");
            }
        }
        r
    }

    /// Full inventory, then updates and topology refreshes, until an error.
    async fn follow(&self, s: &Session, tx: &mpsc::Sender<Observation>, steady: &mut bool) -> Result<Infallible, Stop> {
        let view = s.create_container_view(mapping::VIEW_TYPES).await?;
        let spec = codec::filter_spec(&view, &mapping::prop_specs());
        let mut inv = Inventory::from_contents(s.retrieve_all(&spec, self.config.page_size).await?);
        let systems = inv.network_systems();
        refresh_hints(s, &mut inv, systems).await?;
        let mut mapper = Mapper::default();
        mapper.sync(&mut inv);
        let current = mapper.all();
        tracing::info!(
            endpoint = %self.url,
            hosts = inv.count(mapping::HOST),
            vms = inv.count(mapping::VM),
            facts = current.facts.len(),
            rejected = current.rejected.len(),
            "vSphere inventory loaded"
        );
        let obs = Observation::Inventory {
            endpoint: self.url.clone(),
            facts: current.facts.values().cloned().collect(),
            rejected: current.rejected.clone(),
        };
        tx.send(obs).await.map_err(|_| Stop::Closed)?;
        *steady = true;

        s.create_filter(&spec).await?;
        let (wait_s, page) = (self.config.wait_max_seconds, self.config.page_size);
        let mut version = String::new();
        let mut wait = Box::pin(s.wait_for_updates(version.clone(), wait_s, page));
        let refresh = self.config.topology_refresh();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + refresh, refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hints: Option<std::pin::Pin<Box<HintsFuture<'_>>>> = None;
        loop {
            tokio::select! {
                r = &mut wait => {
                    // `None`: nothing changed within maxWaitSeconds; ask again from the same version.
                    if let Some(us) = r? {
                        version = us.version.clone();
                        let mut refetch = BTreeSet::new();
                        let mut new_hosts = Vec::new();
                        for u in &us.objects {
                            // A new filter's first update set re-sends hosts already known:
                            // only hosts new to the mirror need their topology read.
                            if u.obj.kind == mapping::HOST && u.kind == codec::UpdateKind::Enter && !inv.contains(&u.obj) {
                                new_hosts.push(u.obj.value.clone());
                            }
                            if inv.apply_update(u) {
                                refetch.insert(u.obj.clone());
                            }
                        }
                        for obj in refetch {
                            refetch_object(s, &mut inv, &obj).await?;
                        }
                        if !new_hosts.is_empty() {
                            let systems = inv.network_systems().into_iter().filter(|(h, _)| new_hosts.contains(h)).collect();
                            refresh_hints(s, &mut inv, systems).await?;
                        }
                        if !us.truncated {
                            send_delta(tx, &mut inv, &mut mapper).await?;
                        }
                    }
                    wait.set(s.wait_for_updates(version.clone(), wait_s, page));
                }
                _ = tick.tick(), if hints.is_none() => {
                    // Queried concurrently with the pending wait, so updates are not held up.
                    hints = Some(Box::pin(query_hints(s, inv.network_systems())));
                }
                r = async { hints.as_mut().expect("guarded by is_some").await }, if hints.is_some() => {
                    hints = None;
                    for (host, h) in r? {
                        inv.set_hints(&host, h);
                    }
                    send_delta(tx, &mut inv, &mut mapper).await?;
                }
            }
        }
    }
}

/// Re-reads one object whose update could not be applied property by property.
async fn refetch_object(s: &Session, inv: &mut Inventory, obj: &MoRef) -> Result<()> {
    let spec = codec::filter_spec(obj, &mapping::prop_specs());
    for c in s.retrieve_all(&spec, 1).await? {
        inv.replace_object(c);
    }
    Ok(())
}

type HintsFuture<'a> = dyn std::future::Future<Output = Result<Vec<(String, Vec<codec::PnicHint>)>>> + Send + 'a;

/// `QueryNetworkHint` for these hosts, a few at a time. A fault on one host (a disconnected
/// host) is logged and that host skipped; transport and session errors end the session.
async fn query_hints(s: &Session, systems: Vec<(String, MoRef)>) -> Result<Vec<(String, Vec<codec::PnicHint>)>> {
    let mut results = futures::stream::iter(systems)
        .map(|(host, ns)| async move { (host, s.query_network_hint(&ns).await) })
        .buffer_unordered(HINT_CONCURRENCY);
    let mut out = Vec::new();
    while let Some((host, r)) = results.next().await {
        match r {
            Ok(h) => out.push((host, h)),
            Err(Error::Fault { fault_type, message, .. }) => {
                tracing::warn!(host = %host, fault_type, message, "QueryNetworkHint failed; keeping the last topology");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// [`query_hints`] stored into the mirror.
async fn refresh_hints(s: &Session, inv: &mut Inventory, systems: Vec<(String, MoRef)>) -> Result<()> {
    for (host, h) in query_hints(s, systems).await? {
        inv.set_hints(&host, h);
    }
    Ok(())
}

/// Maps the objects changed since the last delta, diffs their facts against what was sent and
/// sends the `Delta` if anything changed (new rejections included).
async fn send_delta(tx: &mpsc::Sender<Observation>, inv: &mut Inventory, mapper: &mut Mapper) -> Result<(), Stop> {
    let (changes, rejected): (_, Vec<Rejected>) = mapper.sync(inv);
    if changes.is_empty() && rejected.is_empty() {
        return Ok(());
    }
    tracing::debug!(changes = changes.len(), rejected = rejected.len(), "vSphere delta");
    tx.send(Observation::Delta { changes, rejected }).await.map_err(|_| Stop::Closed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_caps_and_jitters_within_half() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<_> = (0..8).map(|_| b.next_delay(&mut rng)).collect();
        for (i, d) in delays.iter().enumerate() {
            let cap = Duration::from_millis((100u64 << i).min(1000));
            assert!(*d >= cap / 2 && *d <= cap, "attempt {i}: {d:?} not in [{:?}, {cap:?}]", cap / 2);
        }
        b.reset();
        assert!(b.next_delay(&mut rng) <= Duration::from_millis(100));
    }
}
