//! Prometheus metrics (prometheus-client): a tap that tails the event log and the switch audit
//! log — so every count is of what is durable, not of what was attempted — plus a [`Live`]
//! collector that reads the projected state, the adapters' health and the reconcilers' counters
//! at each scrape (nothing shared is reset or re-set by a scrape, so scrapes may overlap).
//!
//! `/metrics` is OpenMetrics 1.0 (what prometheus-client writes and Prometheus asks for first);
//! a client that prefers `text/plain` gets the classic Prometheus text format ([`Format`]).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use adapters::driver::{Health, LinkHealth};
use engine::clock::{Clock, SystemClock};
use engine::projector::Status;
use engine::reconciler::{AuditEntry, SwitchRecord};
use engine::runtime::SharedState;
use engine::switch::OpResult;
use engine::{Envelope, Event, Recorded};
use engine::{HypervisorId, Kind};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::TypedMetric;
use prometheus_client::registry::Registry;
use store::{AnyLog, Log};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HypervisorLabel {
    pub hypervisor: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub hypervisor: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub switch: String,
    pub op: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SwitchLabel {
    pub switch: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct SourceLabel {
    pub hypervisor: String,
    pub source: String,
}

/// A running hypervisor adapter, as health and metrics see it.
pub struct AdapterEntry {
    pub id: HypervisorId,
    pub kind: Kind,
    pub health: Arc<Health>,
}

pub struct Metrics {
    /// Seconds per durable append of a session's events (fed by the engine).
    pub append_latency: Histogram,
    /// Seconds from a change of desired state (published once the event that made it is
    /// durable) to the end of the reconcile cycle that wrote it to the switch, per switch (fed
    /// by each reconciler: `engine::reconciler::Stats::observe_changes`).
    pub change_latency: Family<SwitchLabel, Histogram, fn() -> Histogram>,
    switches: std::sync::Mutex<Vec<(String, Arc<engine::reconciler::Stats>)>>,
    discovery: std::sync::Mutex<Vec<(String, Arc<engine::runtime::discover::Stats>)>>,
    adapters: std::sync::Mutex<Vec<AdapterEntry>>,
    pub events: Family<KindLabel, Counter>,
    pub reconnects: Family<HypervisorLabel, Counter>,
    pub switch_ops: Family<OpLabel, Counter>,
    tapped: AtomicU64,
    /// The engine's own counters (set once the engine runs): health reads whether the log
    /// takes appends from them.
    engine: std::sync::OnceLock<Arc<engine::runtime::Metrics>>,
    /// The leases this instance holds and the cluster as last read (set when it runs on
    /// PostgreSQL): health and status show them, and say what is not well.
    cluster: std::sync::OnceLock<Arc<crate::cluster::Shares>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            // 50 µs .. ~0.8 s.
            append_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 15)),
            change_latency: Family::new_with_constructor(change_buckets),
            switches: Default::default(),
            discovery: Default::default(),
            adapters: Default::default(),
            events: Default::default(),
            reconnects: Default::default(),
            switch_ops: Default::default(),
            cluster: Default::default(),
            tapped: Default::default(),
            engine: Default::default(),
        }
    }
}

/// 1 ms .. ~33 s.
fn change_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    /// Attaches the running engine's counters (only the first call counts).
    pub fn set_engine(&self, engine: Arc<engine::runtime::Metrics>) {
        let _ = self.engine.set(engine);
    }

    /// Attaches this instance's share of the cluster's work (only the first call counts).
    pub fn set_cluster(&self, shares: Arc<crate::cluster::Shares>) {
        let _ = self.cluster.set(shares);
    }

    /// This instance's share of the cluster's work, when it runs in a cluster.
    pub fn cluster(&self) -> Option<&crate::cluster::Shares> {
        self.cluster.get().map(|a| &**a)
    }

    /// The engine's counters, once attached.
    pub fn engine(&self) -> Option<&engine::runtime::Metrics> {
        self.engine.get().map(|m| &**m)
    }

    /// Registers a running reconciler's counters, and times its writes of changes.
    pub fn add_switch(&self, name: String, stats: Arc<engine::reconciler::Stats>) {
        let (family, label) = (self.change_latency.clone(), SwitchLabel { switch: name.clone() });
        stats.observe_changes(move |took| family.get_or_create(&label).observe(took.as_secs_f64()));
        self.switches.lock().unwrap_or_else(|p| p.into_inner()).push((name, stats));
    }

    /// Forgets a reconciler (and its discovery) that stopped: another instance works on the
    /// switch now.
    pub fn remove_switch(&self, name: &str) {
        self.switches.lock().unwrap_or_else(|p| p.into_inner()).retain(|(n, _)| n != name);
        self.discovery.lock().unwrap_or_else(|p| p.into_inner()).retain(|(n, _)| n != name);
    }

    /// Forgets an adapter that stopped: another instance works on the hypervisor now.
    pub fn remove_hypervisor(&self, id: &HypervisorId) {
        self.adapters.lock().unwrap_or_else(|p| p.into_inner()).retain(|a| a.id != *id);
    }

    /// Registers a running discovery poller's counters.
    pub fn add_discovery(&self, name: String, stats: Arc<engine::runtime::discover::Stats>) {
        self.discovery.lock().unwrap_or_else(|p| p.into_inner()).push((name, stats));
    }

    /// Every discovery poller's counters, by switch name.
    pub fn discovery(&self) -> Vec<(String, Arc<engine::runtime::discover::Stats>)> {
        self.discovery.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Registers a running hypervisor adapter's health.
    pub fn add_hypervisor(&self, id: HypervisorId, kind: Kind, health: Arc<Health>) {
        self.adapters.lock().unwrap_or_else(|p| p.into_inner()).push(AdapterEntry { id, kind, health });
    }

    /// The running adapters' health, in the order they were added.
    pub fn adapters(&self) -> Vec<(HypervisorId, Kind, LinkHealth)> {
        let adapters = self.adapters.lock().unwrap_or_else(|p| p.into_inner());
        adapters.iter().map(|a| (a.id.clone(), a.kind, a.health.get())).collect()
    }

    /// Every reconciler's health, by switch name.
    pub fn switch_health(&self) -> Vec<(String, engine::reconciler::Health)> {
        let switches = self.switches.lock().unwrap_or_else(|p| p.into_inner());
        switches.iter().map(|(name, st)| (name.clone(), st.health())).collect()
    }

    /// Every reconciler's counters, by switch name (for `/status`).
    pub fn switch_stats(&self) -> Vec<(String, Arc<engine::reconciler::Stats>)> {
        self.switches.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Operations on `switch` that failed since start (from the audit log, as `/metrics` counts).
    pub fn failed_operations(&self, switch: &str) -> u64 {
        ["add", "remove"]
            .iter()
            .filter_map(|op| {
                let label = OpLabel { switch: switch.to_string(), op: op.to_string(), result: "failed".into() };
                self.switch_ops.get(&label).map(|c| c.get())
            })
            .sum()
    }

    /// What `/metrics` encodes, built once: the tap's counters and the append histogram (shared,
    /// never reset) and a [`Live`] collector over `state`, this value's adapters and switches,
    /// and `head` (the event log's head).
    pub fn registry(self: &Arc<Self>, state: SharedState, head: impl Fn() -> u64 + Send + Sync + 'static) -> Registry {
        let mut registry = Registry::with_prefix("netfold");
        registry.register("events_appended", "Events appended to the log, by kind", self.events.clone());
        registry.register(
            "hypervisor_reconnects",
            "Reestablished connections within the grace period",
            self.reconnects.clone(),
        );
        registry.register(
            "switch_operations",
            "Switch operations by result (from the audit log)",
            self.switch_ops.clone(),
        );
        registry.register(
            "append_latency_seconds",
            "Durable append latency of session events",
            self.append_latency.clone(),
        );
        registry.register(
            "change_to_switch_seconds",
            "Seconds from a change of desired state (its event durable) to the switch writes that apply it, per switch",
            self.change_latency.clone(),
        );
        registry.register_collector(Box::new(Live { metrics: self.clone(), state, head: Box::new(head) }));
        registry
    }

    fn count_event(&self, e: &Envelope) {
        self.events.get_or_create(&KindLabel { kind: e.event.name().into() }).inc();
        if matches!(e.event, Event::Reestablished { .. }) {
            self.reconnects.get_or_create(&HypervisorLabel { hypervisor: e.hypervisor.to_string() }).inc();
        }
        self.tapped.store(e.seq, Ordering::Relaxed);
    }

    fn count_op(&self, r: &SwitchRecord) {
        let (op, result) = match &r.entry {
            AuditEntry::DryRun { op, .. } => (op, "dry_run"),
            AuditEntry::Done { op, result: OpResult::Failed(_), .. } => (op, "failed"),
            AuditEntry::Done { op, .. } => (op, "applied"),
            // Intents, settlements, refusals and held removals are not operations done.
            _ => return,
        };
        let op = if op.is_add() { "add" } else { "remove" };
        self.switch_ops
            .get_or_create(&OpLabel { switch: r.switch.clone(), op: op.into(), result: result.into() })
            .inc();
    }
}

/// The values read at scrape time: hypervisor status and facts from the projected state, each
/// adapter's health, each reconciler's counters and health, the log head and the tap's lag.
struct Live {
    metrics: Arc<Metrics>,
    state: SharedState,
    head: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Live")
    }
}

/// One family of constant metrics, typed by `M`.
fn family<L: EncodeLabelSet, M: EncodeMetric + TypedMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: Vec<(L, M)>,
) -> fmt::Result {
    let mut f = enc.encode_descriptor(name, help, None, M::TYPE)?;
    for (labels, metric) in rows {
        metric.encode(f.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> fmt::Result {
    ConstGauge::new(value).encode(enc.encode_descriptor(name, help, None, ConstGauge::<i64>::TYPE)?)
}

impl Collector for Live {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let (mut status, mut held, mut facts, mut unported) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut disagree, mut tied) = (Vec::new(), BTreeMap::<SourceLabel, i64>::new());
        self.state.read(|s| {
            for (id, st) in s.hypervisors() {
                let name = match st.status {
                    Status::Live => "live",
                    Status::Lost { .. } => "lost",
                    Status::Expired => "expired",
                };
                let l = HypervisorLabel { hypervisor: id.to_string() };
                status.push((StatusLabel { hypervisor: id.to_string(), status: name.into() }, ConstGauge::new(1)));
                held.push((l.clone(), ConstGauge::new(st.held.map_or(0, |h| h.would_remove as i64))));
                facts.push((l.clone(), ConstGauge::new(s.facts_of(id).map_or(0, |f| f.len() as i64))));
                let hosts = s.facts_of(id).map_or(0, |f| f.hosts_without_switch_port().len());
                unported.push((l.clone(), ConstGauge::new(hosts as i64)));
                let ties = s.ties_of(id);
                disagree.push((l, ConstGauge::new(ties.iter().filter(|t| t.disagree).count() as i64)));
                for t in &ties {
                    let source = t.source.map_or("none".to_string(), |s| format!("{s:?}"));
                    *tied.entry(SourceLabel { hypervisor: id.to_string(), source }).or_default() += 1;
                }
            }
        });
        family(&mut enc, "hypervisor_status", "1 for each hypervisor's current status", status)?;
        family(&mut enc, "held_removals", "Facts a held mass removal would remove (0: none held)", held)?;
        family(&mut enc, "hypervisor_facts", "Facts known per hypervisor", facts)?;
        family(
            &mut enc,
            "hosts_without_switch_port",
            "Hosts with uplinks none of which leads to a known switch port (no CDP/LLDP, no [[topology]], no switch sighting)",
            unported,
        )?;
        family(
            &mut enc,
            "uplink_port_sources_disagree",
            "Uplinks whose port sources (static, hypervisor CDP/LLDP, switch LLDP, MAC table) name different ports",
            disagree,
        )?;
        family(
            &mut enc,
            "uplinks_tied",
            "Uplinks per hypervisor by the source that ties them to a switch port (none: untied)",
            tied.into_iter().map(|(l, n)| (l, ConstGauge::new(n))).collect(),
        )?;

        let adapters = self.metrics.adapters();
        let label = |id: &HypervisorId| HypervisorLabel { hypervisor: id.to_string() };
        let state = adapters.iter().map(|(id, _, h)| {
            let state = serde_json::to_value(h.state).ok().and_then(|v| v.as_str().map(str::to_string));
            (StatusLabel { hypervisor: id.to_string(), status: state.unwrap_or_default() }, ConstGauge::new(1))
        });
        family(
            &mut enc,
            "adapter_state",
            "1 for each adapter's state (connecting, live, retrying, failing)",
            state.collect(),
        )?;
        let contact = adapters
            .iter()
            .map(|(id, _, h)| (label(id), ConstGauge::new(h.last_contact_ms.map_or(0, |ms| (ms / 1000) as i64))));
        family(&mut enc, "adapter_last_contact_unix_seconds", "When the hypervisor last answered", contact.collect())?;
        let count = |f: fn(&LinkHealth) -> u64| {
            adapters.iter().map(|(id, _, h)| (label(id), ConstCounter::new(f(h)))).collect()
        };
        family(&mut enc, "adapter_logins", "Logins per hypervisor since start", count(|h| h.logins))?;
        family(&mut enc, "adapter_logouts", "Logouts per hypervisor since start", count(|h| h.logouts))?;
        family(&mut enc, "adapter_losses", "Connection losses per hypervisor since start", count(|h| h.losses))?;
        family(&mut enc, "adapter_resyncs", "Periodic full re-reads per hypervisor since start", count(|h| h.resyncs))?;

        let switches: Vec<_> = {
            let switches = self.metrics.switches.lock().unwrap_or_else(|p| p.into_inner());
            switches.iter().map(|(name, st)| (SwitchLabel { switch: name.clone() }, st.clone(), st.health())).collect()
        };
        let health = |f: fn(&engine::reconciler::Health) -> i64| {
            switches.iter().map(|(l, _, h)| (l.clone(), ConstGauge::new(f(h)))).collect()
        };
        family(
            &mut enc,
            "switch_failing",
            "1 while the switch's last reconcile cycle failed",
            health(|h| i64::from(h.failing)),
        )?;
        family(
            &mut enc,
            "switch_consecutive_failures",
            "Reconcile cycles failed in a row per switch",
            health(|h| h.consecutive_failures as i64),
        )?;
        family(
            &mut enc,
            "switch_unresolved_intents",
            "VLAN adds sent without a reply yet, to be settled by reading the switch",
            health(|h| h.unresolved_intents as i64),
        )?;
        family(
            &mut enc,
            "switch_refused_port_names",
            "Desired VLANs on ports whose names the switch grammar refuses",
            health(|h| h.refused_names as i64),
        )?;
        let cycles = |f: fn(&engine::reconciler::Stats) -> &AtomicU64| {
            switches.iter().map(|(l, st, _)| (l.clone(), ConstCounter::new(f(st).load(Ordering::Relaxed)))).collect()
        };
        family(&mut enc, "reconcile_cycles", "Reconcile cycles run per switch", cycles(|st| &st.cycles))?;
        family(
            &mut enc,
            "reconcile_failed_cycles",
            "Cycles with a failure per switch",
            cycles(|st| &st.failed_cycles),
        )?;
        family(
            &mut enc,
            "reconcile_drift_repairs",
            "Cycles triggered by drift on the switch",
            cycles(|st| &st.drift_cycles),
        )?;

        let discovery = self.metrics.discovery();
        let rows = |f: fn(&engine::runtime::discover::Stats) -> u64| {
            discovery.iter().map(|(n, st)| (SwitchLabel { switch: n.clone() }, ConstCounter::new(f(st)))).collect()
        };
        family(
            &mut enc,
            "switch_discovery_rounds",
            "Reads of a switch's MAC table, LLDP and bonds",
            rows(|st| st.rounds.load(Ordering::Relaxed)),
        )?;
        family(
            &mut enc,
            "switch_discovery_recorded",
            "Discovery rounds that recorded a change (SwitchSaw)",
            rows(|st| st.recorded.load(Ordering::Relaxed)),
        )?;
        family(
            &mut enc,
            "switch_discovery_failures",
            "Discovery rounds that failed",
            rows(|st| st.failed.load(Ordering::Relaxed)),
        )?;

        let head = (self.head)();
        gauge(&mut enc, "log_head", "Sequence number of the last durable event", head as i64)?;
        let lag = head.saturating_sub(self.metrics.tapped.load(Ordering::Relaxed));
        gauge(&mut enc, "subscriber_lag", "Events the metrics subscriber has yet to read", lag as i64)?;
        let engine = self.metrics.engine();
        let refused = engine.and_then(|m| m.log_unavailable_since());
        let unanswered = engine.and_then(|m| m.log_unanswered_since(SystemClock.now()));
        let since = refused.into_iter().chain(unanswered).min().map_or(0, |ms| ms / 1000);
        gauge(
            &mut enc,
            "log_unavailable_since_unix_seconds",
            "Since when appends to the event log fail or go unanswered (0 while they work); observations wait meanwhile",
            since as i64,
        )
    }
}

/// The two exposition formats `/metrics` serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text, as prometheus-client writes it.
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4 (what `promtool check metrics` reads).
    Classic,
}

impl Format {
    pub const fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// The format an `Accept` header weighs most: the classic one only when `text/plain` has a
    /// higher quality than OpenMetrics (a specific media range over a wildcard, as RFC 9110
    /// says). No header, or neither asked for: OpenMetrics. Prometheus asks for OpenMetrics at
    /// q=1 and `text/plain` at q=0.5.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let (mut om, mut text, mut app_any, mut text_any, mut any) = (None, None, None, None, None);
        for range in accept.unwrap_or_default().split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            // Quality in thousandths (RFC 9110 allows three decimals); an unreadable one is skipped.
            let Some(q) = parts.find_map(|p| p.strip_prefix("q=")).map_or(Some(1.0), |q| q.parse::<f32>().ok()) else {
                continue;
            };
            let q = (q.clamp(0.0, 1.0) * 1000.0).round() as u16;
            let slot = match media.as_str() {
                "application/openmetrics-text" => &mut om,
                "text/plain" => &mut text,
                "application/*" => &mut app_any,
                "text/*" => &mut text_any,
                "*/*" => &mut any,
                _ => continue,
            };
            *slot = (*slot).max(Some(q));
        }
        let om = om.or(app_any).or(any).unwrap_or(0);
        let text = text.or(text_any).or(any).unwrap_or(0);
        if text > om {
            Format::Classic
        } else {
            Format::OpenMetrics
        }
    }
}

/// `registry` in `format`.
pub fn encode(registry: &Registry, format: Format) -> String {
    let mut out = String::new();
    // Encoding into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    match format {
        Format::OpenMetrics => out,
        Format::Classic => classic(&out),
    }
}

/// The classic text format from prometheus-client's OpenMetrics. For the counters, gauges and
/// histograms netfold serves they differ in three places only: a counter's `# HELP` and `# TYPE`
/// name the `_total` its samples carry (OpenMetrics names the family without it), and there is
/// no `# UNIT` and no `# EOF` line.
fn classic(openmetrics: &str) -> String {
    let counters: HashSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len() + 64 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').map_or((rest, None), |(n, t)| (n, Some(t)));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                if let Some(tail) = tail {
                    out.push(' ');
                    out.push_str(tail);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Tails both logs from their heads at start-up, counting (Prometheus counters restart with
/// the process); runs until the agent stops.
pub async fn tap(
    metrics: Arc<Metrics>,
    events: Arc<AnyLog<Recorded>>,
    audit: Arc<AnyLog<SwitchRecord>>,
    _state: SharedState,
) {
    let mut ev = events.subscribe(events.head() + 1);
    let mut ops = audit.subscribe(audit.head() + 1);
    loop {
        tokio::select! {
            e = ev.next() => match e {
                Some(Ok(e)) => metrics.count_event(&Envelope::from(e)),
                Some(Err(e)) => { tracing::error!(error = %e, "metrics tap stopped reading the event log"); return }
                None => return,
            },
            r = ops.next() => match r {
                Some(Ok(r)) => metrics.count_op(&r.record),
                Some(Err(e)) => { tracing::error!(error = %e, "metrics tap stopped reading the switch audit log"); return }
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(seq: u64, event: Event) -> Envelope {
        Envelope { seq, at: seq * 1000, hypervisor: HypervisorId::new("vc").unwrap(), schema: 1, prev: [0; 32], event }
    }

    #[test]
    fn renders_counts_by_kind_reconnects_and_lag() {
        let m = Arc::new(Metrics::default());
        m.count_event(&env(1, Event::Connected { kind: Kind::VMware, endpoint: "x".into() }));
        m.count_event(&env(2, Event::Lost { reason: "timeout".into(), since: 1_000 }));
        m.count_event(&env(3, Event::Reestablished { outage_ms: 10 }));
        let stats = Arc::new(engine::reconciler::Stats::default());
        stats.cycles.store(4, Ordering::Relaxed);
        m.add_switch("tor1".into(), stats.clone());
        let state = engine::runtime::SharedState::from(engine::State::new(&Default::default()));
        m.append_latency.observe(0.0003);
        let head = Arc::new(AtomicU64::new(5));
        let h = head.clone();
        let registry = m.registry(state, move || h.load(Ordering::Relaxed));
        let text = encode(&registry, Format::OpenMetrics);
        for want in [
            "# TYPE netfold_events_appended counter",
            r#"netfold_events_appended_total{kind="Lost"} 1"#,
            r#"netfold_hypervisor_reconnects_total{hypervisor="vc"} 1"#,
            "# TYPE netfold_reconcile_cycles counter",
            r#"netfold_reconcile_cycles_total{switch="tor1"} 4"#,
            "netfold_log_head 5",
            "netfold_subscriber_lag 2",
            "netfold_append_latency_seconds_count 1",
        ] {
            assert!(text.contains(want), "`{want}` missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        // Read at scrape time: the next scrape sees what changed, the first is not re-set.
        stats.cycles.store(6, Ordering::Relaxed);
        head.store(9, Ordering::Relaxed);
        let later = encode(&registry, Format::OpenMetrics);
        assert!(later.contains(r#"netfold_reconcile_cycles_total{switch="tor1"} 6"#), "{later}");
        assert!(later.contains("netfold_log_head 9") && later.contains("netfold_subscriber_lag 6"), "{later}");
    }

    #[test]
    fn the_classic_format_names_counters_by_their_samples_and_has_no_eof() {
        let om = "# HELP a_x Things.\n# TYPE a_x counter\n# UNIT a_x bytes\na_x_total{k=\"v\"} 1\n\
                  # HELP a_g A gauge.\n# TYPE a_g gauge\na_g 2\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP a_x_total Things.\n# TYPE a_x_total counter\na_x_total{k=\"v\"} 1\n\
             # HELP a_g A gauge.\n# TYPE a_g gauge\na_g 2\n"
        );
    }

    #[test]
    fn prometheus_gets_openmetrics_and_a_text_plain_client_the_classic_format() {
        let prometheus =
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                          text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Classic);
        assert_eq!(Format::negotiate(Some("text/plain;version=0.0.4, */*;q=0.1")), Format::Classic);
        assert_eq!(Format::negotiate(Some("text/plain;q=0.2, */*")), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("application/json")), Format::OpenMetrics);
    }

    #[test]
    fn counts_hosts_whose_uplinks_lead_to_no_known_switch_port() {
        use engine::{Change, Fact, HostFact, UplinkFact};
        let uplink = |host: &str, port: Option<&str>| {
            Change::Upsert(Fact::Uplink(UplinkFact {
                host: host.into(),
                nic: "vmnic0".into(),
                mac: None,
                port: port.map(|p| p.parse().unwrap()),
                source: None,
            }))
        };
        let host = |h: &str| Change::Upsert(Fact::Host(HostFact { host: h.into(), name: h.into() }));
        let mut s = engine::State::new(&Default::default());
        s.apply(&env(1, Event::Connected { kind: Kind::VMware, endpoint: "x".into() }));
        let changes = vec![host("h1"), host("h2"), host("h3"), uplink("h1", None), uplink("h2", Some("tor1:e2"))];
        s.apply(&env(2, Event::Learnt { changes }));
        let registry = Arc::new(Metrics::default()).registry(engine::runtime::SharedState::from(s), || 2);
        let text = encode(&registry, Format::OpenMetrics);
        // h1: an uplink, no port; h2: its port is known; h3: no uplink at all.
        let want = r#"netfold_hosts_without_switch_port{hypervisor="vc"} 1"#;
        assert!(text.contains(want), "`{want}` missing from:\n{text}");
    }
}
