//! The vSphere protocol steps the session [`crate::driver`] runs: log in, create a collector of
//! the session's own and a container view, read the inventory (`CreateFilter` and the filter's
//! first `WaitForUpdatesEx` update sets, paged, + `QueryNetworkHint`), then follow the same
//! filter with `WaitForUpdatesEx` from their version and report exact deltas.

use std::collections::BTreeSet;
use std::convert::Infallible;

use engine::Observation;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::common::{HttpClient, SecretString};
use crate::driver::{self, Class, Follow, Health, Inventory as Read, Peer};

use super::codec::MoRef;
use super::mapping::{Inventory, Mapper};
use super::{client, codec, mapping, Config, Error, Result};

/// How many `QueryNetworkHint` calls run at once.
const HINT_CONCURRENCY: usize = 8;

/// The vSphere adapter for one endpoint: the protocol steps the [`driver`] runs.
pub struct Adapter {
    config: Config,
    url: String,
    password: SecretString,
    http: HttpClient,
}

/// One logged-in session with its own `PropertyCollector` (so no other client of the same user
/// can take its update stream), container view, mirror and filter.
pub struct Session {
    client: client::Session,
    collector: MoRef,
    spec: String,
    inv: Inventory,
    mapper: Mapper,
    filter: Option<MoRef>,
    version: String,
    next_hints: Instant,
}

impl Adapter {
    /// Validates the config, reads the password and builds the HTTP client.
    pub fn new(config: Config) -> Result<Self> {
        config.validate()?;
        let password = config.password.load()?;
        let http = HttpClient::new(&config.tls, &config.timeouts(), config.max_body_bytes)?;
        Ok(Self { url: config.sdk_url(), config, password, http })
    }

    /// Runs the adapter with the engine's link until the engine drops it; never stops on an
    /// error (see [`driver`]). `grace`: the hypervisor's grace period.
    pub async fn run(self, link: engine::runtime::Link, grace: std::time::Duration, health: std::sync::Arc<Health>) {
        let timing = self.config.timing(grace);
        driver::run(self, timing, link, health).await
    }

    /// Runs the adapter into a plain channel (no asks from the engine), for tools and tests.
    pub async fn run_into(self, tx: mpsc::Sender<Observation>) {
        let (_asks_tx, asks) = mpsc::channel(1);
        let health = Health::new(&self.url);
        self.run(engine::runtime::Link { observations: tx, asks }, engine::config::DEFAULT_GRACE, health).await
    }
}

impl Peer for Adapter {
    type Session = Session;
    type Error = Error;
    const PROTOCOL: &'static str = "vSphere";

    fn class(e: &Error) -> Class {
        match e {
            Error::NotAuthenticated { .. } => Class::SessionGone,
            e if e.is_retryable() => Class::Transport,
            _ => Class::Fatal,
        }
    }

    fn endpoint(&self) -> String {
        self.url.clone()
    }

    async fn login(&self) -> Result<Session> {
        self.config.tls.warn_if_insecure(&self.url);
        let client = client::Session::login(&self.http, &self.url, &self.config.user, &self.password).await?;
        let collector = match client.create_property_collector().await {
            Ok(c) => c,
            Err(e) => {
                let _ = client.logout().await;
                return Err(e);
            }
        };
        let view = client.create_container_view(mapping::VIEW_TYPES).await?;
        let spec = codec::filter_spec(&view, &mapping::prop_specs());
        Ok(Session {
            client,
            collector,
            spec,
            inv: Inventory::default(),
            mapper: Mapper::default(),
            filter: None,
            version: String::new(),
            next_hints: Instant::now() + self.config.topology_refresh(),
        })
    }

    async fn read(&self, s: &mut Session) -> Result<Read> {
        if let Some(f) = s.filter.take() {
            s.client.destroy_filter(&f).await?;
        }
        // The inventory is the new filter's first update sets, and following goes on from their
        // version: nothing is sent twice. (A `RetrievePropertiesEx` read followed by the
        // filter's first update set had every object sent again, seconds at 50,000 VMs during
        // which no change reached the engine.)
        s.filter = Some(s.client.create_filter(&s.collector, &s.spec).await?);
        let (updates, version) = s.client.initial_updates(&s.collector, self.config.page_size).await?;
        let (mut inv, refetch) = Inventory::from_updates(updates);
        for obj in refetch {
            refetch_object(&s.client, &s.collector, &mut inv, &obj).await?;
        }
        let systems = inv.network_systems();
        refresh_hints(&s.client, &mut inv, systems).await?;
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
        let read = Read {
            endpoint: self.url.clone(),
            facts: current.facts.values().cloned().collect(),
            rejected: current.rejected.clone(),
        };
        s.version = version;
        s.inv = inv;
        s.mapper = mapper;
        s.next_hints = Instant::now() + self.config.topology_refresh();
        Ok(read)
    }

    async fn follow(&self, s: &mut Session, out: &Follow) -> Result<Infallible> {
        let (wait_s, page) = (self.config.wait_max_seconds, self.config.page_size);
        let Session { client, collector, inv, mapper, version, next_hints, .. } = s;
        let (client, collector) = (&*client, &*collector);
        let mut wait = Box::pin(client.wait_for_updates(collector, version.clone(), wait_s, page));
        let mut hints: Option<std::pin::Pin<Box<HintsFuture<'_>>>> = None;
        loop {
            tokio::select! {
                r = &mut wait => {
                    let r = r?;
                    out.answered();
                    // `None`: nothing changed within maxWaitSeconds; ask again from the same version.
                    if let Some(us) = r {
                        *version = us.version.clone();
                        let mut refetch = BTreeSet::new();
                        let mut new_hosts = Vec::new();
                        for u in &us.objects {
                            // Only hosts new to the mirror need their topology read.
                            if u.obj.kind == mapping::HOST && u.kind == codec::UpdateKind::Enter && !inv.contains(&u.obj) {
                                new_hosts.push(u.obj.value.clone());
                            }
                            if inv.apply_update(u) {
                                refetch.insert(u.obj.clone());
                            }
                        }
                        for obj in refetch {
                            refetch_object(client, collector, inv, &obj).await?;
                        }
                        if !new_hosts.is_empty() {
                            let systems = inv.network_systems().into_iter().filter(|(h, _)| new_hosts.contains(h)).collect();
                            refresh_hints(client, inv, systems).await?;
                        }
                        if !us.truncated {
                            send_delta(out, inv, mapper).await;
                        }
                    }
                    wait.set(client.wait_for_updates(collector, version.clone(), wait_s, page));
                }
                _ = tokio::time::sleep_until(*next_hints), if hints.is_none() => {
                    // Queried concurrently with the pending wait, so updates are not held up.
                    hints = Some(Box::pin(query_hints(client, inv.network_systems())));
                }
                r = async { hints.as_mut().expect("guarded by is_some").await }, if hints.is_some() => {
                    hints = None;
                    *next_hints = Instant::now() + self.config.topology_refresh();
                    for (host, h) in r? {
                        inv.set_hints(&host, h);
                    }
                    send_delta(out, inv, mapper).await;
                }
            }
        }
    }

    async fn logout(&self, s: Session) {
        // Destroying the collector destroys its filters.
        if let Err(e) = s.client.destroy_property_collector(&s.collector).await {
            tracing::debug!(endpoint = %self.url, error = %e, "DestroyPropertyCollector failed");
        }
        if let Err(e) = s.client.logout().await {
            tracing::debug!(endpoint = %self.url, error = %e, "vSphere logout failed");
        }
    }
}

/// Re-reads one object whose update could not be applied property by property.
async fn refetch_object(s: &client::Session, collector: &MoRef, inv: &mut Inventory, obj: &MoRef) -> Result<()> {
    let spec = codec::filter_spec(obj, &mapping::prop_specs());
    for c in s.retrieve_all(collector, &spec, 1).await? {
        inv.replace_object(c);
    }
    Ok(())
}

type HintsFuture<'a> = dyn std::future::Future<Output = Result<Vec<(String, Vec<codec::PnicHint>)>>> + Send + 'a;

/// `QueryNetworkHint` for these hosts, a few at a time. A fault on one host (a disconnected
/// host) is logged and that host skipped; transport and session errors end the session.
async fn query_hints(
    s: &client::Session,
    systems: Vec<(String, MoRef)>,
) -> Result<Vec<(String, Vec<codec::PnicHint>)>> {
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
async fn refresh_hints(s: &client::Session, inv: &mut Inventory, systems: Vec<(String, MoRef)>) -> Result<()> {
    for (host, h) in query_hints(s, systems).await? {
        inv.set_hints(&host, h);
    }
    Ok(())
}

/// Maps the objects changed since the last delta, diffs their facts against what was sent and
/// sends the `Delta` if anything changed (new rejections included).
async fn send_delta(out: &Follow, inv: &mut Inventory, mapper: &mut Mapper) {
    let (changes, rejected) = mapper.sync(inv);
    if !(changes.is_empty() && rejected.is_empty()) {
        tracing::debug!(changes = changes.len(), rejected = rejected.len(), "vSphere delta");
    }
    out.delta(changes, rejected).await;
}
