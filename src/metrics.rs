//! Prometheus metrics (prometheus-client): a tap that tails the event log and the switch audit
//! log — so every count is of what is durable, not of what was attempted — plus gauges read
//! from the projected state at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use adapters::driver::{Health, LinkHealth};
use engine::projector::Status;
use engine::reconciler::{AuditEntry, SwitchRecord};
use engine::runtime::SharedState;
use engine::switch::OpResult;
use engine::{Envelope, Event, Recorded};
use engine::{HypervisorId, Kind};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use store::{Log, SledLog};

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

/// A running hypervisor adapter, as health and metrics see it.
pub struct AdapterEntry {
    pub id: HypervisorId,
    pub kind: Kind,
    pub health: Arc<Health>,
}

pub struct Metrics {
    /// Seconds per durable append of a session's events (fed by the engine).
    pub append_latency: Histogram,
    switches: std::sync::Mutex<Vec<(String, Arc<engine::reconciler::Stats>)>>,
    adapters: std::sync::Mutex<Vec<AdapterEntry>>,
    pub events: Family<KindLabel, Counter>,
    pub reconnects: Family<HypervisorLabel, Counter>,
    pub status: Family<StatusLabel, Gauge>,
    pub switch_ops: Family<OpLabel, Counter>,
    pub log_head: Gauge,
    pub subscriber_lag: Gauge,
    tapped: AtomicU64,
    /// The engine's own counters (set once the engine runs): health reads whether the log
    /// takes appends from them.
    engine: std::sync::OnceLock<Arc<engine::runtime::Metrics>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            // 50 µs .. ~0.8 s.
            append_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 15)),
            switches: Default::default(),
            adapters: Default::default(),
            events: Default::default(),
            reconnects: Default::default(),
            status: Default::default(),
            switch_ops: Default::default(),
            log_head: Default::default(),
            subscriber_lag: Default::default(),
            tapped: Default::default(),
            engine: Default::default(),
        }
    }
}

impl Metrics {
    /// Attaches the running engine's counters (only the first call counts).
    pub fn set_engine(&self, engine: Arc<engine::runtime::Metrics>) {
        let _ = self.engine.set(engine);
    }

    /// The engine's counters, once attached.
    pub fn engine(&self) -> Option<&engine::runtime::Metrics> {
        self.engine.get().map(|m| &**m)
    }

    /// Registers a running reconciler's counters.
    pub fn add_switch(&self, name: String, stats: Arc<engine::reconciler::Stats>) {
        self.switches.lock().unwrap_or_else(|p| p.into_inner()).push((name, stats));
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

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, state: &SharedState, head: u64) -> String {
        let mut registry = Registry::with_prefix("netfold");
        registry.register("events_appended", "Events appended to the log, by kind", self.events.clone());
        registry.register(
            "hypervisor_reconnects",
            "Reestablished connections within the grace period",
            self.reconnects.clone(),
        );
        self.status.clear();
        state.read(|s| {
            for (id, st) in s.hypervisors() {
                let status = match st.status {
                    Status::Live => "live",
                    Status::Lost { .. } => "lost",
                    Status::Expired => "expired",
                };
                self.status.get_or_create(&StatusLabel { hypervisor: id.to_string(), status: status.into() }).set(1);
            }
        });
        registry.register("hypervisor_status", "1 for each hypervisor's current status", self.status.clone());
        let held = Family::<HypervisorLabel, Gauge>::default();
        let facts = Family::<HypervisorLabel, Gauge>::default();
        let unported = Family::<HypervisorLabel, Gauge>::default();
        state.read(|s| {
            for (id, st) in s.hypervisors() {
                let l = HypervisorLabel { hypervisor: id.to_string() };
                held.get_or_create(&l).set(st.held.map_or(0, |h| h.would_remove as i64));
                facts.get_or_create(&l).set(s.facts_of(id).map_or(0, |f| f.len() as i64));
                let hosts = s.facts_of(id).map_or(0, |f| f.hosts_without_switch_port().len());
                unported.get_or_create(&l).set(hosts as i64);
            }
        });
        registry.register(
            "hosts_without_switch_port",
            "Hosts with uplinks none of which leads to a known switch port (no CDP/LLDP, no [[topology]])",
            unported,
        );
        registry.register("held_removals", "Facts a held mass removal would remove (0: none held)", held);
        registry.register("hypervisor_facts", "Facts known per hypervisor", facts);
        let adapter_state = Family::<StatusLabel, Gauge>::default();
        let (contact, logins, logouts, losses, resyncs) = (
            Family::<HypervisorLabel, Gauge>::default(),
            Family::<HypervisorLabel, Gauge>::default(),
            Family::<HypervisorLabel, Gauge>::default(),
            Family::<HypervisorLabel, Gauge>::default(),
            Family::<HypervisorLabel, Gauge>::default(),
        );
        for (id, _, h) in self.adapters() {
            let l = HypervisorLabel { hypervisor: id.to_string() };
            let state = serde_json::to_value(h.state).ok().and_then(|v| v.as_str().map(str::to_string));
            let status = StatusLabel { hypervisor: id.to_string(), status: state.unwrap_or_default() };
            adapter_state.get_or_create(&status).set(1);
            contact.get_or_create(&l).set(h.last_contact_ms.map_or(0, |ms| (ms / 1000) as i64));
            logins.get_or_create(&l).set(h.logins as i64);
            logouts.get_or_create(&l).set(h.logouts as i64);
            losses.get_or_create(&l).set(h.losses as i64);
            resyncs.get_or_create(&l).set(h.resyncs as i64);
        }
        registry.register(
            "adapter_state",
            "1 for each adapter's state (connecting, live, retrying, failing)",
            adapter_state,
        );
        registry.register("adapter_last_contact_unix_seconds", "When the hypervisor last answered", contact);
        registry.register("adapter_logins", "Logins per hypervisor since start", logins);
        registry.register("adapter_logouts", "Logouts per hypervisor since start", logouts);
        registry.register("adapter_losses", "Connection losses per hypervisor since start", losses);
        registry.register("adapter_resyncs", "Periodic full re-reads per hypervisor since start", resyncs);
        registry.register(
            "switch_operations",
            "Switch operations by result (from the audit log)",
            self.switch_ops.clone(),
        );
        let gauges = || Family::<SwitchLabel, Gauge>::default();
        let (cycles, failed, drift) = (gauges(), gauges(), gauges());
        let (failing, consecutive, unresolved, refused) = (gauges(), gauges(), gauges(), gauges());
        for (name, st) in self.switches.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let l = SwitchLabel { switch: name.clone() };
            cycles.get_or_create(&l).set(st.cycles.load(Ordering::Relaxed) as i64);
            failed.get_or_create(&l).set(st.failed_cycles.load(Ordering::Relaxed) as i64);
            drift.get_or_create(&l).set(st.drift_cycles.load(Ordering::Relaxed) as i64);
            let h = st.health();
            failing.get_or_create(&l).set(i64::from(h.failing));
            consecutive.get_or_create(&l).set(h.consecutive_failures as i64);
            unresolved.get_or_create(&l).set(h.unresolved_intents as i64);
            refused.get_or_create(&l).set(h.refused_names as i64);
        }
        registry.register("switch_failing", "1 while the switch's last reconcile cycle failed", failing);
        registry.register("switch_consecutive_failures", "Reconcile cycles failed in a row per switch", consecutive);
        registry.register(
            "switch_unresolved_intents",
            "VLAN adds sent without a reply yet, to be settled by reading the switch",
            unresolved,
        );
        registry.register(
            "switch_refused_port_names",
            "Desired VLANs on ports whose names the switch grammar refuses",
            refused,
        );
        // Exposed as gauges mirroring the reconcilers' monotonic counters.
        registry.register("reconcile_cycles", "Reconcile cycles run per switch", cycles);
        registry.register("reconcile_failed_cycles", "Cycles with a failure per switch", failed);
        registry.register("reconcile_drift_repairs", "Cycles triggered by drift on the switch", drift);
        registry.register(
            "append_latency_seconds",
            "Durable append latency of session events",
            self.append_latency.clone(),
        );
        self.log_head.set(head as i64);
        registry.register("log_head", "Sequence number of the last durable event", self.log_head.clone());
        self.subscriber_lag.set(head.saturating_sub(self.tapped.load(Ordering::Relaxed)) as i64);
        registry.register(
            "subscriber_lag",
            "Events the metrics subscriber has yet to read",
            self.subscriber_lag.clone(),
        );
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
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

/// Tails both logs from their heads at start-up, counting (Prometheus counters restart with
/// the process); runs until the agent stops.
pub async fn tap(
    metrics: Arc<Metrics>,
    events: Arc<SledLog<Recorded>>,
    audit: Arc<SledLog<SwitchRecord>>,
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
        let m = Metrics::default();
        m.count_event(&env(1, Event::Connected { kind: Kind::VMware, endpoint: "x".into() }));
        m.count_event(&env(2, Event::Lost { reason: "timeout".into(), since: 1_000 }));
        m.count_event(&env(3, Event::Reestablished { outage_ms: 10 }));
        let stats = Arc::new(engine::reconciler::Stats::default());
        stats.cycles.store(4, Ordering::Relaxed);
        m.add_switch("tor1".into(), stats);
        let state = engine::runtime::SharedState::from(engine::State::new(&Default::default()));
        m.append_latency.observe(0.0003);
        let text = m.render(&state, 5);
        for want in [
            r#"netfold_events_appended_total{kind="Lost"} 1"#,
            r#"netfold_hypervisor_reconnects_total{hypervisor="vc"} 1"#,
            r#"netfold_reconcile_cycles{switch="tor1"} 4"#,
            "netfold_log_head 5",
            "netfold_subscriber_lag 2",
            "netfold_append_latency_seconds_count 1",
        ] {
            assert!(text.contains(want), "`{want}` missing from:\n{text}");
        }
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
        let text = Metrics::default().render(&engine::runtime::SharedState::from(s), 2);
        // h1: an uplink, no port; h2: its port is known; h3: no uplink at all.
        let want = r#"netfold_hosts_without_switch_port{hypervisor="vc"} 1"#;
        assert!(text.contains(want), "`{want}` missing from:\n{text}");
    }
}
