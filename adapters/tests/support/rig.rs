//! A reconciler wired to any switch for adapter tests: desired state through a watch channel
//! (as the engine runtime provides it), a temporary store for the ownership ledger, and an
//! in-memory audit log.
#![allow(dead_code)] // each test binary uses a different part of this shared helper

use std::sync::Arc;

use engine::reconciler::{Config, Ledger, Reconciler, SwitchRecord};
use engine::switch::{Grammar, PortName, Switch};
use engine::{Desired, HypervisorId, Reason, SwitchPort, VlanId};
use store::{Log, MemoryLog};
use tokio::sync::watch;

pub fn v(n: u16) -> VlanId {
    VlanId::new(n).expect("valid VLAN")
}

/// An EOS interface name.
pub fn eos(s: &str) -> PortName {
    PortName::parse(Grammar::Eos, s).expect("valid EOS name")
}

/// An Open vSwitch port name.
pub fn ovs(s: &str) -> PortName {
    PortName::parse(Grammar::Ovs, s).expect("valid OVS name")
}

/// Desired state for one switch: `(port, vlans)` pairs, each VLAN with one reason.
pub fn desired(switch: &str, items: &[(&str, &[u16])]) -> Arc<Desired> {
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

pub struct Rig<S> {
    pub switch: Arc<S>,
    pub tx: watch::Sender<Arc<Desired>>,
    pub audit: Arc<MemoryLog<SwitchRecord>>,
    pub ledger: Ledger,
    pub store: store::Store,
}

impl<S: Switch> Rig<S> {
    pub fn new(switch: S, config: Config) -> (Rig<S>, Reconciler<S, MemoryLog<SwitchRecord>>) {
        let store = store::Store::temporary().unwrap();
        let ledger = Ledger::new(store.table("switch-ledger").unwrap(), switch.name());
        let switch = Arc::new(switch);
        let audit = Arc::new(MemoryLog::new());
        let (tx, rx) = watch::channel(Arc::new(Desired::default()));
        let r = Reconciler::new(switch.clone(), ledger.clone(), audit.clone(), rx, config);
        (Rig { switch, tx, audit, ledger, store }, r)
    }

    pub fn set(&self, items: &[(&str, &[u16])]) {
        self.tx.send_replace(desired(self.switch.name(), items));
    }

    pub fn audit(&self) -> Vec<SwitchRecord> {
        self.audit.read(1).map(|e| e.unwrap().record).collect()
    }

    /// How many audit entries of `kind` (`applied`, `failed`, `intent`...) there are.
    pub fn count(&self, kind: &str) -> usize {
        self.audit().iter().filter(|r| r.entry.kind() == kind).count()
    }

    /// The VLANs the ledger says netfold owns on `port` (named in the switch's grammar).
    pub fn owned(&self, port: &str) -> std::collections::BTreeSet<VlanId> {
        let grammar = self.switch.grammar();
        let port = PortName::parse(grammar, port).expect("valid port name");
        self.ledger.load(grammar).unwrap().owned.get(&port).cloned().unwrap_or_default()
    }
}
