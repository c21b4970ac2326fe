//! The reconciler: the async shell that keeps one switch in step with desired state.
//!
//! One [`Reconciler`] runs per switch (as its own task, so a switch that is down never blocks
//! another, and learning from hypervisors never waits for a switch). Each *cycle*:
//!
//! ```text
//! desired ──parse port names (switch grammar)──> refused names ──────────────┐
//!    │                                                                        │
//! ledger (owned + intents) ─┐                                                 v
//! switch.read ──────────────┴─> settle intents ─> plan ─> intents durable ─> apply ─> confirm /
//!                                (present→owned,          (ledger, one       roll back in the
//!                                 absent→dropped)          flush)            ledger; audit; INFO
//! ```
//!
//! Ownership is write-ahead (docs/adr/0004-write-ahead-ownership.md): before an `AddVlan` is
//! sent its intent is durable in the [`Ledger`]; after the reply it becomes owned (applied) or is
//! dropped (already there, so not netfold's). An intent whose reply never came — netfold was
//! killed, the reply was slower than the timeout, the connection broke — is settled by a later
//! cycle by reading the switch: present → owned, absent → dropped once [`Config::settle`] has
//! passed (a request still queued on the switch may land late). A VLAN netfold added is
//! therefore removed once nothing needs it, whatever happened in between; a VLAN that was on the
//! port before any intent is the operator's and is never touched.
//!
//! Every intent, applied change, failure, settlement, refusal and held removal is recorded in
//! the switch audit log ([`SwitchRecord`], a `store::Log` of its own) with its cause (the
//! desired-state reasons), and every change and failure is logged at INFO/WARN as one line:
//! `tor1 Ethernet1/3: added VLAN 120 (vc-east: VM web-7 on pg-120)`. Cycles run on every
//! desired-state change, on drift announced by the switch, on a periodic resync and, after a
//! failure, on a capped exponential [`Backoff`] with jitter; [`Stats`] tells whether the switch is
//! failing, since when and why.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use imbl::ordmap::DiffItem;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info, info_span, warn, Instrument};

pub use crate::backoff::Backoff;
use crate::desired::{Desired, Reason};
use crate::event::UnixMs;
use crate::ids::{SwitchPort, VlanId};
use crate::plan::{plan, settle, Intents, Plan, Policy, PortSets};
use crate::port::{Grammar, PortName};
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

/// Most reasons one audit entry lists (the rest are counted in [`Cause::more`]).
const CAUSE_REASONS: usize = 3;
/// Most bytes of a switch's failure text kept in a log line or an audit entry.
pub const MAX_ERROR_TEXT: usize = 300;

/// Why netfold did something: the desired-state reasons behind a VLAN on a port (the first
/// few; `netfold why` lists them all with the events that taught them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    pub reasons: Vec<Reason>,
    /// How many more reasons there are.
    pub more: usize,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reasons.is_empty() {
            return f.write_str("nothing needs it any more");
        }
        for (i, r) in self.reasons.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match &r.vnic {
                Some(v) => write!(f, "{}: VM {} on {}", r.hypervisor, v.vm_name, r.network)?,
                None => write!(f, "{}: network {} at host {}", r.hypervisor, r.network, r.host)?,
            }
        }
        if self.more > 0 {
            write!(f, " (+{} more)", self.more)?;
        }
        Ok(())
    }
}

/// One entry of the switch audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditEntry {
    /// An `AddVlan` whose intent was made durable in the ledger before it was sent.
    Intent { op: Op, cause: Cause },
    /// The switch's answer to an operation.
    Done { op: Op, result: OpResult, cause: Cause },
    /// Dry-run: planned, not applied.
    DryRun { op: Op, cause: Cause },
    /// A desired VLAN netfold will not configure: the port name is not one the switch grammar
    /// accepts, or policy does not allow the VLAN. Recorded when the refusal first appears.
    Refused { port: String, vlan: VlanId, why: String, cause: Cause },
    /// Removals withheld by the blast-radius guard. Recorded when the set of held removals
    /// changes.
    Held { removals: Vec<Op>, cap: usize },
    /// An intent whose reply never came, settled by reading the switch: `present` → owned,
    /// absent → dropped.
    Settled { op: Op, intent_at: UnixMs, present: bool },
}

impl AuditEntry {
    /// The operation, for entries that have one.
    pub fn op(&self) -> Option<&Op> {
        match self {
            AuditEntry::Intent { op, .. }
            | AuditEntry::Done { op, .. }
            | AuditEntry::DryRun { op, .. }
            | AuditEntry::Settled { op, .. } => Some(op),
            AuditEntry::Refused { .. } | AuditEntry::Held { .. } => None,
        }
    }

    /// A short name of the entry's kind (`intent`, `applied`, `already`, `failed`, `dry-run`,
    /// `refused`, `held`, `settled`), as `netfold log --switch` prints and filters it.
    pub fn kind(&self) -> &'static str {
        match self {
            AuditEntry::Intent { .. } => "intent",
            AuditEntry::Done { result: OpResult::Applied, .. } => "applied",
            AuditEntry::Done { result: OpResult::AlreadyDone, .. } => "already",
            AuditEntry::Done { result: OpResult::Failed(_), .. } => "failed",
            AuditEntry::DryRun { .. } => "dry-run",
            AuditEntry::Refused { .. } => "refused",
            AuditEntry::Held { .. } => "held",
            AuditEntry::Settled { .. } => "settled",
        }
    }
}

/// One line per entry, the way operators read it (`Ethernet1/3: added VLAN 120 (…)`).
impl fmt::Display for AuditEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditEntry::Intent { op, cause } => write!(f, "{}: intends to {} ({cause})", op.port(), verb(op, false)),
            AuditEntry::Done { op, result: OpResult::Applied, cause } => {
                write!(f, "{}: {} ({cause})", op.port(), verb(op, true))
            }
            AuditEntry::Done { op, result: OpResult::AlreadyDone, cause } => {
                write!(f, "{}: VLAN {} was already as wanted, not claimed ({cause})", op.port(), op.vlan())
            }
            AuditEntry::Done { op, result: OpResult::Failed(why), cause } => {
                write!(f, "{}: failed to {}: {why} ({cause})", op.port(), verb(op, false))
            }
            AuditEntry::DryRun { op, cause } => {
                write!(f, "{}: dry-run, would {} ({cause})", op.port(), verb(op, false))
            }
            AuditEntry::Refused { port, vlan, why, cause } => {
                write!(f, "{port}: refused VLAN {vlan}: {why} ({cause})")
            }
            AuditEntry::Held { removals, cap } => {
                write!(f, "{}", crate::plan::Held { removals: removals.clone(), cap: *cap })
            }
            AuditEntry::Settled { op, intent_at, present } => write!(
                f,
                "{}: intent to add VLAN {} (made at {intent_at} ms, no reply) settled by reading the switch: {}",
                op.port(),
                op.vlan(),
                if *present { "present, so netfold's" } else { "absent, dropped" }
            ),
        }
    }
}

fn verb(op: &Op, done: bool) -> String {
    match (op, done) {
        (Op::AddVlan { vlan, .. }, true) => format!("added VLAN {vlan}"),
        (Op::RemoveVlan { vlan, .. }, true) => format!("removed VLAN {vlan}"),
        (Op::AddVlan { vlan, .. }, false) => format!("add VLAN {vlan}"),
        (Op::RemoveVlan { vlan, .. }, false) => format!("remove VLAN {vlan}"),
    }
}

/// `text` cut to at most `max` bytes (at a character boundary), saying how much was cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &text[..end], text.len() - end)
}

/// One audit record: an entry about a switch, dated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchRecord {
    /// When the cycle recorded it (unix ms, the shell's clock).
    pub at: UnixMs,
    pub switch: String,
    pub entry: AuditEntry,
}

/// Schema 1 of the switch audit: only operations and their results.
mod v1 {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub enum Op {
        AddVlan { port: String, vlan: crate::ids::VlanId },
        RemoveVlan { port: String, vlan: crate::ids::VlanId },
    }

    #[derive(Serialize, Deserialize)]
    pub enum AuditResult {
        Done(crate::switch::OpResult),
        DryRun,
    }

    #[derive(Serialize, Deserialize)]
    pub struct SwitchRecord {
        pub at: crate::event::UnixMs,
        pub switch: String,
        pub op: Op,
        pub result: AuditResult,
    }
}

fn decode_exact<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    let (rec, used) =
        bincode::serde::decode_from_slice::<T, _>(bytes, bincode::config::standard()).map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!("{} trailing bytes after the switch record", bytes.len() - used));
    }
    Ok(rec)
}

impl store::Record for SwitchRecord {
    const SCHEMA: u16 = 2;

    fn encode(&self) -> std::result::Result<Vec<u8>, String> {
        bincode::serde::encode_to_vec(self, bincode::config::standard()).map_err(|e| e.to_string())
    }

    fn decode(schema: u16, bytes: &[u8]) -> std::result::Result<Self, String> {
        match schema {
            1 => {
                // Upcast: an operation and its result, with no cause recorded.
                let old: v1::SwitchRecord = decode_exact(bytes)?;
                let (port, vlan, add) = match old.op {
                    v1::Op::AddVlan { port, vlan } => (port, vlan, true),
                    v1::Op::RemoveVlan { port, vlan } => (port, vlan, false),
                };
                let port = PortName::from_old_record(port);
                let op = if add { Op::AddVlan { port, vlan } } else { Op::RemoveVlan { port, vlan } };
                let cause = Cause::default();
                let entry = match old.result {
                    v1::AuditResult::Done(result) => AuditEntry::Done { op, result, cause },
                    v1::AuditResult::DryRun => AuditEntry::DryRun { op, cause },
                };
                Ok(SwitchRecord { at: old.at, switch: old.switch, entry })
            }
            2 => decode_exact(bytes),
            other => Err(format!("unknown switch-audit schema version {other} (this build reads 1 and 2)")),
        }
    }
}

/// What the ledger holds for one switch: the VLANs netfold put on each port, and the adds it
/// has sent (or was about to) without a reply yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owned {
    pub owned: PortSets,
    pub intents: Intents,
}

/// The durable ownership ledger of one switch, in a `store::Table` shared by every switch:
/// owned sets under `switch \0 port`, write-ahead intents under `switch \x01 port`.
#[derive(Clone)]
pub struct Ledger {
    table: store::Table,
    switch: String,
}

const OWNED: u8 = 0;
const INTENT: u8 = 1;

impl Ledger {
    /// The ledger of `switch` (a name without control characters, as the config requires).
    pub fn new(table: store::Table, switch: impl Into<String>) -> Self {
        Self { table, switch: switch.into() }
    }

    /// How many VLAN memberships netfold owns on this switch, as the ledger holds them (a
    /// read: nothing is rewritten).
    pub fn owned_count(&self) -> store::Result<usize> {
        Ok(self.table.scan::<BTreeSet<VlanId>>(&self.prefix(OWNED))?.into_iter().map(|(_, v)| v.len()).sum())
    }

    fn prefix(&self, kind: u8) -> Vec<u8> {
        let mut k = self.switch.as_bytes().to_vec();
        k.push(kind);
        k
    }

    fn key(&self, kind: u8, port: &str) -> Vec<u8> {
        let mut k = self.prefix(kind);
        k.extend_from_slice(port.as_bytes());
        k
    }

    /// Every port's owned VLANs and unresolved intents, with port names in `grammar`'s canonical
    /// form. Entries stored under another spelling (before names were canonical) are merged and
    /// rewritten under the canonical one; an entry whose name the grammar refuses is reported
    /// and left alone (netfold cannot address that port).
    pub fn load(&self, grammar: Grammar) -> store::Result<Owned> {
        let mut out = Owned::default();
        let mut rewrite = store::TableBatch::default();
        let mut rewritten = BTreeSet::new();
        let owned_prefix = self.prefix(OWNED);
        for (k, vlans) in self.table.scan::<BTreeSet<VlanId>>(&owned_prefix)? {
            if let Some(port) = self.canonical(grammar, &k, owned_prefix.len(), &mut rewrite, &mut rewritten) {
                out.owned.entry(port).or_default().extend(vlans);
            }
        }
        let intent_prefix = self.prefix(INTENT);
        for (k, vlans) in self.table.scan::<BTreeMap<VlanId, UnixMs>>(&intent_prefix)? {
            if let Some(port) = self.canonical(grammar, &k, intent_prefix.len(), &mut rewrite, &mut rewritten) {
                out.intents.entry(port).or_default().extend(vlans);
            }
        }
        if !rewritten.is_empty() {
            self.batch(&out, &rewritten, rewrite)?;
        }
        Ok(out)
    }

    /// The canonical port of ledger key `key`; a key under another spelling is queued for
    /// removal (its entry is rewritten under the canonical name).
    fn canonical(
        &self,
        grammar: Grammar,
        key: &[u8],
        prefix: usize,
        rewrite: &mut store::TableBatch,
        rewritten: &mut BTreeSet<PortName>,
    ) -> Option<PortName> {
        let raw = String::from_utf8_lossy(&key[prefix..]);
        match PortName::parse(grammar, &raw) {
            Ok(port) => {
                if port.as_str() != raw {
                    rewrite.remove(key);
                    rewritten.insert(port.clone());
                }
                Some(port)
            }
            Err(e) => {
                warn!(switch = %self.switch, error = %e, "ownership ledger entry names no port of this switch; left alone");
                None
            }
        }
    }

    /// Writes `state`'s entries for `ports` (owned sets and intents; empty ones are removed) in
    /// one atomic write, durable on return.
    pub fn save(&self, state: &Owned, ports: &BTreeSet<PortName>) -> store::Result<()> {
        if ports.is_empty() {
            return Ok(());
        }
        self.batch(state, ports, store::TableBatch::default())
    }

    /// [`Ledger::save`] without waiting for the disk: durable with the store's next flush (the
    /// switch audit append that follows it in a cycle, when the audit log is in the same store).
    pub fn stage(&self, state: &Owned, ports: &BTreeSet<PortName>) -> store::Result<()> {
        if ports.is_empty() {
            return Ok(());
        }
        self.table.stage(self.writes(state, ports, store::TableBatch::default())?)
    }

    fn batch(&self, state: &Owned, ports: &BTreeSet<PortName>, batch: store::TableBatch) -> store::Result<()> {
        self.table.apply(self.writes(state, ports, batch)?)
    }

    fn writes(
        &self,
        state: &Owned,
        ports: &BTreeSet<PortName>,
        mut batch: store::TableBatch,
    ) -> store::Result<store::TableBatch> {
        for port in ports {
            let owned = self.key(OWNED, port.as_str());
            match state.owned.get(port).filter(|s| !s.is_empty()) {
                Some(set) => batch.insert(&owned, set)?,
                None => batch.remove(&owned),
            }
            let intent = self.key(INTENT, port.as_str());
            match state.intents.get(port).filter(|s| !s.is_empty()) {
                Some(set) => batch.insert(&intent, set)?,
                None => batch.remove(&intent),
            }
        }
        Ok(batch)
    }
}

/// How one switch is reconciled.
#[derive(Clone, Debug)]
pub struct Config {
    pub policy: Policy,
    /// Periodic resync even when nothing announced a change (default 30 s).
    pub resync: Duration,
    pub backoff: Backoff,
    /// How long an unresolved intent whose VLAN is absent is kept before it is dropped: long
    /// enough that a request the switch has not carried out yet cannot land after it (default
    /// 30 s; `netfold run` uses twice the switch's request timeout, at least 10 s).
    pub settle: Duration,
    /// How often the switch's MAC table, LLDP neighbours and bonds are read
    /// ([`crate::runtime::discover`]); `None`: never (default 60 s).
    pub discover_every: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            resync: Duration::from_secs(30),
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(60)),
            settle: Duration::from_secs(30),
            discover_every: Some(crate::runtime::discover::DEFAULT_EVERY),
        }
    }
}

/// What one cycle did.
#[derive(Clone, Debug, Default)]
pub struct CycleReport {
    pub plan: Plan,
    /// One per applied operation (empty in dry-run).
    pub outcomes: Vec<Outcome>,
    /// Desired memberships on ports whose names the switch grammar refuses.
    pub bad_names: usize,
    /// When an unresolved intent may next be settled (absent and still young).
    pub recheck_at: Option<UnixMs>,
}

impl CycleReport {
    /// Operations the switch failed.
    pub fn failed(&self) -> usize {
        self.outcomes.iter().filter(|o| matches!(o.result, OpResult::Failed(_))).count()
    }

    fn first_failure(&self) -> Option<String> {
        self.outcomes.iter().find_map(|o| match &o.result {
            OpResult::Failed(why) => Some(format!("{}: {}", o.op, cut(why, MAX_ERROR_TEXT))),
            _ => None,
        })
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
    /// Refusals and held removals already recorded (they are audited when they first appear).
    refused: BTreeSet<(String, VlanId, String)>,
    held: Option<Vec<Op>>,
    /// What [`crate::plan::clipped`] said last cycle (logged only when it changes).
    clipped: BTreeMap<String, String>,
    /// This switch's part of desired state, as of the last cycle.
    wanted: Wanted,
}

/// Counters and health of one reconciler, for `/metrics` and `/healthz` (read them while it
/// runs; [`Stats::health`] gives a consistent copy of the health fields).
#[derive(Debug, Default)]
pub struct Stats {
    /// Cycles run (every trigger: change, drift, resync, retry).
    pub cycles: AtomicU64,
    /// Cycles that failed outright or had failed operations.
    pub failed_cycles: AtomicU64,
    /// Cycles triggered by drift the switch announced.
    pub drift_cycles: AtomicU64,
    /// Whether the last cycle failed (outright or with a failed operation).
    pub failing: AtomicBool,
    /// Cycles failed in a row (0 once one succeeds).
    pub consecutive_failures: AtomicU64,
    /// Unix ms of the first failure of the current run of failures (0 when not failing).
    pub failing_since: AtomicU64,
    /// The last failure's text (kept after recovery, cut to [`MAX_ERROR_TEXT`]).
    pub last_error: Mutex<Option<String>>,
    /// Intents left unresolved by the last cycle (an add with no reply, not settled yet).
    pub unresolved_intents: AtomicU64,
    /// Desired memberships the last cycle refused because the port name is invalid.
    pub refused_names: AtomicU64,
    /// Unix ms the last cycle ended (0 before the first).
    pub last_cycle_at: AtomicU64,
    /// Unix ms of the earliest change of desired state no cycle has applied yet (0: none).
    pub changed_since: AtomicU64,
    /// Told, after each cycle that wrote to the switch, how long ago the earliest change it
    /// applied was noted ([`Stats::observe_changes`]).
    change_observer: ChangeObserver,
}

/// The callback [`Stats::observe_changes`] keeps.
#[derive(Default)]
struct ChangeObserver(std::sync::OnceLock<Box<dyn Fn(Duration) + Send + Sync>>);

impl fmt::Debug for ChangeObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.get().is_some() { "ChangeObserver(set)" } else { "ChangeObserver(none)" })
    }
}

/// A copy of a reconciler's health, for `/healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Health {
    pub failing: bool,
    pub consecutive_failures: u64,
    /// Unix ms the current run of failures began (`None` when not failing).
    pub failing_since: Option<UnixMs>,
    pub last_error: Option<String>,
    pub unresolved_intents: u64,
    pub refused_names: u64,
    /// Unix ms the last cycle ended (`None` before the first).
    pub last_cycle_at: Option<UnixMs>,
}

impl Stats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Has `f` told the change→switch latency from now on: for each cycle that applied
    /// operations, the time from the earliest change of desired state it applied — published
    /// by the engine as soon as the event that made it is durable — to the end of the cycle,
    /// when the switch has confirmed the writes. Changes that need no write on this switch are
    /// not counted; a failed cycle passes its changes to the next. Only the first observer is
    /// kept; returns whether this one was.
    pub fn observe_changes(&self, f: impl Fn(Duration) + Send + Sync + 'static) -> bool {
        self.change_observer.0.set(Box::new(f)).is_ok()
    }

    /// Notes a change of desired state at `now` (keeps the earliest unapplied one).
    fn changed(&self, now: UnixMs) {
        let _ = self.changed_since.compare_exchange(0, now.max(1), Ordering::AcqRel, Ordering::Relaxed);
    }

    /// The health fields, read together.
    pub fn health(&self) -> Health {
        let since = self.failing_since.load(Ordering::Relaxed);
        let last = self.last_cycle_at.load(Ordering::Relaxed);
        Health {
            last_cycle_at: (last != 0).then_some(last),
            failing: self.failing.load(Ordering::Relaxed),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            failing_since: (since != 0).then_some(since),
            last_error: self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            unresolved_intents: self.unresolved_intents.load(Ordering::Relaxed),
            refused_names: self.refused_names.load(Ordering::Relaxed),
        }
    }

    fn failed(&self, error: String, now: UnixMs) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        if !self.failing.swap(true, Ordering::Relaxed) {
            self.failing_since.store(now, Ordering::Relaxed);
        }
        Stats::bump(&self.consecutive_failures);
    }

    fn succeeded(&self) {
        self.failing.store(false, Ordering::Relaxed);
        self.failing_since.store(0, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }
}

fn now_ms() -> UnixMs {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as UnixMs).unwrap_or(0)
}

/// Notes each change of desired state in `stats` as it is published and wakes the cycle loop;
/// once the sender is gone, wakes it a last time (it sees the channel closed and returns) and
/// pends.
async fn note_changes(mut desired: watch::Receiver<Arc<Desired>>, stats: Arc<Stats>, wake: Arc<tokio::sync::Notify>) {
    while desired.changed().await.is_ok() {
        stats.changed(now_ms());
        wake.notify_one();
    }
    wake.notify_one();
    std::future::pending::<()>().await
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

/// How a desired port's name (a hypervisor's spelling) stands on this switch.
#[derive(Clone, Debug)]
enum PortClass {
    /// The grammar reads it, and the policy manages the port.
    Managed(PortName),
    /// The grammar reads it, but the policy leaves the port alone (excluded, or not managed).
    Unmanaged,
    /// The grammar refuses it: why.
    Refused(String),
}

/// The desired ports' names as this switch reads them, decided once and remembered across
/// cycles: at scale most cabled ports are unmanaged, and parsing every name and looking it up
/// in the policy's port sets on every cycle made each cycle cost the whole switch, not what it
/// manages. Decided under one policy: a different one starts afresh.
#[derive(Debug, Default)]
struct PortClasses {
    policy: Option<Policy>,
    by_name: std::collections::HashMap<String, PortClass>,
}

impl PortClasses {
    /// At most this many names beyond the desired ports are remembered (names that are desired
    /// no more are forgotten when it is passed).
    const SPARE: usize = 1024;

    fn class(&mut self, grammar: Grammar, policy: &Policy, name: &str) -> &PortClass {
        if !self.by_name.contains_key(name) {
            let class = match PortName::parse(grammar, name) {
                Ok(p) if policy.manages(&p) => PortClass::Managed(p),
                Ok(_) => PortClass::Unmanaged,
                Err(e) => PortClass::Refused(e.why),
            };
            self.by_name.insert(name.to_string(), class);
        }
        &self.by_name[name]
    }

    /// None decided yet, under `policy`.
    fn under(policy: &Policy) -> Self {
        Self { policy: Some(policy.clone()), by_name: Default::default() }
    }

    /// Forgets every name when far more are remembered than `desired` ports are desired now.
    fn prune(&mut self, desired: usize) {
        if self.by_name.len() > desired.saturating_mul(2).saturating_add(Self::SPARE) {
            self.by_name.clear();
        }
    }
}

/// This switch's desired ports by canonical name, each with the desired-state keys (hypervisor
/// spellings) that map to it; kept in step with desired state by what changed since the last
/// cycle. Desired state is a persistent map, and its diff visits only the paths two versions do
/// not share, so a cycle costs what changed and what the switch manages, not every port
/// desired (at 2,000 cabled ports, re-reading them all made up most of a cycle's work).
#[derive(Debug, Default)]
struct Wanted {
    /// The desired state this was brought in step with (`None`: nothing yet).
    from: Option<Arc<Desired>>,
    want: PortSets,
    keys: BTreeMap<PortName, BTreeSet<SwitchPort>>,
    /// Desired ports whose names the grammar refuses, with why.
    bad: BTreeMap<SwitchPort, String>,
    /// Desired ports the policy does not manage.
    unmanaged: BTreeSet<SwitchPort>,
    names: PortClasses,
}

impl Wanted {
    /// Brings this in step with `desired` (read under `policy`; another policy than last time
    /// reads every port afresh).
    fn follow(&mut self, desired: &Arc<Desired>, switch: &str, grammar: Grammar, policy: &Policy) {
        if self.names.policy.as_ref() != Some(policy) {
            *self = Wanted { names: PortClasses::under(policy), ..Wanted::default() };
        }
        let empty = Desired::default();
        let old = self.from.as_deref().unwrap_or(&empty);
        let mut touched = BTreeSet::new();
        for item in old.ports.diff(&desired.ports) {
            let (key, present) = match item {
                DiffItem::Add(k, _) | DiffItem::Update { new: (k, _), .. } => (k, true),
                DiffItem::Remove(k, _) => (k, false),
            };
            if key.switch != switch {
                continue;
            }
            match self.names.class(grammar, policy, &key.port) {
                PortClass::Managed(port) => {
                    let keys = self.keys.entry(port.clone()).or_default();
                    if present {
                        keys.insert(key.clone());
                    } else {
                        keys.remove(key);
                    }
                    touched.insert(port.clone());
                }
                PortClass::Unmanaged if present => {
                    self.unmanaged.insert(key.clone());
                }
                PortClass::Unmanaged => {
                    self.unmanaged.remove(key);
                }
                PortClass::Refused(why) if present => {
                    self.bad.insert(key.clone(), why.clone());
                }
                PortClass::Refused(_) => {
                    self.bad.remove(key);
                }
            }
        }
        for port in touched {
            let keys = self.keys.get(&port).map(|k| k.iter()).into_iter().flatten();
            let vlans: BTreeSet<VlanId> =
                keys.filter_map(|k| desired.ports.get(k)).flat_map(|v| v.keys().copied()).collect();
            if vlans.is_empty() {
                self.keys.remove(&port);
                self.want.remove(&port);
            } else {
                self.want.insert(port, vlans);
            }
        }
        let tracked = self.keys.values().map(BTreeSet::len).sum::<usize>() + self.unmanaged.len() + self.bad.len();
        self.names.prune(tracked);
        self.from = Some(Arc::clone(desired));
    }

    /// The reasons behind `vlan` on `port` (empty when nothing desires it).
    fn cause(&self, desired: &Desired, port: &PortName, vlan: VlanId) -> Cause {
        cause_of(desired, self.keys.get(port).into_iter().flatten(), vlan)
    }
}

fn cause_of<'a>(desired: &Desired, keys: impl Iterator<Item = &'a SwitchPort>, vlan: VlanId) -> Cause {
    let mut cause = Cause::default();
    for key in keys {
        for r in desired.ports.get(key).and_then(|v| v.get(&vlan)).into_iter().flatten() {
            if cause.reasons.len() < CAUSE_REASONS {
                cause.reasons.push(r.clone());
            } else {
                cause.more += 1;
            }
        }
    }
    cause
}

impl<S: Switch, L: store::Log<SwitchRecord>> Reconciler<S, L> {
    /// A reconciler of `switch`. `audit` must be a log of the same `store::Store` as the
    /// ledger's table (as the agent wires them): a cycle stages its ledger writes and lets the
    /// audit append's flush make both durable — one flush before the switch is told, one after.
    pub fn new(
        switch: Arc<S>,
        ledger: Ledger,
        audit: Arc<L>,
        desired: watch::Receiver<Arc<Desired>>,
        config: Config,
    ) -> Self {
        Self {
            switch,
            ledger,
            audit,
            desired,
            config,
            stats: Arc::default(),
            refused: BTreeSet::new(),
            held: None,
            clipped: BTreeMap::new(),
            wanted: Wanted::default(),
        }
    }

    /// This reconciler's counters and health.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    fn store_err(&self, context: &'static str) -> impl FnOnce(store::Error) -> Error + '_ {
        move |source| Error::Store { switch: self.switch.name().to_string(), context, source }
    }

    fn record(&self, at: UnixMs, entry: AuditEntry) -> SwitchRecord {
        SwitchRecord { at, switch: self.switch.name().to_string(), entry }
    }

    /// Records refusals that were not recorded before (and forgets those that no longer hold).
    fn refusals(&mut self, now: UnixMs, found: Vec<(String, VlanId, String, Cause)>, records: &mut Vec<SwitchRecord>) {
        let name = self.switch.name().to_string();
        let mut current = BTreeSet::new();
        for (port, vlan, why, cause) in found {
            let key = (port.clone(), vlan, why.clone());
            if !self.refused.contains(&key) {
                let entry = AuditEntry::Refused { port, vlan, why, cause };
                warn!(switch = %name, vlan = vlan.get(), "{name} {entry}");
                records.push(self.record(now, entry));
            }
            current.insert(key);
        }
        self.refused = current;
    }

    /// One reconcile cycle: read, settle intents, plan, make intents durable, apply, confirm or
    /// roll back, audit.
    pub async fn cycle(&mut self) -> Result<CycleReport> {
        let name = self.switch.name().to_string();
        let grammar = self.switch.grammar();
        let desired = self.desired.borrow_and_update().clone();
        let ledger = self.ledger.load(grammar).map_err(self.store_err("loading the ownership ledger"))?;
        let mut wanted = std::mem::take(&mut self.wanted);
        wanted.follow(&desired, &name, grammar, &self.config.policy);
        let report = self.cycle_with(&wanted, desired, ledger, name).await;
        self.wanted = wanted;
        report
    }

    /// A cycle against `wanted`, in step with `desired`.
    async fn cycle_with(
        &mut self,
        wanted: &Wanted,
        desired: Arc<Desired>,
        mut ledger: Owned,
        name: String,
    ) -> Result<CycleReport> {
        let grammar = self.switch.grammar();
        if !wanted.unmanaged.is_empty() {
            debug!(switch = %name, ports = wanted.unmanaged.len(), "desired VLANs on unmanaged ports not planned");
        }
        let now = now_ms();
        let mut records = Vec::new();
        let mut found = Vec::new();
        let mut bad_names = 0;
        for (key, why) in &wanted.bad {
            let shown = crate::port::escaped(&key.port);
            for &vlan in desired.ports[key].keys() {
                bad_names += 1;
                let cause = cause_of(&desired, std::iter::once(key), vlan);
                // Name where the name came from: the hypervisor hosts whose uplinks reported it.
                let from: BTreeSet<String> =
                    cause.reasons.iter().map(|r| format!("{} host {}", r.hypervisor, r.host)).collect();
                let from = from.into_iter().collect::<Vec<_>>().join(", ");
                let why =
                    format!("{shown} (the neighbour port reported by {from}) is not {grammar}: {why}; nothing is sent");
                found.push((shown.clone(), vlan, why, cause));
            }
        }
        self.stats.refused_names.store(bad_names as u64, Ordering::Relaxed);

        let ports: BTreeSet<PortName> = wanted
            .want
            .keys()
            .chain(ledger.owned.keys().filter(|p| self.config.policy.manages(p)))
            .chain(ledger.intents.keys())
            .cloned()
            .collect();
        let observed = match self.switch.read(&ports).await {
            Ok(o) => o,
            Err(e) => {
                self.refusals(now, found, &mut records);
                self.append(records).await?;
                return Err(e.into());
            }
        };

        // Intents from a cycle whose reply never came: settle them against what the switch shows.
        let mut touched = BTreeSet::new();
        let settled = settle(&ledger.intents, &observed, now, self.config.settle.as_millis() as u64);
        for (port, vlan, intent_at, present) in settled
            .claimed
            .iter()
            .map(|(p, v, a)| (p, *v, *a, true))
            .chain(settled.dropped.iter().map(|(p, v, a)| (p, *v, *a, false)))
        {
            if let Some(i) = ledger.intents.get_mut(port) {
                i.remove(&vlan);
            }
            if present {
                ledger.owned.entry(port.clone()).or_default().insert(vlan);
            }
            touched.insert(port.clone());
            let entry = AuditEntry::Settled { op: Op::AddVlan { port: port.clone(), vlan }, intent_at, present };
            info!(switch = %name, port = %port, vlan = vlan.get(), present, "{name} {entry}");
            records.push(self.record(now, entry));
        }

        let plan = plan(&wanted.want, &observed, &ledger.owned, &self.config.policy);
        let clipped = crate::plan::clipped(&plan.refused);
        if clipped != self.clipped {
            for (port, vlans) in clipped.iter().filter(|(p, v)| self.clipped.get(*p) != Some(*v)) {
                info!(switch = %name, port = %port, vlans = %vlans, "desired VLANs outside allowed_vlans clipped");
            }
            self.clipped = clipped;
        }
        for r in &plan.refused {
            found.push((r.port().to_string(), r.vlan(), r.to_string(), wanted.cause(&desired, r.port(), r.vlan())));
        }
        self.refusals(now, found, &mut records);
        let held = plan.held.as_ref().map(|h| h.removals.clone());
        if held != self.held {
            if let Some(h) = &plan.held {
                warn!(switch = %name, due = h.removals.len(), cap = h.cap, reason = %h, "removals held");
                records.push(self.record(now, AuditEntry::Held { removals: h.removals.clone(), cap: h.cap }));
            }
            self.held = held;
        }
        for (port, vlan) in &plan.forget {
            ledger.owned.entry(port.clone()).or_default().remove(vlan);
            touched.insert(port.clone());
        }
        let cause = |op: &Op| match op {
            Op::AddVlan { port, vlan } => wanted.cause(&desired, port, *vlan),
            Op::RemoveVlan { .. } => Cause::default(),
        };

        if plan.dry_run {
            for op in &plan.ops {
                let entry = AuditEntry::DryRun { op: op.clone(), cause: cause(op) };
                info!(switch = %name, port = %op.port(), vlan = op.vlan().get(), "{name} {entry}");
                records.push(self.record(now, entry));
            }
            self.persist(&ledger, &touched, records).await?;
            return Ok(self.report(plan, Vec::new(), bad_names, &ledger, settled.recheck_at));
        }

        // Write-ahead: every add's intent is durable before the switch is told — staged in the
        // ledger and recorded in the audit, one flush for both — so it survives a crash and shows
        // in `netfold log --switch`.
        let mut intended = false;
        for op in plan.ops.iter().filter(|o| o.is_add()) {
            ledger.intents.entry(op.port().clone()).or_default().insert(op.vlan(), now);
            touched.insert(op.port().clone());
            records.push(self.record(now, AuditEntry::Intent { op: op.clone(), cause: cause(op) }));
            intended = true;
        }
        if intended {
            self.persist(&ledger, &touched, std::mem::take(&mut records)).await?;
            touched.clear();
        }
        if plan.ops.is_empty() {
            self.persist(&ledger, &touched, records).await?;
            return Ok(self.report(plan, Vec::new(), bad_names, &ledger, settled.recheck_at));
        }

        let outcomes = match self.switch.apply(&plan.ops).await {
            Ok(o) => o,
            Err(e) => {
                // Nothing is known to have happened: the intents stay, a later cycle settles them.
                warn!(switch = %name, error = %cut(&e.to_string(), MAX_ERROR_TEXT), ops = plan.ops.len(), "{name}: applying {} change(s) failed; intents stay until the switch is read", plan.ops.len());
                self.persist(&ledger, &touched, records).await?;
                return Err(e.into());
            }
        };
        for o in &outcomes {
            let port = o.op.port().clone();
            match (&o.op, &o.result) {
                (Op::AddVlan { vlan, .. }, OpResult::Applied) => {
                    ledger.owned.entry(port.clone()).or_default().insert(*vlan);
                    if let Some(i) = ledger.intents.get_mut(&port) {
                        i.remove(vlan);
                    }
                    touched.insert(port);
                }
                (Op::AddVlan { vlan, .. }, OpResult::AlreadyDone) => {
                    // Someone else put it there: not netfold's.
                    if let Some(i) = ledger.intents.get_mut(&port) {
                        i.remove(vlan);
                    }
                    touched.insert(port);
                }
                // A failed add may still have landed (a reply lost mid-batch): its intent stays
                // and a later cycle settles it by reading the switch.
                (Op::AddVlan { .. }, OpResult::Failed(_)) => {}
                (Op::RemoveVlan { vlan, .. }, OpResult::Applied | OpResult::AlreadyDone) => {
                    ledger.owned.entry(port.clone()).or_default().remove(vlan);
                    touched.insert(port);
                }
                (Op::RemoveVlan { .. }, OpResult::Failed(_)) => {}
            }
            let result = match &o.result {
                OpResult::Failed(why) => OpResult::Failed(cut(why, MAX_ERROR_TEXT)),
                r => r.clone(),
            };
            let entry = AuditEntry::Done { op: o.op.clone(), result, cause: cause(&o.op) };
            match &o.result {
                OpResult::Failed(_) => {
                    warn!(switch = %name, port = %o.op.port(), vlan = o.op.vlan().get(), "{name} {entry}")
                }
                _ => info!(switch = %name, port = %o.op.port(), vlan = o.op.vlan().get(), "{name} {entry}"),
            }
            records.push(self.record(now, entry));
        }
        self.persist(&ledger, &touched, records).await?;
        Ok(self.report(plan, outcomes, bad_names, &ledger, settled.recheck_at))
    }

    fn report(
        &self,
        plan: Plan,
        outcomes: Vec<Outcome>,
        bad_names: usize,
        ledger: &Owned,
        recheck_at: Option<UnixMs>,
    ) -> CycleReport {
        let unresolved: usize = ledger.intents.values().map(BTreeMap::len).sum();
        self.stats.unresolved_intents.store(unresolved as u64, Ordering::Relaxed);
        // An intent left by a failed add of this cycle is settled after the settle time too.
        let recheck_at = if unresolved > 0 {
            let due = now_ms().saturating_add(self.config.settle.as_millis() as u64);
            Some(recheck_at.map_or(due, |r| r.min(due)))
        } else {
            None
        };
        CycleReport { plan, outcomes, bad_names, recheck_at }
    }

    /// Writes the ledger entries of `ports` and appends `records`, durable on return with one
    /// flush: the ledger is staged and the audit append's flush carries it (the agent keeps both in
    /// one store). Without records, the ledger write flushes itself.
    async fn persist(&self, ledger: &Owned, ports: &BTreeSet<PortName>, records: Vec<SwitchRecord>) -> Result<()> {
        if records.is_empty() {
            return self.ledger.save(ledger, ports).map_err(self.store_err("writing the ownership ledger"));
        }
        self.ledger.stage(ledger, ports).map_err(self.store_err("writing the ownership ledger"))?;
        self.append(records).await
    }

    async fn append(&self, records: Vec<SwitchRecord>) -> Result<()> {
        if !records.is_empty() {
            self.audit.append(records).await.map_err(self.store_err("appending to the switch audit log"))?;
        }
        Ok(())
    }

    /// Runs cycles until `shutdown` resolves or the desired-state sender is dropped. A switch
    /// that cannot be reached (at start-up or later) is retried with backoff; its [`Stats`] say
    /// it is failing meanwhile.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        // Changes are noted as they are published, also while a cycle runs; the note wakes
        // the cycle loop.
        let wake = Arc::new(tokio::sync::Notify::new());
        let notes = note_changes(self.desired.clone(), self.stats.clone(), wake.clone());
        tokio::select! {
            _ = self.run_cycles(shutdown, wake) => {}
            _ = notes => {}
        }
    }

    async fn run_cycles(mut self, shutdown: impl Future<Output = ()> + Send, wake: Arc<tokio::sync::Notify>) {
        let name = self.switch.name().to_string();
        let mut drift = self.switch.drift();
        let mut failures: u32 = 0;
        // The earliest change a failed cycle did not apply.
        let mut carried: Option<UnixMs> = None;
        tokio::pin!(shutdown);
        loop {
            let span = info_span!("reconcile", switch = %name);
            // A note counts only when this cycle reads a value it has not seen: otherwise it
            // came late for a value an earlier cycle applied.
            let noted = self.stats.changed_since.swap(0, Ordering::AcqRel);
            let noted = if self.desired.has_changed().unwrap_or(false) { noted } else { 0 };
            let since = [carried.take().unwrap_or(0), noted].into_iter().filter(|&t| t != 0).min().unwrap_or(0);
            let result = self.cycle().instrument(span.clone()).await;
            Stats::bump(&self.stats.cycles);
            let now = now_ms();
            self.stats.last_cycle_at.store(now, Ordering::Relaxed);
            match &result {
                Ok(report) if report.failed() == 0 => {
                    let wrote = report.outcomes.iter().any(|o| matches!(o.result, OpResult::Applied));
                    if let (true, Some(f)) = (wrote && since != 0, self.stats.change_observer.0.get()) {
                        f(Duration::from_millis(now.saturating_sub(since)));
                    }
                }
                // A failed cycle passes its changes to the next.
                _ => carried = (since != 0).then_some(since),
            }
            let (mut delay, recheck_at) = match result {
                Ok(report) if report.failed() == 0 => {
                    if failures > 0 {
                        info!(parent: &span, failures, "{name}: switch converged after {failures} failed cycle(s)");
                    }
                    failures = 0;
                    self.stats.succeeded();
                    (self.config.resync, report.recheck_at)
                }
                Ok(report) => {
                    Stats::bump(&self.stats.failed_cycles);
                    failures = failures.saturating_add(1);
                    self.stats.failed(report.first_failure().unwrap_or_default(), now);
                    let d = self.config.backoff.delay(failures - 1, rand::random::<f64>());
                    warn!(parent: &span, failed = report.failed(), retry_in_ms = d.as_millis() as u64, "partial failure");
                    (d, report.recheck_at)
                }
                Err(e) => {
                    Stats::bump(&self.stats.failed_cycles);
                    failures = failures.saturating_add(1);
                    let text = cut(&e.to_string(), MAX_ERROR_TEXT);
                    let d = self.config.backoff.delay(failures - 1, rand::random::<f64>());
                    warn!(parent: &span, error = %text, retry_in_ms = d.as_millis() as u64, "{name}: reconcile cycle failed; retrying");
                    self.stats.failed(text, now);
                    (d, None)
                }
            };
            if let Some(at) = recheck_at {
                delay = delay.min(Duration::from_millis(at.saturating_sub(now).max(1)));
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = wake.notified() => if self.desired.has_changed().is_err() { return },
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
    use crate::desired::{Reason, VnicRef};
    use crate::ids::{HypervisorId, SwitchPort};
    use crate::switch::MemorySwitch;
    use futures::FutureExt;
    use store::{Log, MemoryLog};

    fn v(n: u16) -> VlanId {
        VlanId::new(n).unwrap()
    }

    fn p(s: &str) -> PortName {
        PortName::parse(Grammar::Memory, s).unwrap()
    }

    fn reason() -> Reason {
        Reason {
            hypervisor: HypervisorId::new("vc").unwrap(),
            host: "h1".into(),
            network: "pg-120".into(),
            vnic: Some(VnicRef { vm: "vm-7".into(), vm_name: "web-7".into(), nic: "4000".into() }),
        }
    }

    fn desired(switch: &str, items: &[(&str, &[u16])]) -> Arc<Desired> {
        let mut d = Desired::default();
        for (port, vlans) in items {
            let e = d.ports.entry(SwitchPort::new(switch, *port).unwrap()).or_default();
            for n in *vlans {
                e.entry(v(*n)).or_default().insert(reason());
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

    fn kinds(rig: &Rig) -> Vec<&'static str> {
        audit(rig).iter().map(|r| r.entry.kind()).collect()
    }

    fn owned(ledger: &Ledger) -> PortSets {
        ledger.load(Grammar::Memory).unwrap().owned
    }

    #[tokio::test]
    async fn cycle_applies_records_every_outcome_and_claims_only_what_it_added() {
        let (rig, mut r) = rig(MemorySwitch::new("tor1").with_port("e1", [v(99)]).with_port("e2", []));
        rig.tx.send_replace(desired("tor1", &[("e1", &[10, 99]), ("e2", &[20])]));
        let report = r.cycle().await.unwrap();
        assert_eq!(report.failed(), 0);
        assert_eq!(rig.sw.vlans("e1").unwrap(), [v(10), v(99)].into());
        assert_eq!(owned(&rig.ledger)[&p("e1")], [v(10)].into(), "operator VLAN 99 must not be claimed");
        assert!(rig.ledger.load(Grammar::Memory).unwrap().intents.is_empty(), "every intent confirmed");
        assert_eq!(kinds(&rig), ["intent", "intent", "applied", "applied"]);
        assert_eq!(
            audit(&rig)[2].entry.to_string(),
            "e1: added VLAN 10 (vc: VM web-7 on pg-120)",
            "the audit names the change and its cause"
        );

        // Nothing desired any more: netfold removes its own VLANs, leaves the operator's 99.
        rig.tx.send_replace(desired("tor1", &[]));
        r.cycle().await.unwrap();
        assert_eq!(rig.sw.vlans("e1").unwrap(), [v(99)].into());
        assert_eq!(rig.sw.vlans("e2").unwrap(), BTreeSet::new());
        assert!(owned(&rig.ledger).is_empty());
        assert_eq!(audit(&rig).len(), 6);
        assert_eq!(audit(&rig)[5].entry.to_string(), "e2: removed VLAN 20 (nothing needs it any more)");
    }

    #[tokio::test]
    async fn excluded_ports_match_canonical_names_and_are_never_touched() {
        let sw = MemorySwitch::new("tor1").with_port("e1", []).with_port("e2", [v(5)]);
        let (rig, mut r) = rig(sw);
        r.config.policy.excluded_ports = [p("e2")].into();
        rig.tx.send_replace(desired("tor1", &[("e1", &[10]), ("e2", &[20, 21])]));
        let report = r.cycle().await.unwrap();
        assert_eq!(report.plan.ops, vec![Op::AddVlan { port: p("e1"), vlan: v(10) }]);
        assert!(report.plan.refused.is_empty(), "excluded ports are not planned at all: {:?}", report.plan.refused);
        assert_eq!(rig.sw.vlans("e2").unwrap(), [v(5)].into());
        assert!(!owned(&rig.ledger).contains_key(&p("e2")));
    }

    proptest::proptest! {
        /// Followed change by change, this switch's part of desired state is what reading the
        /// final desired state whole gives: the same ports, keys, refusals and unmanaged ports.
        #[test]
        fn wanted_followed_by_changes_equals_wanted_read_whole(
            steps in proptest::collection::vec((0usize..2, 0usize..6, 1u16..5, proptest::bool::ANY), 1..60)
        ) {
            const NAMES: [&str; 6] = ["Ethernet1/1", "Et1/1", "Ethernet1/2", "Ethernet1/3", "eth 1", "Ethernet1/4"];
            let policy = Policy { excluded_ports: [PortName::parse(Grammar::Eos, "Ethernet1/3").unwrap()].into(), ..Policy::default() };
            let mut d = Desired::default();
            let mut followed = Wanted::default();
            for (sw, port, vlan, add) in steps {
                let key = SwitchPort::new(["tor1", "tor2"][sw], NAMES[port]).unwrap();
                if add {
                    d.ports.entry(key).or_default().entry(v(vlan)).or_default().insert(reason());
                } else if let Some(vlans) = d.ports.get_mut(&key) {
                    vlans.remove(&v(vlan));
                    if vlans.is_empty() {
                        d.ports.remove(&key);
                    }
                }
                followed.follow(&Arc::new(d.clone()), "tor1", Grammar::Eos, &policy);
                // Read whole, naively: every port of tor1 parsed and looked up in the policy.
                let (mut want, mut keys, mut bad, mut unmanaged) =
                    (PortSets::new(), BTreeMap::new(), BTreeMap::new(), BTreeSet::new());
                for (key, vlans) in d.ports.iter().filter(|(k, _)| k.switch == "tor1") {
                    match PortName::parse(Grammar::Eos, &key.port) {
                        Err(e) => {
                            bad.insert(key.clone(), e.why);
                        }
                        Ok(p) if !policy.manages(&p) => {
                            unmanaged.insert(key.clone());
                        }
                        Ok(p) => {
                            want.entry(p.clone()).or_default().extend(vlans.keys().copied());
                            keys.entry(p).or_insert_with(BTreeSet::new).insert(key.clone());
                        }
                    }
                }
                proptest::prop_assert_eq!(&followed.want, &want);
                proptest::prop_assert_eq!(&followed.keys, &keys);
                proptest::prop_assert_eq!(&followed.bad, &bad);
                proptest::prop_assert_eq!(&followed.unmanaged, &unmanaged);
            }
        }
    }

    #[tokio::test]
    async fn a_policy_changed_between_cycles_is_read_afresh() {
        let (rig, mut r) = rig(MemorySwitch::new("tor1").with_port("e1", []).with_port("e2", []));
        r.config.policy.excluded_ports = [p("e2")].into();
        rig.tx.send_replace(desired("tor1", &[("e1", &[10]), ("e2", &[20])]));
        r.cycle().await.unwrap();
        assert_eq!(rig.sw.vlans("e2").unwrap(), BTreeSet::new(), "an excluded port is never touched");
        // The names were read under the old policy; a port no longer excluded is managed now.
        r.config.policy.excluded_ports = BTreeSet::new();
        let report = r.cycle().await.unwrap();
        assert_eq!(report.plan.ops, vec![Op::AddVlan { port: p("e2"), vlan: v(20) }]);
        assert_eq!(rig.sw.vlans("e2").unwrap(), [v(20)].into());
    }

    #[tokio::test]
    async fn port_names_the_grammar_refuses_are_audited_once_and_nothing_is_sent() {
        let (rig, mut r) = rig(MemorySwitch::new("tor1").with_port("e1", []).creating_ports());
        let bad = ["eth1-4,eth9", "eth 1", "eth1\nshutdown"];
        let mut items: Vec<(&str, &[u16])> = bad.iter().map(|b| (*b, &[30u16][..])).collect();
        items.push(("e1", &[10]));
        rig.tx.send_replace(desired("tor1", &items));
        let report = r.cycle().await.unwrap();
        assert_eq!(report.bad_names, 3);
        assert_eq!(rig.sw.applied(), vec![Op::AddVlan { port: p("e1"), vlan: v(10) }], "only the valid port");
        let refused: Vec<String> =
            audit(&rig).iter().filter(|r| r.entry.kind() == "refused").map(|r| r.entry.to_string()).collect();
        assert_eq!(refused.len(), 3, "{refused:?}");
        assert!(refused.iter().any(|t| t.contains(r#""eth1\nshutdown""#) && t.contains("control")), "{refused:?}");
        assert!(refused.iter().all(|t| t.contains("nothing is sent") && t.contains("vc: VM web-7")), "{refused:?}");
        assert!(refused.iter().all(|t| t.contains("reported by vc host h1")), "{refused:?}");
        assert_eq!(r.stats().health().refused_names, 3);
        r.cycle().await.unwrap();
        assert_eq!(audit(&rig).iter().filter(|r| r.entry.kind() == "refused").count(), 3, "recorded once");
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
        assert_eq!(owned(&ledger)[&p("e1")], [v(7)].into());
        Reconciler::new(sw.clone(), ledger, audit.clone(), rx, Config::default()).cycle().await.unwrap();
        assert_eq!(sw.vlans("e1").unwrap(), BTreeSet::new(), "VLAN added before the restart is removed after it");
        let recs: Vec<_> = audit.read(1).map(|e| e.unwrap().record.entry.kind()).collect();
        assert_eq!(recs, ["intent", "applied", "applied"]);
    }

    #[tokio::test]
    async fn ledger_entries_under_another_spelling_are_canonicalised() {
        let store = store::Store::temporary().unwrap();
        let table = store.table("ledger").unwrap();
        table.insert(b"tor1\0et1/1", &BTreeSet::from([v(5)])).unwrap();
        table.insert(b"tor1\0Ethernet1/1", &BTreeSet::from([v(6)])).unwrap();
        let ledger = Ledger::new(table.clone(), "tor1");
        let eth = PortName::parse(Grammar::Eos, "Ethernet1/1").unwrap();
        assert_eq!(ledger.load(Grammar::Eos).unwrap().owned[&eth], [v(5), v(6)].into());
        assert!(table.get::<BTreeSet<VlanId>>(b"tor1\0et1/1").unwrap().is_none(), "old spelling rewritten");
        assert_eq!(ledger.load(Grammar::Eos).unwrap().owned[&eth], [v(5), v(6)].into());
    }

    #[test]
    fn switches_sharing_a_ledger_table_never_see_each_others_entries() {
        // `tor1` is a byte prefix of `tor10`: the kind byte after the name keeps them apart.
        let store = store::Store::temporary().unwrap();
        let table = store.table("ledger").unwrap();
        let (tor1, tor10) = (Ledger::new(table.clone(), "tor1"), Ledger::new(table, "tor10"));
        let e1: BTreeSet<PortName> = [p("e1")].into();
        let owning = |vlan| Owned { owned: [(p("e1"), [v(vlan)].into())].into(), intents: Default::default() };
        tor1.save(&owning(10), &e1).unwrap();
        tor10.save(&owning(20), &e1).unwrap();
        assert_eq!(owned(&tor1)[&p("e1")], [v(10)].into());
        assert_eq!(owned(&tor10)[&p("e1")], [v(20)].into());
        tor1.save(&Owned::default(), &e1).unwrap();
        assert!(owned(&tor1).is_empty());
        assert_eq!(owned(&tor10)[&p("e1")], [v(20)].into(), "clearing tor1 leaves tor10's entry");
    }

    #[tokio::test]
    async fn dry_run_applies_nothing_and_audits_the_plan() {
        let (rig, mut r) = rig(MemorySwitch::new("tor1").with_port("e1", []));
        r.config.policy.dry_run = true;
        rig.tx.send_replace(desired("tor1", &[("e1", &[10])]));
        r.cycle().await.unwrap();
        assert!(rig.sw.vlans("e1").unwrap().is_empty());
        assert_eq!(kinds(&rig), ["dry-run"]);
        assert!(owned(&rig.ledger).is_empty());
    }

    #[test]
    fn schema_1_records_with_names_invalid_today_still_upcast() {
        let old = v1::SwitchRecord {
            at: 5,
            switch: "tor1".into(),
            op: v1::Op::AddVlan { port: "eth1-4,eth9".into(), vlan: v(10) },
            result: v1::AuditResult::Done(OpResult::Failed("bad".into())),
        };
        let bytes = bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap();
        let rec = <SwitchRecord as store::Record>::decode(1, &bytes).unwrap();
        assert_eq!(rec.entry.op().unwrap().port().as_str(), "eth1-4,eth9");
    }

    #[test]
    fn schema_1_records_upcast_to_done_entries() {
        let old = v1::SwitchRecord {
            at: 5,
            switch: "tor1".into(),
            op: v1::Op::AddVlan { port: "e1".into(), vlan: v(10) },
            result: v1::AuditResult::Done(OpResult::Applied),
        };
        let bytes = bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap();
        let rec = <SwitchRecord as store::Record>::decode(1, &bytes).unwrap();
        assert_eq!(
            rec.entry,
            AuditEntry::Done {
                op: Op::AddVlan { port: p("e1"), vlan: v(10) },
                result: OpResult::Applied,
                cause: Cause::default()
            }
        );
    }

    /// A switch that can lose the reply: the operations reach `inner` (or not), the answer
    /// never comes back (a crash, or a reply slower than the timeout).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Fault {
        None,
        /// netfold dies after the intent is durable, before the request leaves.
        CrashBeforeSend,
        /// The switch applies; netfold dies before the reply.
        CrashBeforeReply,
        /// The switch applies; the reply is slower than the timeout.
        TimeoutAfterApply,
        /// Someone else clears the port between netfold's read and its request.
        ClearedBeforeApply,
    }

    struct Faulty {
        inner: MemorySwitch,
        fault: Mutex<Fault>,
    }

    impl Switch for Faulty {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn grammar(&self) -> Grammar {
            Grammar::Memory
        }
        async fn read(&self, ports: &BTreeSet<PortName>) -> Result<crate::switch::Observed, SwitchError> {
            self.inner.read(ports).await
        }
        async fn apply(&self, ops: &[Op]) -> Result<Vec<Outcome>, SwitchError> {
            let fault = *self.fault.lock().unwrap();
            match fault {
                Fault::None => self.inner.apply(ops).await,
                Fault::CrashBeforeSend => std::future::pending().await,
                Fault::CrashBeforeReply => {
                    self.inner.apply_now(ops)?;
                    std::future::pending().await
                }
                Fault::TimeoutAfterApply => {
                    self.inner.apply_now(ops)?;
                    Err(SwitchError::Unreachable { switch: "tor1".into(), reason: "timed out after 5s".into() })
                }
                Fault::ClearedBeforeApply => {
                    for op in ops {
                        self.inner.operator_set(op.port().as_str(), []);
                    }
                    self.inner.apply(ops).await
                }
            }
        }
        fn drift(&self) -> Option<watch::Receiver<u64>> {
            None
        }
    }

    /// What netfold put on the switch and has not taken off, from the switch's own record.
    fn added_minus_removed(sw: &MemorySwitch) -> PortSets {
        let mut out = PortSets::new();
        for op in sw.applied() {
            let set = out.entry(op.port().clone()).or_default();
            if op.is_add() {
                set.insert(op.vlan());
            } else {
                set.remove(&op.vlan());
            }
        }
        out.retain(|_, s| !s.is_empty());
        out
    }

    #[tokio::test]
    async fn a_reply_lost_to_a_crash_or_a_timeout_is_settled_and_the_vlan_removed_when_unneeded() {
        for fault in [Fault::CrashBeforeReply, Fault::TimeoutAfterApply, Fault::CrashBeforeSend] {
            let store = store::Store::temporary().unwrap();
            let ledger = Ledger::new(store.table("ledger").unwrap(), "tor1");
            let sw = Arc::new(Faulty {
                inner: MemorySwitch::new("tor1").with_port("e1", [v(99)]),
                fault: Mutex::new(fault),
            });
            let audit = Arc::new(MemoryLog::<SwitchRecord>::new());
            let (tx, rx) = watch::channel(desired("tor1", &[("e1", &[10, 99])]));
            let config = Config { settle: Duration::ZERO, ..Config::default() };
            let mut r = Reconciler::new(sw.clone(), ledger.clone(), audit.clone(), rx.clone(), config.clone());
            match r.cycle().now_or_never() {
                None => drop(r), // killed mid-cycle
                Some(res) => assert!(res.is_err(), "{fault:?}: the timeout fails the cycle"),
            }
            let intents = ledger.load(Grammar::Memory).unwrap().intents;
            assert_eq!(intents[&p("e1")].len(), 1, "{fault:?}: the intent was durable before the send");
            *sw.fault.lock().unwrap() = Fault::None;
            tx.send_replace(desired("tor1", &[]));
            let mut r = Reconciler::new(sw.clone(), ledger.clone(), audit.clone(), rx, config);
            r.cycle().await.unwrap();
            assert_eq!(
                sw.inner.vlans("e1").unwrap(),
                [v(99)].into(),
                "{fault:?}: netfold's 10 gone, operator's 99 kept"
            );
            let after = ledger.load(Grammar::Memory).unwrap();
            assert!(after.owned.is_empty() && after.intents.is_empty(), "{fault:?}: {after:?}");
            let settled: Vec<_> =
                audit.read(1).map(|e| e.unwrap().record.entry).filter(|e| e.kind() == "settled").collect();
            let present = fault != Fault::CrashBeforeSend;
            assert!(
                matches!(settled[..], [AuditEntry::Settled { present: p, .. }] if p == present),
                "{fault:?}: {settled:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_absent_intent_is_kept_until_the_settle_time_so_a_late_add_is_still_claimed() {
        let store = store::Store::temporary().unwrap();
        let ledger = Ledger::new(store.table("ledger").unwrap(), "tor1");
        let sw = Arc::new(Faulty {
            inner: MemorySwitch::new("tor1").with_port("e1", []),
            fault: Mutex::new(Fault::CrashBeforeSend),
        });
        let audit = Arc::new(MemoryLog::<SwitchRecord>::new());
        let (tx, rx) = watch::channel(desired("tor1", &[("e1", &[10])]));
        let mut r = Reconciler::new(sw.clone(), ledger.clone(), audit.clone(), rx.clone(), Config::default());
        assert!(r.cycle().now_or_never().is_none());
        drop(r);
        tx.send_replace(desired("tor1", &[]));
        *sw.fault.lock().unwrap() = Fault::None;
        let mut r = Reconciler::new(sw.clone(), ledger.clone(), audit.clone(), rx, Config::default());
        let report = r.cycle().await.unwrap();
        assert!(report.recheck_at.is_some(), "a young absent intent asks for a recheck");
        assert_eq!(r.stats().health().unresolved_intents, 1);
        // The request lands late (it was still queued on the switch): the next cycle claims it.
        sw.inner.apply_now(&[Op::AddVlan { port: p("e1"), vlan: v(10) }]).unwrap();
        r.cycle().await.unwrap();
        r.cycle().await.unwrap();
        assert_eq!(sw.inner.vlans("e1").unwrap(), BTreeSet::new(), "the late add is netfold's and is removed");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

        /// Random desired states, each cycle possibly killed or timed out at a random point, then
        /// a restart: after recovery the ledger owns exactly what netfold added and did not remove,
        /// and once nothing is desired only the operator's VLANs are left.
        #[test]
        fn after_recovery_owned_is_added_minus_removed(
            operator in proptest::collection::btree_set(1u16..=8, 0..4),
            steps in proptest::collection::vec(
                (proptest::collection::btree_map(0usize..3, proptest::collection::btree_set(1u16..=8, 0..5), 0..3),
                 0usize..4),
                1..8,
            ),
        ) {
            const PORTS: [&str; 3] = ["e1", "e2", "e3"];
            let store = store::Store::temporary().unwrap();
            let ledger = Ledger::new(store.table("ledger").unwrap(), "tor1");
            let inner = PORTS.iter().fold(MemorySwitch::new("tor1"), |s, port| s.with_port(port, operator.iter().map(|&n| v(n))));
            let sw = Arc::new(Faulty { inner, fault: Mutex::new(Fault::None) });
            let audit = Arc::new(MemoryLog::<SwitchRecord>::new());
            let (tx, rx) = watch::channel(Arc::new(Desired::default()));
            let policy = Policy { max_removals: usize::MAX, ..Policy::default() };
            let config = Config { settle: Duration::ZERO, policy, ..Config::default() };
            let fresh = || Reconciler::new(sw.clone(), ledger.clone(), audit.clone(), rx.clone(), config.clone());
            let mut r = fresh();
            for (want, fault) in steps {
                let items: Vec<(&str, Vec<u16>)> = want.iter().map(|(i, s)| (PORTS[*i], s.iter().copied().collect())).collect();
                let items: Vec<(&str, &[u16])> = items.iter().map(|(p, s)| (*p, s.as_slice())).collect();
                tx.send_replace(desired("tor1", &items));
                let fault = [Fault::None, Fault::CrashBeforeSend, Fault::CrashBeforeReply, Fault::TimeoutAfterApply][fault];
                *sw.fault.lock().unwrap() = fault;
                match r.cycle().now_or_never() {
                    None => r = fresh(), // killed: a new process over the same ledger
                    Some(res) => proptest::prop_assert!(res.is_ok() || fault == Fault::TimeoutAfterApply, "{:?}", res.err()),
                }
                *sw.fault.lock().unwrap() = Fault::None;
                r.cycle().now_or_never().unwrap().unwrap();
                let state = ledger.load(Grammar::Memory).unwrap();
                proptest::prop_assert_eq!(&state.owned, &added_minus_removed(&sw.inner));
                proptest::prop_assert!(state.intents.is_empty(), "{:?}", state.intents);
                for port in PORTS {
                    let have = sw.inner.vlans(port).unwrap();
                    proptest::prop_assert!(operator.iter().all(|n| have.contains(&v(*n))), "operator VLAN gone from {}", port);
                }
            }
            tx.send_replace(Arc::new(Desired::default()));
            r.cycle().now_or_never().unwrap().unwrap();
            for port in PORTS {
                let want: BTreeSet<VlanId> = operator.iter().map(|&n| v(n)).collect();
                proptest::prop_assert_eq!(sw.inner.vlans(port).unwrap(), want);
            }
        }
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
        let stats = r.stats();
        let task = tokio::spawn(r.run(std::future::pending()));
        rig.tx.send_replace(desired("tor1", &[("e1", &[10])]));
        until("VLAN 10 added", || rig.sw.vlans("e1").unwrap().contains(&v(10))).await;
        assert_eq!(stats.drift_cycles.load(Ordering::SeqCst), 0);
        let start = tokio::time::Instant::now();
        rig.sw.operator_set("e1", []);
        until("VLAN 10 put back after drift", || rig.sw.vlans("e1").unwrap().contains(&v(10))).await;
        assert!(start.elapsed() < Config::default().resync, "drift must not wait for the resync");
        assert!(stats.drift_cycles.load(Ordering::SeqCst) >= 1, "the repair was a drift cycle");
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_that_needs_a_write_is_timed_once_from_its_publication_to_the_written_switch() {
        let (rig, r) = rig(MemorySwitch::new("tor1").with_port("e1", []));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        assert!(r.stats().observe_changes(move |d| s.lock().unwrap().push(d)));
        let stats = r.stats();
        let task = tokio::spawn(r.run(std::future::pending()));
        until("the first cycle", || stats.cycles.load(Ordering::Relaxed) >= 1).await;
        assert!(seen.lock().unwrap().is_empty(), "the start-up cycle applies no change");
        rig.tx.send_replace(desired("tor1", &[("e1", &[10])]));
        until("VLAN 10 added", || rig.sw.vlans("e1").unwrap().contains(&v(10))).await;
        until("the change timed", || !seen.lock().unwrap().is_empty()).await;
        // A change on another switch's ports needs no write here: not timed.
        let cycles = stats.cycles.load(Ordering::Relaxed);
        rig.tx.send_replace(Arc::new({
            let mut d = (*desired("tor1", &[("e1", &[10])])).clone();
            d.ports.extend(desired("tor2", &[("e1", &[30])]).ports.clone());
            d
        }));
        until("a cycle for the change", || stats.cycles.load(Ordering::Relaxed) > cycles).await;
        assert_eq!(seen.lock().unwrap().len(), 1, "{:?}", seen.lock().unwrap());
        assert_eq!(stats.changed_since.load(Ordering::Relaxed), 0, "no change left unapplied");
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_a_failed_cycle_did_not_apply_is_timed_once_when_a_later_cycle_writes_it() {
        let (rig, r) = rig(MemorySwitch::new("tor1").with_port("e1", []));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        r.stats().observe_changes(move |d| s.lock().unwrap().push(d));
        let stats = r.stats();
        let task = tokio::spawn(r.run(std::future::pending()));
        until("the first cycle", || stats.cycles.load(Ordering::Relaxed) >= 1).await;
        rig.sw.set_down(true);
        rig.tx.send_replace(desired("tor1", &[("e1", &[10])]));
        until("a failed cycle", || stats.failed_cycles.load(Ordering::Relaxed) >= 1).await;
        assert!(seen.lock().unwrap().is_empty(), "nothing written, nothing timed");
        rig.sw.set_down(false);
        until("VLAN 10 added after the outage", || rig.sw.vlans("e1").unwrap().contains(&v(10))).await;
        until("the change timed", || !seen.lock().unwrap().is_empty()).await;
        let cycles = stats.cycles.load(Ordering::Relaxed);
        rig.sw.operator_set("e1", []);
        until("drift repaired", || rig.sw.vlans("e1").unwrap().contains(&v(10))).await;
        until("the repair cycle counted", || stats.cycles.load(Ordering::Relaxed) > cycles).await;
        assert_eq!(seen.lock().unwrap().len(), 1, "a drift repair is no change of desired state");
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_converge_while_other_switches_proceed() {
        let (a, ra) = rig(MemorySwitch::new("tor1").with_port("e1", []));
        let (b, rb) = rig(MemorySwitch::new("tor2").with_port("e1", []));
        a.sw.set_down(true);
        let op = Op::AddVlan { port: p("e1"), vlan: v(11) };
        b.sw.set_failing(op.clone(), true);
        let (sa, sb) = (ra.stats(), rb.stats());
        let ta = tokio::spawn(ra.run(std::future::pending()));
        let tb = tokio::spawn(rb.run(std::future::pending()));
        a.tx.send_replace(desired("tor1", &[("e1", &[10])]));
        b.tx.send_replace(desired("tor2", &[("e1", &[10, 11])]));
        until("tor2 gets VLAN 10 though tor1 is down", || b.sw.vlans("e1").unwrap().contains(&v(10))).await;
        until("the failed op is audited", || {
            audit(&b).iter().any(|r| r.entry.op() == Some(&op) && r.entry.kind() == "failed")
        })
        .await;
        until("tor1 shows as failing", || sa.health().consecutive_failures >= 2).await;
        let h = sa.health();
        assert!(h.failing && h.failing_since.is_some(), "{h:?}");
        assert!(h.last_error.as_deref().is_some_and(|e| e.contains("unreachable")), "{h:?}");
        assert!(sb.health().failing, "a failed operation makes the switch failing too");
        b.sw.set_failing(op, false);
        a.sw.set_down(false);
        let start = tokio::time::Instant::now();
        until("tor2 converges on retry", || b.sw.vlans("e1").unwrap().contains(&v(11))).await;
        until("tor1 converges once up", || a.sw.vlans("e1").unwrap().contains(&v(10))).await;
        assert!(start.elapsed() < Config::default().resync, "retries come from backoff, before the resync");
        until("tor1 healthy again", || !sa.health().failing).await;
        let h = sa.health();
        assert_eq!((h.consecutive_failures, h.failing_since), (0, None));
        assert!(h.last_error.is_some(), "the last error is kept for the operator");
        ta.abort();
        tb.abort();
    }

    #[tokio::test]
    async fn a_removal_answered_already_done_gives_up_ownership_and_claims_nothing() {
        let store = store::Store::temporary().unwrap();
        let ledger = Ledger::new(store.table("ledger").unwrap(), "tor1");
        let sw = Arc::new(Faulty {
            inner: MemorySwitch::new("tor1").with_port("e1", [v(10), v(99)]),
            fault: Mutex::new(Fault::ClearedBeforeApply),
        });
        let mut owned = Owned::default();
        owned.owned.entry(p("e1")).or_default().insert(v(10));
        ledger.save(&owned, &[p("e1")].into()).unwrap();
        let audit = Arc::new(MemoryLog::new());
        let (_tx, rx) = watch::channel(Arc::new(Desired::default()));
        let mut r = Reconciler::new(sw.clone(), ledger.clone(), audit.clone(), rx, Config::default());
        let report = r.cycle().await.unwrap();
        assert_eq!(report.plan.ops, vec![Op::RemoveVlan { port: p("e1"), vlan: v(10) }]);
        assert_eq!(report.failed(), 0);
        let kinds: Vec<_> = audit.read(1).map(|e| e.unwrap().record.entry.kind()).collect();
        assert_eq!(kinds.last(), Some(&"already"), "{kinds:?}");
        assert!(owned_of(&ledger).is_empty(), "VLAN 10 is gone from the port: netfold owns nothing there");
        *sw.fault.lock().unwrap() = Fault::None;
        assert!(r.cycle().await.unwrap().plan.ops.is_empty(), "nothing left to do");
        assert!(sw.inner.applied().is_empty(), "the switch never carried out a netfold request");
    }

    fn owned_of(ledger: &Ledger) -> PortSets {
        let mut o = ledger.load(Grammar::Memory).unwrap().owned;
        o.retain(|_, s| !s.is_empty());
        o
    }

    /// A switch audit log whose appends fail while `failing` is set, as a full disk would.
    struct FlakyLog {
        inner: MemoryLog<SwitchRecord>,
        failing: AtomicBool,
    }

    impl store::Log<SwitchRecord> for FlakyLog {
        async fn append(&self, batch: Vec<SwitchRecord>) -> store::Result<std::ops::RangeInclusive<store::Seq>> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(store::Error::Unavailable("disk full (test)".into()));
            }
            self.inner.append(batch).await
        }
        fn head(&self) -> store::Seq {
            self.inner.head()
        }
        fn read(
            &self,
            from: store::Seq,
        ) -> Box<dyn Iterator<Item = store::Result<store::Entry<SwitchRecord>>> + Send + '_> {
            self.inner.read(from)
        }
        fn subscribe(&self, from: store::Seq) -> store::Subscription<SwitchRecord> {
            self.inner.subscribe(from)
        }
        fn verify(&self) -> store::Result<store::Verified> {
            self.inner.verify()
        }
        fn save_snapshot(&self, seq: store::Seq, bytes: Vec<u8>) -> store::Result<()> {
            self.inner.save_snapshot(seq, bytes)
        }
        fn latest_snapshot(&self) -> store::Result<Option<store::Snapshot>> {
            self.inner.latest_snapshot()
        }
        fn checkpoint(&self, name: &str) -> store::Result<Option<store::Seq>> {
            self.inner.checkpoint(name)
        }
        fn set_checkpoint(&self, name: &str, seq: store::Seq) -> store::Result<()> {
            self.inner.set_checkpoint(name, seq)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_error_fails_the_cycle_before_the_switch_is_touched_is_retried_and_shutdown_ends_the_loop() {
        let store = store::Store::temporary().unwrap();
        let ledger = Ledger::new(store.table("ledger").unwrap(), "tor1");
        let sw = Arc::new(MemorySwitch::new("tor1").with_port("e1", []));
        let audit = Arc::new(FlakyLog { inner: MemoryLog::new(), failing: AtomicBool::new(true) });
        let (tx, rx) = watch::channel(desired("tor1", &[("e1", &[10])]));
        let r = Reconciler::new(sw.clone(), ledger.clone(), audit.clone(), rx, Config::default());
        let stats = r.stats();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(r.run(async move {
            let _ = stopped.await;
        }));
        until("the store error shows", || stats.health().consecutive_failures >= 2).await;
        let h = stats.health();
        assert!(h.failing && h.last_error.as_deref().is_some_and(|e| e.contains("switch audit log")), "{h:?}");
        assert!(sw.applied().is_empty(), "no request leaves before its intent is durable");
        assert!(stats.failed_cycles.load(Ordering::SeqCst) >= 2);
        audit.failing.store(false, Ordering::SeqCst);
        until("VLAN 10 added once the store takes writes", || sw.vlans("e1").unwrap().contains(&v(10))).await;
        until("healthy again", || !stats.health().failing).await;
        assert_eq!(owned_of(&ledger), [(p("e1"), [v(10)].into())].into());
        let cycles = stats.cycles.load(Ordering::SeqCst);
        assert!(cycles > stats.failed_cycles.load(Ordering::SeqCst), "{cycles} cycles");
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(60), task).await.expect("run returns on shutdown").unwrap();
        drop(tx);
    }
}
