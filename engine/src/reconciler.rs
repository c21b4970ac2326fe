//! The reconciler: the async shell that keeps one switch in step with desired state.
//!
//! One [`Reconciler`] runs per switch (as its own task, so a switch that is down never blocks
//! another). Each *cycle* reads the switch, loads the ownership [`Ledger`], calls the pure
//! [`crate::plan::plan`], applies the result, records every operation's outcome in the audit log
//! ([`SwitchRecord`], a `store::Log` of its own) and updates the ledger. Cycles run on every
//! desired-state change (a `watch` channel of [`Desired`]), on drift announced by the switch, on
//! a periodic resync and, after a failure, on a capped exponential [`Backoff`] with jitter.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info, info_span, warn, Instrument};

pub use crate::backoff::Backoff;
use crate::desired::Desired;
use crate::event::UnixMs;
use crate::ids::VlanId;
use crate::plan::{plan, Plan, Policy, PortSets};
use crate::switch::{Op, OpResult, Outcome, Switch, SwitchError};

/// A reconcile failure. Both kinds are retried with backoff by [`Reconciler::run`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The switch could not be read or written. Retryable.
    #[error(transparent)]
    Switch(#[from] SwitchError),
    /// The ledger or the audit log could not be read or written. Retryable if the store's error
    /// is (see `store::Error`).
    #[error("switch {switch}: store failed while {context}: {source}")]
    Store {
        switch: String,
        context: &'static str,
        #[source]
        source: store::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the audit trail says happened to one planned operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditResult {
    /// The switch reported this result.
    Done(OpResult),
    /// Dry-run: planned, not applied.
    DryRun,
}

/// One audit entry: an operation on a switch and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchRecord {
    /// When the cycle applied it (unix ms, the shell's clock).
    pub at: UnixMs,
    pub switch: String,
    pub op: Op,
    pub result: AuditResult,
}

impl store::Record for SwitchRecord {
    const SCHEMA: u16 = 1;

    fn encode(&self) -> std::result::Result<Vec<u8>, String> {
        bincode::serde::encode_to_vec(self, bincode::config::standard()).map_err(|e| e.to_string())
    }

    fn decode(schema: u16, bytes: &[u8]) -> std::result::Result<Self, String> {
        match schema {
            1 => {
                let (rec, used) =
                    bincode::serde::decode_from_slice::<SwitchRecord, _>(bytes, bincode::config::standard())
                        .map_err(|e| e.to_string())?;
                if used != bytes.len() {
                    return Err(format!("{} trailing bytes after the switch record", bytes.len() - used));
                }
                Ok(rec)
            }
            other => Err(format!("unknown switch-audit schema version {other} (this build reads 1)")),
        }
    }
}

/// The durable ownership ledger of one switch: which VLANs netfold put on which port. Stored in a
/// `store::Table` under `switch \0 port`, so several switches can share one table.
#[derive(Clone)]
pub struct Ledger {
    table: store::Table,
    switch: String,
}

impl Ledger {
    pub fn new(table: store::Table, switch: impl Into<String>) -> Self {
        Self { table, switch: switch.into() }
    }

    fn prefix(&self) -> Vec<u8> {
        let mut k = self.switch.as_bytes().to_vec();
        k.push(0);
        k
    }

    fn key(&self, port: &str) -> Vec<u8> {
        let mut k = self.prefix();
        k.extend_from_slice(port.as_bytes());
        k
    }

    /// Every port's owned VLANs.
    pub fn load(&self) -> store::Result<PortSets> {
        let prefix = self.prefix();
        self.table
            .scan::<BTreeSet<VlanId>>(&prefix)?
            .into_iter()
            .map(|(k, v)| Ok((String::from_utf8_lossy(&k[prefix.len()..]).into_owned(), v)))
            .collect()
    }

    /// Replaces one port's owned set (durable on return); an empty set removes the entry.
    pub fn store(&self, port: &str, vlans: &BTreeSet<VlanId>) -> store::Result<()> {
        if vlans.is_empty() {
            self.table.remove(&self.key(port))
        } else {
            self.table.insert(&self.key(port), vlans)
        }
    }
}

/// How one switch is reconciled.
#[derive(Clone, Debug)]
pub struct Config {
    pub policy: Policy,
    /// Periodic resync even when nothing announced a change (default 30 s).
    pub resync: Duration,
    pub backoff: Backoff,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            resync: Duration::from_secs(30),
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(60)),
        }
    }
}

/// What one cycle did.
#[derive(Clone, Debug, Default)]
pub struct CycleReport {
    pub plan: Plan,
    /// One per applied operation (empty in dry-run).
    pub outcomes: Vec<Outcome>,
}

impl CycleReport {
    /// Operations the switch failed.
    pub fn failed(&self) -> usize {
        self.outcomes.iter().filter(|o| matches!(o.result, OpResult::Failed(_))).count()
    }
}

/// Reconciles one switch. See the module docs.
pub struct Reconciler<S, L> {
    switch: Arc<S>,
    ledger: Ledger,
    audit: Arc<L>,
    desired: watch::Receiver<Arc<Desired>>,
    config: Config,
    stats: Arc<Stats>,
    /// What [`crate::plan::clipped`] said last cycle (logged only when it changes).
    clipped: BTreeMap<String, String>,
}

/// Counters of one reconciler, for metrics (read them while it runs).
#[derive(Debug, Default)]
pub struct Stats {
    /// Cycles run (every trigger: change, drift, resync, retry).
    pub cycles: std::sync::atomic::AtomicU64,
    /// Cycles that failed outright or had failed operations.
    pub failed_cycles: std::sync::atomic::AtomicU64,
    /// Cycles triggered by drift the switch announced.
    pub drift_cycles: std::sync::atomic::AtomicU64,
}

impl Stats {
    fn bump(counter: &std::sync::atomic::AtomicU64) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn now_ms() -> UnixMs {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as UnixMs).unwrap_or(0)
}

async fn drift_changed(drift: &mut Option<watch::Receiver<u64>>) {
    match drift {
        Some(rx) => {
            if rx.changed().await.is_err() {
                // The switch dropped its drift sender: only resync from now on.
                *drift = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

impl<S: Switch, L: store::Log<SwitchRecord>> Reconciler<S, L> {
    pub fn new(
        switch: Arc<S>,
        ledger: Ledger,
        audit: Arc<L>,
        desired: watch::Receiver<Arc<Desired>>,
        config: Config,
    ) -> Self {
        Self { switch, ledger, audit, desired, config, stats: Arc::default(), clipped: BTreeMap::new() }
    }

    /// This reconciler's counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    fn store_err(&self, context: &'static str) -> impl FnOnce(store::Error) -> Error + '_ {
        move |source| Error::Store { switch: self.switch.name().to_string(), context, source }
    }

    /// One reconcile cycle: read, plan, apply, audit, update the ledger.
    pub async fn cycle(&mut self) -> Result<CycleReport> {
        let name = self.switch.name().to_string();
        let desired = self.desired.borrow_and_update().clone();
        let mut owned = self.ledger.load().map_err(self.store_err("loading the ownership ledger"))?;
        let policy = &self.config.policy;
        // Ports policy does not manage (excluded, or not in managed_ports) are left out before
        // planning (and before copying): at scale most cabled ports may be unmanaged, and refusing
        // each of their VLANs again on every cycle is work and noise, not news.
        let mut unmanaged = 0usize;
        let mut want = PortSets::new();
        for (p, vlans) in desired.ports.iter().filter(|(p, _)| p.switch == name) {
            if policy.manages(&p.port) {
                want.insert(p.port.clone(), vlans.keys().copied().collect());
            } else {
                unmanaged += 1;
            }
        }
        if unmanaged > 0 {
            debug!(switch = %name, ports = unmanaged, "desired VLANs on unmanaged ports not planned");
        }
        let ports: BTreeSet<String> = want.keys().chain(owned.keys()).filter(|p| policy.manages(p)).cloned().collect();
        let observed = self.switch.read(&ports).await?;
        let plan = plan(&want, &observed, &owned, policy);
        for r in &plan.refused {
            debug!(switch = %name, refusal = %r, "refused by policy");
        }
        let clipped = crate::plan::clipped(&plan.refused);
        if clipped != self.clipped {
            for (port, vlans) in clipped.iter().filter(|(p, v)| self.clipped.get(*p) != Some(*v)) {
                info!(switch = %name, port = %port, vlans = %vlans, "desired VLANs outside allowed_vlans clipped");
            }
            self.clipped = clipped;
        }
        if let Some(held) = &plan.held {
            warn!(switch = %name, due = held.removals.len(), cap = held.cap, reason = %held, "removals held");
        }
        let mut touched = BTreeSet::new();
        for (port, vlan) in &plan.forget {
            owned.entry(port.clone()).or_default().remove(vlan);
            touched.insert(port.clone());
        }
        let at = now_ms();
        let (outcomes, records) = if plan.dry_run {
            for op in &plan.ops {
                info!(switch = %name, op = %op, "dry-run: would apply");
            }
            let recs = plan
                .ops
                .iter()
                .map(|op| SwitchRecord { at, switch: name.clone(), op: op.clone(), result: AuditResult::DryRun })
                .collect::<Vec<_>>();
            (Vec::new(), recs)
        } else if plan.ops.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let outcomes = self.switch.apply(&plan.ops).await?;
            let mut recs = Vec::with_capacity(outcomes.len());
            for o in &outcomes {
                let port = o.op.port().to_string();
                match (&o.op, &o.result) {
                    (Op::AddVlan { vlan, .. }, OpResult::Applied) => {
                        owned.entry(port.clone()).or_default().insert(*vlan);
                        touched.insert(port);
                    }
                    (Op::RemoveVlan { vlan, .. }, OpResult::Applied | OpResult::AlreadyDone) => {
                        owned.entry(port.clone()).or_default().remove(vlan);
                        touched.insert(port);
                    }
                    _ => {}
                }
                match &o.result {
                    OpResult::Failed(why) => warn!(switch = %name, op = %o.op, error = %why, "operation failed"),
                    r => debug!(switch = %name, op = %o.op, result = ?r, "operation done"),
                }
                recs.push(SwitchRecord {
                    at,
                    switch: name.clone(),
                    op: o.op.clone(),
                    result: AuditResult::Done(o.result.clone()),
                });
            }
            (outcomes, recs)
        };
        for port in &touched {
            let set = owned.get(port).cloned().unwrap_or_default();
            self.ledger.store(port, &set).map_err(self.store_err("writing the ownership ledger"))?;
        }
        if !records.is_empty() {
            self.audit.append(records).await.map_err(self.store_err("appending to the switch audit log"))?;
        }
        Ok(CycleReport { plan, outcomes })
    }

    /// Runs cycles until `shutdown` resolves or the desired-state sender is dropped.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) {
        let name = self.switch.name().to_string();
        let mut drift = self.switch.drift();
        let mut failures: u32 = 0;
        tokio::pin!(shutdown);
        loop {
            let span = info_span!("reconcile", switch = %name);
            let result = self.cycle().instrument(span.clone()).await;
            Stats::bump(&self.stats.cycles);
            if !matches!(&result, Ok(r) if r.failed() == 0) {
                Stats::bump(&self.stats.failed_cycles);
            }
            let delay = match result {
                Ok(report) if report.failed() == 0 => {
                    if failures > 0 {
                        info!(parent: &span, failures, "switch converged after failures");
                    }
                    failures = 0;
                    self.config.resync
                }
                Ok(report) => {
                    failures = failures.saturating_add(1);
                    let d = self.config.backoff.delay(failures - 1, rand::random::<f64>());
                    warn!(parent: &span, failed = report.failed(), retry_in_ms = d.as_millis() as u64, "partial failure");
                    d
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let d = self.config.backoff.delay(failures - 1, rand::random::<f64>());
                    warn!(parent: &span, error = %e, retry_in_ms = d.as_millis() as u64, "cycle failed");
                    d
                }
            };
            tokio::select! {
                _ = &mut shutdown => return,
                changed = self.desired.changed() => if changed.is_err() { return },
                _ = drift_changed(&mut drift) => {
                    Stats::bump(&self.stats.drift_cycles);
                    debug!(switch = %name, "drift");
                }
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::Reason;
    use crate::ids::{HypervisorId, SwitchPort};
    use crate::switch::MemorySwitch;
    use store::{Log, MemoryLog};

    fn v(n: u16) -> VlanId {
        VlanId::new(n).unwrap()
    }

    fn desired(switch: &str, items: &[(&str, &[u16])]) -> Arc<Desired> {
        let reason =
            Reason { hypervisor: HypervisorId::new("vc").unwrap(), host: "h1".into(), network: "n".into(), vnic: None };
        let mut d = Desired::default();
        for (port, vlans) in items {
            let e = d.ports.entry(SwitchPort::new(switch, *port).unwrap()).or_default();
            for n in *vlans {
                e.entry(v(*n)).or_default().insert(reason.clone());
            }
        }
        Arc::new(d)
    }

    struct Rig {
        sw: Arc<MemorySwitch>,
        audit: Arc<MemoryLog<SwitchRecord>>,
        ledger: Ledger,
        tx: watch::Sender<Arc<Desired>>,
        _store: store::Store,
    }

    fn rig(sw: MemorySwitch) -> (Rig, Reconciler<MemorySwitch, MemoryLog<SwitchRecord>>) {
        let store = store::Store::temporary().unwrap();
        let ledger = Ledger::new(store.table("switch-ledger").unwrap(), sw.name());
        let sw = Arc::new(sw);
        let audit = Arc::new(MemoryLog::new());
        let (tx, rx) = watch::channel(Arc::new(Desired::default()));
        let r = Reconciler::new(sw.clone(), ledger.clone(), audit.clone(), rx, Config::default());
        (Rig { sw, audit, ledger, tx, _store: store }, r)
    }

    fn audit(rig: &Rig) -> Vec<SwitchRecord> {
        rig.audit.read(1).map(|e| e.unwrap().record).collect()
    }

    #[tokio::test]
    async fn cycle_applies_records_every_outcome_and_claims_only_what_it_added() {
        let (rig, mut r) = rig(MemorySwitch::new("tor1").with_port("e1", [v(99)]).with_port("e2", []));
        rig.tx.send_replace(desired("tor1", &[("e1", &[10, 99]), ("e2", &[20])]));
        let report = r.cycle().await.unwrap();
        assert_eq!(report.failed(), 0);
        assert_eq!(rig.sw.vlans("e1").unwrap(), [v(10), v(99)].into());
        let owned = rig.ledger.load().unwrap();
        assert_eq!(owned["e1"], [v(10)].into(), "operator VLAN 99 must not be claimed");
        assert_eq!(audit(&rig).len(), 2);

        // Nothing desired any more: netfold removes its own VLANs, leaves the operator's 99.
        rig.tx.send_replace(desired("tor1", &[]));
        r.cycle().await.unwrap();
        assert_eq!(rig.sw.vlans("e1").unwrap(), [v(99)].into());
        assert_eq!(rig.sw.vlans("e2").unwrap(), BTreeSet::new());
        assert!(rig.ledger.load().unwrap().is_empty());
        assert_eq!(audit(&rig).len(), 4);
    }

    #[tokio::test]
    async fn excluded_ports_are_left_out_of_the_plan_and_never_touched() {
        let sw = MemorySwitch::new("tor1").with_port("e1", []).with_port("e2", [v(5)]);
        let (rig, mut r) = rig(sw);
        r.config.policy.excluded_ports = ["e2".to_string()].into();
        rig.tx.send_replace(desired("tor1", &[("e1", &[10]), ("e2", &[20, 21])]));
        let report = r.cycle().await.unwrap();
        assert_eq!(report.plan.ops, vec![Op::AddVlan { port: "e1".into(), vlan: v(10) }]);
        assert!(report.plan.refused.is_empty(), "excluded ports are not planned at all: {:?}", report.plan.refused);
        assert_eq!(rig.sw.vlans("e2").unwrap(), [v(5)].into());
        assert!(!rig.ledger.load().unwrap().contains_key("e2"));
    }

    #[tokio::test]
    async fn ledger_is_durable_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let sw = Arc::new(MemorySwitch::new("tor1").with_port("e1", []));
        let audit = Arc::new(MemoryLog::<SwitchRecord>::new());
        let (tx, rx) = watch::channel(desired("tor1", &[("e1", &[7])]));
        {
            let store = store::Store::open(dir.path()).unwrap();
            let ledger = Ledger::new(store.table("ledger").unwrap(), "tor1");
            Reconciler::new(sw.clone(), ledger, audit.clone(), rx.clone(), Config::default()).cycle().await.unwrap();
        }
        tx.send_replace(desired("tor1", &[]));
        // A new process: the ledger is read back from disk.
        let store = store::Store::open(dir.path()).unwrap();
        let ledger = Ledger::new(store.table("ledger").unwrap(), "tor1");
        assert_eq!(ledger.load().unwrap()["e1"], [v(7)].into());
        Reconciler::new(sw.clone(), ledger, audit.clone(), rx, Config::default()).cycle().await.unwrap();
        assert_eq!(sw.vlans("e1").unwrap(), BTreeSet::new(), "VLAN added before the restart is removed after it");
        let recs: Vec<_> = audit.read(1).map(|e| e.unwrap().record).collect();
        assert_eq!(recs.len(), 2);
        assert!(matches!(recs[1].op, Op::RemoveVlan { .. }));
    }

    #[tokio::test]
    async fn dry_run_applies_nothing_and_audits_the_plan() {
        let (rig, mut r) = rig(MemorySwitch::new("tor1").with_port("e1", []));
        r.config.policy.dry_run = true;
        rig.tx.send_replace(desired("tor1", &[("e1", &[10])]));
        r.cycle().await.unwrap();
        assert!(rig.sw.vlans("e1").unwrap().is_empty());
        assert_eq!(audit(&rig)[0].result, AuditResult::DryRun);
        assert!(rig.ledger.load().unwrap().is_empty());
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        // Paused time: each sleep advances the virtual clock, no real waiting.
        for _ in 0..10_000 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test(start_paused = true)]
    async fn run_follows_desired_changes_and_drift() {
        let (rig, r) = rig(MemorySwitch::new("tor1").with_port("e1", []));
        let task = tokio::spawn(r.run(std::future::pending()));
        rig.tx.send_replace(desired("tor1", &[("e1", &[10])]));
        until("VLAN 10 added", || rig.sw.vlans("e1").unwrap().contains(&v(10))).await;
        let start = tokio::time::Instant::now();
        rig.sw.operator_set("e1", []);
        until("VLAN 10 put back after drift", || rig.sw.vlans("e1").unwrap().contains(&v(10))).await;
        assert!(start.elapsed() < Duration::from_secs(1), "drift must not wait for the resync");
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_converge_while_other_switches_proceed() {
        let (a, ra) = rig(MemorySwitch::new("tor1").with_port("e1", []));
        let (b, rb) = rig(MemorySwitch::new("tor2").with_port("e1", []));
        a.sw.set_down(true);
        let op = Op::AddVlan { port: "e1".into(), vlan: v(11) };
        b.sw.set_failing(op.clone(), true);
        let ta = tokio::spawn(ra.run(std::future::pending()));
        let tb = tokio::spawn(rb.run(std::future::pending()));
        a.tx.send_replace(desired("tor1", &[("e1", &[10])]));
        b.tx.send_replace(desired("tor2", &[("e1", &[10, 11])]));
        until("tor2 gets VLAN 10 though tor1 is down", || b.sw.vlans("e1").unwrap().contains(&v(10))).await;
        until("the failed op is audited", || {
            audit(&b).iter().any(|r| r.op == op && matches!(r.result, AuditResult::Done(OpResult::Failed(_))))
        })
        .await;
        b.sw.set_failing(op, false);
        a.sw.set_down(false);
        let start = tokio::time::Instant::now();
        until("tor2 converges on retry", || b.sw.vlans("e1").unwrap().contains(&v(11))).await;
        until("tor1 converges once up", || a.sw.vlans("e1").unwrap().contains(&v(10))).await;
        assert!(start.elapsed() < Duration::from_secs(30), "retries come from backoff, before the 30 s resync");
        ta.abort();
        tb.abort();
    }
}
