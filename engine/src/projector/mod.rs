//! The projector: a pure fold of the event log into what netfold knows (each hypervisor's
//! status and facts) and the desired VLAN state it implies.
//!
//! [`State::apply`] is synchronous and infallible and does no IO, reads no clock and logs
//! nothing: the same events give the same state, byte for byte, live or in replay. It is
//! incremental: a change touches only the desired-state contributions that depend on the fact
//! it changes (a vNIC; a network and the vNICs on it; an uplink's networks and their vNICs).
//!
//! The rule: a counting vNIC (powered on and connected; with [`Policy::count_powered_off`],
//! powered-off too) on a network with VLANs, on a host whose uplink for that network is cabled
//! to port `p` (a [`crate::config::StaticLink`] wins over the adapter's neighbour), puts those
//! VLANs on `p` with a [`Reason`] naming the vNIC. With [`Policy::count_vmless_networks`] every
//! network also does so itself (a reason with `vnic: None`).

mod facts;
mod snapshot;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

pub use facts::{FactRef, Facts};
pub use snapshot::SnapshotError;

use crate::config::Policy;
use crate::desired::{Desired, PortVlans, Reason, VnicRef};
use crate::event::{Envelope, Event, UnixMs};
use crate::fact::{Change, Fact, FactKey, NetworkFact, VnicFact};
use crate::ids::{HypervisorId, Kind, SwitchPort, VlanId};

/// Where a hypervisor's session stands, as the log tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Connected; facts are current.
    Live,
    /// Lost at `since` (unix ms); facts are kept until the grace period ends.
    Lost { since: UnixMs },
    /// The grace period ran out; the hypervisor has no facts.
    Expired,
}

/// A hypervisor's status and kind (`None` only if the log never said `Connected` for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HypervisorStatus {
    pub kind: Option<Kind>,
    pub status: Status,
}

/// What the projector holds about one hypervisor.
#[derive(Clone, Debug)]
pub(crate) struct Hypervisor {
    kind: Option<Kind>,
    endpoint: String,
    status: Status,
    facts: Facts,
}

impl Hypervisor {
    fn new(status: Status) -> Self {
        Self { kind: None, endpoint: String::new(), status, facts: Facts::default() }
    }
}

/// Static links by hypervisor → host → NIC.
type Links = HashMap<HypervisorId, HashMap<String, HashMap<String, SwitchPort>>>;

/// The fixed parts of the rule, built from the [`Policy`].
#[derive(Clone, Debug, Default)]
struct Rules {
    count_powered_off: bool,
    count_vmless_networks: bool,
    links: Links,
}

impl Rules {
    fn new(policy: &Policy) -> Self {
        let mut links: Links = HashMap::new();
        for l in &policy.static_links {
            links
                .entry(l.hypervisor.clone())
                .or_default()
                .entry(l.host.clone())
                .or_default()
                .insert(l.nic.clone(), l.port.clone());
        }
        Self { count_powered_off: policy.count_powered_off, count_vmless_networks: policy.count_vmless_networks, links }
    }

    fn vnic_counts(&self, v: &VnicFact) -> bool {
        if v.powered_on {
            v.connected
        } else {
            self.count_powered_off
        }
    }
}

/// A fact whose presence puts VLANs on ports.
#[derive(Clone, Debug)]
enum Contributor {
    Vnic { vm: String, nic: String },
    Network { host: String, network: String },
}

/// The projected state: hypervisors, their facts, and desired VLANs per port.
#[derive(Clone, Debug)]
pub struct State {
    rules: Rules,
    policy: Policy,
    seq: u64,
    hypervisors: BTreeMap<HypervisorId, Hypervisor>,
    desired: Desired,
    /// Bumped on every change to `desired` (not part of the state's bytes).
    desired_version: u64,
}

impl State {
    /// An empty state folding with `policy`.
    pub fn new(policy: &Policy) -> Self {
        Self {
            rules: Rules::new(policy),
            policy: policy.clone(),
            seq: 0,
            hypervisors: BTreeMap::new(),
            desired: Desired::default(),
            desired_version: 0,
        }
    }

    /// The policy this state folds with.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The sequence number of the last event applied (0: none).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Folds one event in.
    pub fn apply(&mut self, env: &Envelope) {
        self.seq = self.seq.max(env.seq);
        let id = &env.hypervisor;
        match &env.event {
            Event::Connected { kind, endpoint } => {
                let hv = self.entry(id, Status::Live);
                hv.kind = Some(*kind);
                hv.endpoint.clone_from(endpoint);
                hv.status = Status::Live;
            }
            Event::Learnt { changes } => {
                self.entry(id, Status::Live);
                for change in changes {
                    self.apply_change(id, change);
                }
            }
            Event::Lost { .. } => {
                let hv = self.entry(id, Status::Lost { since: env.at });
                hv.status = Status::Lost { since: env.at };
            }
            Event::Reestablished { .. } => {
                self.entry(id, Status::Live).status = Status::Live;
            }
            Event::Expired => {
                self.entry(id, Status::Expired).status = Status::Expired;
                self.forget(id);
            }
        }
    }

    fn entry(&mut self, id: &HypervisorId, status: Status) -> &mut Hypervisor {
        if !self.hypervisors.contains_key(id) {
            self.hypervisors.insert(id.clone(), Hypervisor::new(status));
        }
        // Present: inserted just above when missing.
        self.hypervisors.get_mut(id).expect("hypervisor entry exists")
    }

    /// The desired VLAN state.
    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    /// Bumped on every change to [`State::desired`]; the runtime publishes when it moves.
    pub fn desired_version(&self) -> u64 {
        self.desired_version
    }

    /// The desired VLANs (with reasons) of one switch's ports.
    pub fn desired_for(&self, switch: &str) -> BTreeMap<&SwitchPort, &PortVlans> {
        self.desired.ports.iter().filter(|(p, _)| p.switch == switch).collect()
    }

    /// Why `vlan` is desired on `port`: every reason that holds it there (empty: it is not).
    pub fn why(&self, port: &SwitchPort, vlan: VlanId) -> Vec<Reason> {
        self.desired.why(port, vlan).into_iter().cloned().collect()
    }

    /// The facts of a hypervisor (`None` if the log never mentioned it).
    pub fn facts_of(&self, id: &HypervisorId) -> Option<&Facts> {
        self.hypervisors.get(id).map(|h| &h.facts)
    }

    /// A hypervisor's status and kind (`None` if the log never mentioned it).
    pub fn status(&self, id: &HypervisorId) -> Option<HypervisorStatus> {
        self.hypervisors.get(id).map(|h| HypervisorStatus { kind: h.kind, status: h.status })
    }

    /// The endpoint of the hypervisor's last `Connected`.
    pub fn endpoint(&self, id: &HypervisorId) -> Option<&str> {
        self.hypervisors.get(id).map(|h| h.endpoint.as_str())
    }

    /// Every hypervisor the log mentions, with its status.
    pub fn hypervisors(&self) -> impl Iterator<Item = (&HypervisorId, HypervisorStatus)> {
        self.hypervisors.iter().map(|(id, h)| (id, HypervisorStatus { kind: h.kind, status: h.status }))
    }

    /// Desired state recomputed from scratch from the facts (the reference the incremental
    /// maintenance must equal; also used after decoding a snapshot).
    pub fn recompute_desired(&self) -> Desired {
        let mut d = Desired::default();
        for (id, hv) in &self.hypervisors {
            for f in hv.facts.iter() {
                let c = match f {
                    FactRef::Vnic(v) => Contributor::Vnic { vm: v.vm.clone(), nic: v.nic.clone() },
                    FactRef::Network(n) => Contributor::Network { host: n.host.clone(), network: n.network.clone() },
                    _ => continue,
                };
                contributions(&self.rules, id, &hv.facts, &c, |port, vlan, reason| {
                    d.ports.entry(port.clone()).or_default().entry(vlan).or_default().insert(reason);
                });
            }
        }
        d
    }

    fn apply_change(&mut self, id: &HypervisorId, change: &Change) {
        let Some(hv) = self.hypervisors.get_mut(id) else { return };
        let affected = affected_by(&self.rules, &hv.facts, change);
        let mut changed = false;
        for c in &affected {
            contributions(&self.rules, id, &hv.facts, c, |port, vlan, reason| {
                changed |= remove_reason(&mut self.desired, port, vlan, &reason);
            });
        }
        match change {
            Change::Upsert(f) => {
                hv.facts.upsert(f.clone());
            }
            Change::Remove(k) => {
                hv.facts.remove(k);
            }
        }
        for c in &affected {
            contributions(&self.rules, id, &hv.facts, c, |port, vlan, reason| {
                changed |= add_reason(&mut self.desired, port, vlan, reason);
            });
        }
        if changed {
            self.desired_version += 1;
        }
    }

    /// Drops every fact of a hypervisor, and with them its reasons.
    fn forget(&mut self, id: &HypervisorId) {
        let Some(hv) = self.hypervisors.get_mut(id) else { return };
        let mut changed = false;
        let all: Vec<Contributor> = hv
            .facts
            .iter()
            .filter_map(|f| match f {
                FactRef::Vnic(v) => Some(Contributor::Vnic { vm: v.vm.clone(), nic: v.nic.clone() }),
                FactRef::Network(n) => Some(Contributor::Network { host: n.host.clone(), network: n.network.clone() }),
                _ => None,
            })
            .collect();
        for c in &all {
            contributions(&self.rules, id, &hv.facts, c, |port, vlan, reason| {
                changed |= remove_reason(&mut self.desired, port, vlan, &reason);
            });
        }
        hv.facts = Facts::default();
        if changed {
            self.desired_version += 1;
        }
    }
}

/// The contributors whose contributions may change when `change` is applied.
fn affected_by(rules: &Rules, facts: &Facts, change: &Change) -> Vec<Contributor> {
    let mut out = Vec::new();
    let network_and_vnics = |host: &str, network: &str, out: &mut Vec<Contributor>| {
        if rules.count_vmless_networks {
            out.push(Contributor::Network { host: host.to_owned(), network: network.to_owned() });
        }
        for v in facts.vnics_on(host, network) {
            out.push(Contributor::Vnic { vm: v.vm.clone(), nic: v.nic.clone() });
        }
    };
    match change.key_ref() {
        KeyRef::Host => {}
        KeyRef::Vnic(vm, nic) => out.push(Contributor::Vnic { vm: vm.to_owned(), nic: nic.to_owned() }),
        KeyRef::Network(host, network) => network_and_vnics(host, network, &mut out),
        KeyRef::Uplink(host, nic) => {
            for n in facts.networks_on(host) {
                if n.uplinks.iter().any(|u| u == nic) {
                    network_and_vnics(host, &n.network, &mut out);
                }
            }
        }
    }
    out
}

/// A borrowed fact key (no allocation on the hot path).
enum KeyRef<'a> {
    Host,
    Uplink(&'a str, &'a str),
    Network(&'a str, &'a str),
    Vnic(&'a str, &'a str),
}

impl Change {
    fn key_ref(&self) -> KeyRef<'_> {
        match self {
            Change::Upsert(Fact::Host(_)) => KeyRef::Host,
            Change::Upsert(Fact::Uplink(u)) => KeyRef::Uplink(&u.host, &u.nic),
            Change::Upsert(Fact::Network(n)) => KeyRef::Network(&n.host, &n.network),
            Change::Upsert(Fact::Vnic(v)) => KeyRef::Vnic(&v.vm, &v.nic),
            Change::Remove(FactKey::Host { .. }) => KeyRef::Host,
            Change::Remove(FactKey::Uplink { host, nic }) => KeyRef::Uplink(host, nic),
            Change::Remove(FactKey::Network { host, network }) => KeyRef::Network(host, network),
            Change::Remove(FactKey::Vnic { vm, nic }) => KeyRef::Vnic(vm, nic),
        }
    }
}

/// Calls `f(port, vlan, reason)` for everything contributor `c` puts in desired state now.
fn contributions(
    rules: &Rules,
    id: &HypervisorId,
    facts: &Facts,
    c: &Contributor,
    mut f: impl FnMut(&SwitchPort, VlanId, Reason),
) {
    let (network, vnic): (&NetworkFact, Option<&VnicFact>) = match c {
        Contributor::Vnic { vm, nic } => {
            let Some(v) = facts.vnic(vm, nic) else { return };
            if !rules.vnic_counts(v) {
                return;
            }
            let Some(n) = facts.network(&v.host, &v.network) else { return };
            (n, Some(v))
        }
        Contributor::Network { host, network } => {
            if !rules.count_vmless_networks {
                return;
            }
            let Some(n) = facts.network(host, network) else { return };
            (n, None)
        }
    };
    if network.vlan.vlans().next().is_none() || network.uplinks.is_empty() {
        return;
    }
    let links = rules.links.get(id).and_then(|h| h.get(&network.host));
    for nic in &network.uplinks {
        let port =
            links.and_then(|l| l.get(nic)).or_else(|| facts.uplink(&network.host, nic).and_then(|u| u.port.as_ref()));
        let Some(port) = port else { continue };
        for vlan in network.vlan.vlans() {
            let reason = Reason {
                hypervisor: id.clone(),
                host: network.host.clone(),
                network: network.network.clone(),
                vnic: vnic.map(|v| VnicRef { vm: v.vm.clone(), vm_name: v.vm_name.clone(), nic: v.nic.clone() }),
            };
            f(port, vlan, reason);
        }
    }
}

fn add_reason(d: &mut Desired, port: &SwitchPort, vlan: VlanId, reason: Reason) -> bool {
    let vlans = match d.ports.get_mut(port) {
        Some(v) => v,
        None => d.ports.entry(port.clone()).or_default(),
    };
    vlans.entry(vlan).or_default().insert(reason)
}

fn remove_reason(d: &mut Desired, port: &SwitchPort, vlan: VlanId, reason: &Reason) -> bool {
    let Some(vlans) = d.ports.get_mut(port) else { return false };
    let Some(reasons) = vlans.get_mut(&vlan) else { return false };
    let removed = reasons.remove(reason);
    if reasons.is_empty() {
        vlans.remove(&vlan);
        if vlans.is_empty() {
            d.ports.remove(port);
        }
    }
    removed
}

#[cfg(test)]
mod tests;
