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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::{Deserialize, Serialize};

pub use facts::{FactRef, Facts};
pub use snapshot::SnapshotError;

use crate::config::Policy;
use crate::desired::{Desired, PortVlans, Reason, VnicRef};
use crate::event::{Envelope, Event, UnixMs};
use crate::fact::{Change, Fact, FactKey};
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
        let mut links: Links = HashMap::default();
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

    fn vnic_counts(&self, v: &crate::fact::VnicFact) -> bool {
        if v.powered_on {
            v.connected
        } else {
            self.count_powered_off
        }
    }
}

/// Interned strings (and values), each with a dense id.
#[derive(Clone, Debug)]
struct Interner<T> {
    ids: HashMap<T, u32>,
    values: Vec<T>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Self { ids: HashMap::default(), values: Vec::new() }
    }
}

impl<T: std::hash::Hash + Eq + Clone> Interner<T> {
    fn intern<Q>(&mut self, v: &Q) -> u32
    where
        T: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ToOwned<Owned = T> + ?Sized,
    {
        if let Some(&i) = self.ids.get(v) {
            return i;
        }
        let i = self.values.len() as u32;
        self.values.push(v.to_owned());
        self.ids.insert(v.to_owned(), i);
        i
    }

    fn get<Q>(&self, v: &Q) -> Option<u32>
    where
        T: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.ids.get(v).copied()
    }

    fn value(&self, i: u32) -> &T {
        &self.values[i as usize]
    }
}

/// The compact identity of a reason: its hypervisor and the fact that contributes it — a vNIC
/// (`a` = VM, `b` = NIC) or, with VM-less networks counting, a network (`a` = host, `b` =
/// network), as interned ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Rid {
    hv: u32,
    vnic: bool,
    a: u32,
    b: u32,
}

/// The projected state: hypervisors, their facts, and desired VLANs per port.
#[derive(Clone, Debug)]
pub struct State {
    rules: Rules,
    policy: Policy,
    seq: u64,
    hypervisors: BTreeMap<HypervisorId, Hypervisor>,
    hv_ids: Interner<HypervisorId>,
    names: Interner<String>,
    ports: Interner<SwitchPort>,
    /// (port, VLAN) → the reasons holding the VLAN there. Never holds an empty set.
    vlans: HashMap<(u32, VlanId), HashSet<Rid>>,
    /// [`Desired`] built from `vlans`, on first read after a change.
    desired: OnceLock<Arc<Desired>>,
    /// Bumped on every change to desired state (not part of the state's bytes).
    desired_version: u64,
    /// Reused buffer of the reasons a change affects.
    scratch: Vec<Rid>,
}

impl State {
    /// An empty state folding with `policy`.
    pub fn new(policy: &Policy) -> Self {
        Self {
            rules: Rules::new(policy),
            policy: policy.clone(),
            seq: 0,
            hypervisors: BTreeMap::new(),
            hv_ids: Interner::default(),
            names: Interner::default(),
            ports: Interner::default(),
            vlans: HashMap::default(),
            desired: OnceLock::new(),
            desired_version: 0,
            scratch: Vec::new(),
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
        let before = self.desired_version;
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
                let hv = self.hv_ids.intern(id);
                for change in changes {
                    self.apply_change(id, hv, change);
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
        if self.desired_version != before {
            self.desired = OnceLock::new();
        }
    }

    fn entry(&mut self, id: &HypervisorId, status: Status) -> &mut Hypervisor {
        if !self.hypervisors.contains_key(id) {
            self.hv_ids.intern(id);
            self.hypervisors.insert(id.clone(), Hypervisor::new(status));
        }
        // Present: inserted just above when missing.
        self.hypervisors.get_mut(id).expect("hypervisor entry exists")
    }

    /// The desired VLAN state (built on first read after a change, then cached).
    pub fn desired(&self) -> &Desired {
        self.desired.get_or_init(|| Arc::new(self.materialize()))
    }

    /// The desired VLAN state as a shared value (what the runtime publishes).
    pub fn desired_shared(&self) -> Arc<Desired> {
        self.desired.get_or_init(|| Arc::new(self.materialize())).clone()
    }

    /// Bumped on every change to desired state; the runtime publishes when it moves.
    pub fn desired_version(&self) -> u64 {
        self.desired_version
    }

    /// The desired VLANs (with reasons) of one switch's ports.
    pub fn desired_for(&self, switch: &str) -> BTreeMap<&SwitchPort, &PortVlans> {
        self.desired().ports.iter().filter(|(p, _)| p.switch == switch).collect()
    }

    /// Why `vlan` is desired on `port`: every reason that holds it there, in order (empty: it
    /// is not desired there).
    pub fn why(&self, port: &SwitchPort, vlan: VlanId) -> Vec<Reason> {
        let Some(p) = self.ports.get(port) else { return Vec::new() };
        let Some(rids) = self.vlans.get(&(p, vlan)) else { return Vec::new() };
        rids.iter().filter_map(|r| self.reason(r)).collect::<BTreeSet<_>>().into_iter().collect()
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

    /// Desired state recomputed naively from the facts, straight from the rule with no index
    /// (the reference the incremental maintenance must equal).
    pub fn recompute_desired(&self) -> Desired {
        let mut d = Desired::default();
        for (id, hv) in &self.hypervisors {
            let links = self.rules.links.get(id);
            for f in hv.facts.iter() {
                let (network, vnic) = match f {
                    FactRef::Vnic(v) if self.rules.vnic_counts(v) => match hv.facts.network(&v.host, &v.network) {
                        Some(n) => (n, Some(v)),
                        None => continue,
                    },
                    FactRef::Network(n) if self.rules.count_vmless_networks => (n, None),
                    _ => continue,
                };
                for nic in &network.uplinks {
                    let port = links
                        .and_then(|l| l.get(&network.host))
                        .and_then(|l| l.get(nic))
                        .or_else(|| hv.facts.uplink(&network.host, nic).and_then(|u| u.port.as_ref()));
                    let Some(port) = port else { continue };
                    for vlan in network.vlan.vlans() {
                        d.ports.entry(port.clone()).or_default().entry(vlan).or_default().insert(Reason {
                            hypervisor: id.clone(),
                            host: network.host.clone(),
                            network: network.network.clone(),
                            vnic: vnic.map(|v| VnicRef {
                                vm: v.vm.clone(),
                                vm_name: v.vm_name.clone(),
                                nic: v.nic.clone(),
                            }),
                        });
                    }
                }
            }
        }
        d
    }

    fn reason(&self, r: &Rid) -> Option<Reason> {
        let id = self.hv_ids.value(r.hv);
        let facts = &self.hypervisors.get(id)?.facts;
        let (a, b) = (self.names.value(r.a), self.names.value(r.b));
        if r.vnic {
            let v = facts.vnic(a, b)?;
            Some(Reason {
                hypervisor: id.clone(),
                host: v.host.clone(),
                network: v.network.clone(),
                vnic: Some(VnicRef { vm: v.vm.clone(), vm_name: v.vm_name.clone(), nic: v.nic.clone() }),
            })
        } else {
            Some(Reason { hypervisor: id.clone(), host: a.clone(), network: b.clone(), vnic: None })
        }
    }

    fn materialize(&self) -> Desired {
        let mut d = Desired::default();
        for (&(p, vlan), rids) in &self.vlans {
            let reasons: BTreeSet<Reason> = rids.iter().filter_map(|r| self.reason(r)).collect();
            if !reasons.is_empty() {
                d.ports.entry(self.ports.value(p).clone()).or_default().insert(vlan, reasons);
            }
        }
        d
    }

    fn apply_change(&mut self, id: &HypervisorId, hv_ix: u32, change: &Change) {
        let Some(hv) = self.hypervisors.get_mut(id) else { return };
        let mut affected = std::mem::take(&mut self.scratch);
        affected.clear();
        affected_by(&self.rules, &hv.facts, change, hv_ix, &mut self.names, &mut affected);
        let mut changed = false;
        let links = self.rules.links.get(id);
        for r in &affected {
            contributions(&self.rules, links, &hv.facts, &self.names, r, |port, vlan| {
                changed |= remove_reason(&mut self.vlans, &self.ports, port, vlan, r);
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
        for r in &affected {
            contributions(&self.rules, links, &hv.facts, &self.names, r, |port, vlan| {
                changed |= add_reason(&mut self.vlans, &mut self.ports, port, vlan, *r);
            });
        }
        self.scratch = affected;
        if changed {
            self.desired_version += 1;
        }
    }

    /// Every reason a hypervisor's facts give, for `f`.
    fn all_rids(&mut self, id: &HypervisorId) -> Vec<Rid> {
        let hv_ix = self.hv_ids.intern(id);
        let Some(hv) = self.hypervisors.get(id) else { return Vec::new() };
        let names = &mut self.names;
        hv.facts
            .iter()
            .filter_map(|f| match f {
                FactRef::Vnic(v) => {
                    Some(Rid { hv: hv_ix, vnic: true, a: names.intern(&v.vm), b: names.intern(&v.nic) })
                }
                FactRef::Network(n) => {
                    Some(Rid { hv: hv_ix, vnic: false, a: names.intern(&n.host), b: names.intern(&n.network) })
                }
                _ => None,
            })
            .collect()
    }

    /// Drops every fact of a hypervisor, and with them its reasons.
    fn forget(&mut self, id: &HypervisorId) {
        let rids = self.all_rids(id);
        let Some(hv) = self.hypervisors.get_mut(id) else { return };
        let links = self.rules.links.get(id);
        let mut changed = false;
        for r in &rids {
            contributions(&self.rules, links, &hv.facts, &self.names, r, |port, vlan| {
                changed |= remove_reason(&mut self.vlans, &self.ports, port, vlan, r);
            });
        }
        hv.facts = Facts::default();
        if changed {
            self.desired_version += 1;
        }
    }

    /// Rebuilds the desired-state index from the facts (after decoding a snapshot).
    fn rebuild_index(&mut self) {
        self.vlans.clear();
        let ids: Vec<HypervisorId> = self.hypervisors.keys().cloned().collect();
        for id in ids {
            let rids = self.all_rids(&id);
            let Some(hv) = self.hypervisors.get(&id) else { continue };
            let links = self.rules.links.get(&id);
            for r in &rids {
                contributions(&self.rules, links, &hv.facts, &self.names, r, |port, vlan| {
                    add_reason(&mut self.vlans, &mut self.ports, port, vlan, *r);
                });
            }
        }
        self.desired = OnceLock::new();
    }
}

/// Pushes onto `out` the reasons whose contributions may change when `change` is applied.
fn affected_by(
    rules: &Rules,
    facts: &Facts,
    change: &Change,
    hv: u32,
    names: &mut Interner<String>,
    out: &mut Vec<Rid>,
) {
    let network_and_vnics = |host: &str, network: &str, names: &mut Interner<String>, out: &mut Vec<Rid>| {
        if rules.count_vmless_networks {
            out.push(Rid { hv, vnic: false, a: names.intern(host), b: names.intern(network) });
        }
        for v in facts.vnics_on(host, network) {
            out.push(Rid { hv, vnic: true, a: names.intern(&v.vm), b: names.intern(&v.nic) });
        }
    };
    match change.key_ref() {
        KeyRef::Host => {}
        KeyRef::Vnic(vm, nic) => out.push(Rid { hv, vnic: true, a: names.intern(vm), b: names.intern(nic) }),
        KeyRef::Network(host, network) => network_and_vnics(host, network, names, out),
        KeyRef::Uplink(host, nic) => {
            for n in facts.networks_on(host) {
                if n.uplinks.iter().any(|u| u == nic) {
                    network_and_vnics(host, &n.network, names, out);
                }
            }
        }
    }
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
            Change::Upsert(Fact::Host(_)) | Change::Remove(FactKey::Host { .. }) => KeyRef::Host,
            Change::Upsert(Fact::Uplink(u)) => KeyRef::Uplink(&u.host, &u.nic),
            Change::Upsert(Fact::Network(n)) => KeyRef::Network(&n.host, &n.network),
            Change::Upsert(Fact::Vnic(v)) => KeyRef::Vnic(&v.vm, &v.nic),
            Change::Remove(FactKey::Uplink { host, nic }) => KeyRef::Uplink(host, nic),
            Change::Remove(FactKey::Network { host, network }) => KeyRef::Network(host, network),
            Change::Remove(FactKey::Vnic { vm, nic }) => KeyRef::Vnic(vm, nic),
        }
    }
}

/// Calls `f(port, vlan)` for everything reason `r` puts in desired state now.
fn contributions(
    rules: &Rules,
    links: Option<&HashMap<String, HashMap<String, SwitchPort>>>,
    facts: &Facts,
    names: &Interner<String>,
    r: &Rid,
    mut f: impl FnMut(&SwitchPort, VlanId),
) {
    let (a, b) = (names.value(r.a), names.value(r.b));
    let network = if r.vnic {
        let Some(v) = facts.vnic(a, b) else { return };
        if !rules.vnic_counts(v) {
            return;
        }
        facts.network(&v.host, &v.network)
    } else if rules.count_vmless_networks {
        facts.network(a, b)
    } else {
        None
    };
    let Some(network) = network else { return };
    if network.uplinks.is_empty() || network.vlan.vlans().next().is_none() {
        return;
    }
    let links = links.and_then(|h| h.get(&network.host));
    for nic in &network.uplinks {
        let port =
            links.and_then(|l| l.get(nic)).or_else(|| facts.uplink(&network.host, nic).and_then(|u| u.port.as_ref()));
        let Some(port) = port else { continue };
        for vlan in network.vlan.vlans() {
            f(port, vlan);
        }
    }
}

fn add_reason(
    vlans: &mut HashMap<(u32, VlanId), HashSet<Rid>>,
    ports: &mut Interner<SwitchPort>,
    port: &SwitchPort,
    vlan: VlanId,
    r: Rid,
) -> bool {
    let p = ports.intern(port);
    vlans.entry((p, vlan)).or_default().insert(r)
}

fn remove_reason(
    vlans: &mut HashMap<(u32, VlanId), HashSet<Rid>>,
    ports: &Interner<SwitchPort>,
    port: &SwitchPort,
    vlan: VlanId,
    r: &Rid,
) -> bool {
    let Some(p) = ports.get(port) else { return false };
    let Some(set) = vlans.get_mut(&(p, vlan)) else { return false };
    let removed = set.remove(r);
    if set.is_empty() {
        vlans.remove(&(p, vlan));
    }
    removed
}

#[cfg(test)]
mod tests;
