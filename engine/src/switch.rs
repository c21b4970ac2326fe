//! The switch boundary: what the reconciler needs from a managed switch, whatever its vendor.
//!
//! A [`Switch`] reads the trunk VLAN membership of the ports netfold manages, applies a list of
//! [`Op`]s (make-before-break order is the planner's job; the switch applies them in the order
//! given) and reports one [`Outcome`] per operation. A switch may also announce *drift* — a
//! change made by someone else — so the reconciler does not wait for the periodic resync.
//!
//! Ports are [`PortName`]s: each back end names its [`Grammar`], the reconciler validates every
//! port name from desired state and config against it, and a back end renders nothing else.
//!
//! [`MemorySwitch`] is the in-memory twin used by the engine's tests, the demo and
//! `kind = "memory"` switches; the real back ends (Open vSwitch over OVSDB, Arista eAPI) live in
//! the `adapters` crate.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use crate::discovery::Discovery;
use crate::ids::VlanId;
pub use crate::port::{Grammar, PortName, PortNameError};

/// The trunk VLANs of each port read from a switch, keyed by canonical port name. A port that
/// does not exist on the switch is absent.
pub type Observed = BTreeMap<PortName, BTreeSet<VlanId>>;

/// One change to a port's trunk membership. Imperative: it is a command, not a fact.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Op {
    /// Put `vlan` on the trunk of `port` (creating the VLAN first where the platform needs it).
    AddVlan { port: PortName, vlan: VlanId },
    /// Take `vlan` off the trunk of `port`.
    RemoveVlan { port: PortName, vlan: VlanId },
}

impl Op {
    pub fn port(&self) -> &PortName {
        match self {
            Op::AddVlan { port, .. } | Op::RemoveVlan { port, .. } => port,
        }
    }

    pub fn vlan(&self) -> VlanId {
        match self {
            Op::AddVlan { vlan, .. } | Op::RemoveVlan { vlan, .. } => *vlan,
        }
    }

    pub fn is_add(&self) -> bool {
        matches!(self, Op::AddVlan { .. })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::AddVlan { port, vlan } => write!(f, "add VLAN {vlan} to {port}"),
            Op::RemoveVlan { port, vlan } => write!(f, "remove VLAN {vlan} from {port}"),
        }
    }
}

/// What happened to one operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// netfold made the change.
    Applied,
    /// The port was already in the requested state (someone else made the change concurrently).
    /// For an add this means netfold did not put the VLAN there and must not claim it.
    AlreadyDone,
    /// The switch refused or failed the operation; the text says why (vendor message included).
    Failed(String),
}

/// One operation and its result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub op: Op,
    pub result: OpResult,
}

impl Outcome {
    pub fn applied(op: Op) -> Self {
        Self { op, result: OpResult::Applied }
    }

    pub fn failed(op: Op, why: impl Into<String>) -> Self {
        Self { op, result: OpResult::Failed(why.into()) }
    }
}

/// A whole-switch failure: nothing in the request is known to have happened. Per-operation
/// failures are reported as [`OpResult::Failed`] instead.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SwitchError {
    /// The switch cannot be reached or the connection broke. Retryable (with backoff).
    #[error("switch {switch} is unreachable: {reason}")]
    Unreachable { switch: String, reason: String },
    /// The switch answered something this build cannot understand. Retryable only if the cause
    /// is transient; usually a version mismatch that needs an operator.
    #[error("switch {switch} answered unexpectedly: {reason}")]
    Protocol { switch: String, reason: String },
    /// The switch rejected the credentials. Not retryable without new credentials.
    #[error("switch {switch} refused the credentials: {reason}")]
    Auth { switch: String, reason: String },
}

/// A managed switch. Errors: [`SwitchError`] means the whole call failed and the caller should
/// back off and retry; a failure of a single operation is an [`Outcome`] instead, and the other
/// operations of the batch are still reported.
pub trait Switch: Send + Sync + 'static {
    /// The switch's configured name (`tor1`), as in [`crate::SwitchPort::switch`].
    fn name(&self) -> &str;

    /// The grammar this back end's port names follow; the reconciler parses every name with it.
    fn grammar(&self) -> Grammar;

    /// The trunk VLANs of `ports` (ports the switch does not have are left out).
    fn read(&self, ports: &BTreeSet<PortName>) -> impl Future<Output = Result<Observed, SwitchError>> + Send;

    /// Applies `ops` in order and returns one outcome per operation, in the same order.
    fn apply(&self, ops: &[Op]) -> impl Future<Output = Result<Vec<Outcome>, SwitchError>> + Send;

    /// A counter bumped whenever the switch sees a change it did not make (drift), if the back
    /// end can watch; `None` when only the periodic resync will notice.
    fn drift(&self) -> Option<watch::Receiver<u64>>;

    /// What the switch itself sees of its neighbours: its MAC table, its LLDP neighbours and its
    /// bonds / port-channels ([`Discovery`], members folded into their bond), for tying host NICs
    /// to ports ([`crate::discovery`]). `Ok(None)`: this back end (or this configuration of it)
    /// cannot discover. An error means this read failed; the poller retries at its next round.
    fn discover(&self) -> impl Future<Output = Result<Option<Discovery>, SwitchError>> + Send {
        std::future::ready(Ok(None))
    }
}

#[derive(Debug, Default)]
struct MemoryState {
    ports: Observed,
    /// Whether an operation on a port the switch lacks creates it (instead of failing).
    create_on_use: bool,
    down: bool,
    /// Operations that fail (once each time they are tried) while listed here.
    failing: BTreeSet<Op>,
    applied: Vec<Op>,
    /// What [`Switch::discover`] answers (`None`: it cannot discover).
    discovery: Option<Discovery>,
}

/// The in-memory twin of a switch: ports with trunk sets, plus knobs to make it fail. Its ports
/// come from [`MemorySwitch::with_port`] (the config's `ports`), or, with
/// [`MemorySwitch::creating_ports`], into being on first use.
#[derive(Clone, Debug)]
pub struct MemorySwitch {
    name: String,
    state: Arc<Mutex<MemoryState>>,
    drift: Arc<watch::Sender<u64>>,
}

/// A port name for the memory switch.
///
/// # Panics
/// If `port` is not a valid port name: callers pass constants or names the config validated.
fn memory_port(port: &str) -> PortName {
    PortName::parse(Grammar::Memory, port).unwrap_or_else(|e| panic!("memory switch: {e}"))
}

impl MemorySwitch {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), state: Arc::default(), drift: Arc::new(watch::channel(0).0) }
    }

    /// A switch whose ports come into being (with no VLANs) the first time an operation names
    /// them, for `kind = "memory"` switches configured without `ports`.
    pub fn creating_ports(self) -> Self {
        self.lock().create_on_use = true;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A poisoned lock only means a test thread panicked while holding it; the data is a plain
        // map that is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates `port` with the given trunk VLANs (an operator's configuration: not netfold's).
    ///
    /// # Panics
    /// If `port` is not a valid port name ([`Grammar::Memory`]).
    pub fn with_port(self, port: &str, vlans: impl IntoIterator<Item = VlanId>) -> Self {
        self.lock().ports.insert(memory_port(port), vlans.into_iter().collect());
        self
    }

    /// An operator edit on the switch: sets a port's VLANs and announces drift.
    ///
    /// # Panics
    /// If `port` is not a valid port name ([`Grammar::Memory`]).
    pub fn operator_set(&self, port: &str, vlans: impl IntoIterator<Item = VlanId>) {
        self.lock().ports.insert(memory_port(port), vlans.into_iter().collect());
        self.drift.send_modify(|n| *n += 1);
    }

    /// Sets what [`Switch::discover`] answers from now on (a MAC table, LLDP neighbours, bonds).
    pub fn set_discovery(&self, discovery: Option<Discovery>) {
        self.lock().discovery = discovery;
    }

    /// Every port the switch has.
    pub fn ports(&self) -> Vec<PortName> {
        self.lock().ports.keys().cloned().collect()
    }

    /// The current trunk VLANs of `port`.
    pub fn vlans(&self, port: &str) -> Option<BTreeSet<VlanId>> {
        let port = PortName::parse(Grammar::Memory, port).ok()?;
        self.lock().ports.get(&port).cloned()
    }

    /// Makes every call fail with [`SwitchError::Unreachable`] while `down`.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// Makes `op` fail while `failing`.
    pub fn set_failing(&self, op: Op, failing: bool) {
        let mut s = self.lock();
        if failing {
            s.failing.insert(op);
        } else {
            s.failing.remove(&op);
        }
    }

    /// Every operation applied so far, in order.
    pub fn applied(&self) -> Vec<Op> {
        self.lock().applied.clone()
    }

    fn unreachable(&self) -> SwitchError {
        SwitchError::Unreachable { switch: self.name.clone(), reason: "switch is down (memory switch)".into() }
    }

    /// Applies `ops` synchronously (what [`Switch::apply`] does, without a future).
    pub fn apply_now(&self, ops: &[Op]) -> Result<Vec<Outcome>, SwitchError> {
        let mut s = self.lock();
        if s.down {
            return Err(self.unreachable());
        }
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            if s.failing.contains(op) {
                out.push(Outcome::failed(op.clone(), "injected failure"));
                continue;
            }
            if s.create_on_use && op.is_add() {
                s.ports.entry(op.port().clone()).or_default();
            }
            let Some(vlans) = s.ports.get_mut(op.port()) else {
                out.push(Outcome::failed(op.clone(), format!("no port {} on the switch", op.port())));
                continue;
            };
            let changed = match op {
                Op::AddVlan { vlan, .. } => vlans.insert(*vlan),
                Op::RemoveVlan { vlan, .. } => vlans.remove(vlan),
            };
            if changed {
                s.applied.push(op.clone());
                out.push(Outcome::applied(op.clone()));
            } else {
                out.push(Outcome { op: op.clone(), result: OpResult::AlreadyDone });
            }
        }
        Ok(out)
    }
}

impl Switch for MemorySwitch {
    fn name(&self) -> &str {
        &self.name
    }

    fn grammar(&self) -> Grammar {
        Grammar::Memory
    }

    async fn read(&self, ports: &BTreeSet<PortName>) -> Result<Observed, SwitchError> {
        let s = self.lock();
        if s.down {
            return Err(self.unreachable());
        }
        Ok(s.ports.iter().filter(|(p, _)| ports.contains(*p)).map(|(p, v)| (p.clone(), v.clone())).collect())
    }

    async fn apply(&self, ops: &[Op]) -> Result<Vec<Outcome>, SwitchError> {
        self.apply_now(ops)
    }

    fn drift(&self) -> Option<watch::Receiver<u64>> {
        Some(self.drift.subscribe())
    }

    async fn discover(&self) -> Result<Option<Discovery>, SwitchError> {
        let s = self.lock();
        if s.down {
            return Err(self.unreachable());
        }
        Ok(s.discovery.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u16) -> VlanId {
        VlanId::new(n).unwrap()
    }

    fn p(s: &str) -> PortName {
        memory_port(s)
    }

    #[tokio::test]
    async fn memory_switch_applies_and_reports_each_operation() {
        let sw = MemorySwitch::new("tor1").with_port("e1", [v(10)]);
        let ops = vec![
            Op::AddVlan { port: p("e1"), vlan: v(20) },
            Op::AddVlan { port: p("e1"), vlan: v(10) },
            Op::RemoveVlan { port: p("e9"), vlan: v(10) },
        ];
        let out = sw.apply(&ops).await.unwrap();
        assert_eq!(out[0].result, OpResult::Applied);
        assert_eq!(out[1].result, OpResult::AlreadyDone);
        assert!(matches!(&out[2].result, OpResult::Failed(m) if m.contains("e9")));
        assert_eq!(sw.vlans("e1").unwrap(), [v(10), v(20)].into());
    }

    #[tokio::test]
    async fn memory_switch_down_fails_whole_calls() {
        let sw = MemorySwitch::new("tor1").with_port("e1", []);
        sw.set_down(true);
        assert!(matches!(sw.read(&[p("e1")].into()).await, Err(SwitchError::Unreachable { .. })));
    }

    #[tokio::test]
    async fn memory_switch_without_configured_ports_creates_them_on_first_use() {
        let sw = MemorySwitch::new("tor1").creating_ports();
        assert!(sw.read(&[p("e7")].into()).await.unwrap().is_empty(), "not there before it is used");
        let out = sw.apply(&[Op::AddVlan { port: p("e7"), vlan: v(5) }]).await.unwrap();
        assert_eq!(out[0].result, OpResult::Applied);
        assert_eq!(sw.read(&[p("e7")].into()).await.unwrap()[&p("e7")], [v(5)].into());
        let strict = MemorySwitch::new("tor2");
        let out = strict.apply(&[Op::AddVlan { port: p("e7"), vlan: v(5) }]).await.unwrap();
        assert!(matches!(&out[0].result, OpResult::Failed(m) if m.contains("no port e7")));
    }
}
