//! The projector: a pure fold of the event log into what netfold knows (each hypervisor's
//! status and facts) and the desired VLAN state it implies.
//!
//! [`State::apply`] is synchronous and infallible and does no IO, reads no clock and logs
//! nothing: the same events give the same state, byte for byte, live or in replay. It is
//! incremental: a change touches only the desired-state entries that depend on the fact it
//! changes. The index maps each (port, VLAN) to the networks that have reasons there; the
//! reasons themselves (the network with VM-less networks counting, each counting vNIC on it)
//! are read from the facts when desired state is built. So a vNIC change updates its record
//! and its network's count of counting vNICs, and touches the index only when that network
//! starts or stops having reasons; a network or uplink change re-indexes the networks it
//! concerns.
//!
//! The rule: a counting vNIC (powered on and connected; with [`Policy::count_powered_off`],
//! powered-off too) on a network with VLANs, on a host whose uplink for that network is cabled
//! to port `p` (a [`crate::config::StaticLink`] wins over the adapter's neighbour), puts those
//! VLANs on `p` with a [`Reason`] naming the vNIC. With [`Policy::count_vmless_networks`] every
//! network also does so itself (a reason with `vnic: None`).
//!
//! Provenance is part of the state, so a snapshot answers `why` at its point without folding
//! from the start: each fact carries the [`Stamp`] of the event that set its current value, and
//! each desired (port, VLAN) the stamp of the event since which it has been desired without
//! interruption (an event that drops and restores it within itself does not interrupt it).
//!
//! Which port an uplink is cabled to follows [`crate::discovery::resolve`]: a static link, the
//! uplink's own reported neighbour, then what the switches saw ([`Event::SwitchSaw`], folded
//! into [`Seen`]), bond members lifted to their bond. A switch's view changing re-ties every
//! uplink; an uplink or host change re-ties that uplink or that host's uplinks.

mod facts;
mod intern;
mod snapshot;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use compact_str::CompactString;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::{Deserialize, Serialize};

pub use facts::{FactRef, Facts};
pub use snapshot::{SnapshotError, FORMAT as SNAPSHOT_FORMAT};

use facts::{Pair, Standing, VnicMove};
use intern::Interner;

use crate::config::Policy;
use crate::desired::{Desired, PortVlans, Reason, VnicRef};
use crate::discovery::{self, Disagreement, Seen, SwitchView};
use crate::event::{Envelope, Event, UnixMs};
use crate::fact::{Change, Fact, FactKey, NeighbourSource};
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

/// The event (sequence number and time) that set something: a fact's current value, or the
/// start of a desired VLAN's presence on a port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stamp {
    pub seq: u64,
    pub at: UnixMs,
}

/// A mass removal held back by the guard ([`Event::RemovalHeld`]), until released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The `RemovalHeld` event that holds it (the latest, when it was held again).
    pub seq: u64,
    /// When it was first held (unix ms).
    pub since: UnixMs,
    pub would_remove: u64,
}

/// A hypervisor's status and kind (`None` only if the log never said `Connected` for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HypervisorStatus {
    pub kind: Option<Kind>,
    pub status: Status,
    /// A removal the guard holds back.
    pub held: Option<Held>,
}

/// What the projector holds about one hypervisor.
#[derive(Clone, Debug)]
pub(crate) struct Hypervisor {
    kind: Option<Kind>,
    endpoint: String,
    status: Status,
    held: Option<Held>,
    facts: Facts,
}

impl Hypervisor {
    fn new(status: Status, facts: Facts) -> Self {
        Self { kind: None, endpoint: String::new(), status, held: None, facts }
    }

    fn status(&self) -> HypervisorStatus {
        HypervisorStatus { kind: self.kind, status: self.status, held: self.held }
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

    /// No facts, with the static links configured for hypervisor `id`.
    fn empty_facts(&self, id: &HypervisorId, ports: &mut Interner<SwitchPort>) -> Facts {
        let links = self.links.get(id).into_iter().flat_map(|hosts| {
            hosts
                .iter()
                .flat_map(|(host, nics)| nics.iter().map(move |(nic, port)| (host.as_str(), nic.as_str(), port)))
        });
        Facts::with_links(links, ports, self.count_powered_off)
    }

    fn vnic_counts(&self, v: &crate::fact::VnicFact) -> bool {
        if v.powered_on {
            v.connected
        } else {
            self.count_powered_off
        }
    }
}

/// A network that puts VLANs in desired state: its hypervisor and its (host, network) ids as
/// interned by that hypervisor's [`Facts`]. Its reasons are read from the facts when desired
/// state is built: the network itself (with VM-less networks counting) and each counting vNIC
/// attached to it. So a vNIC's change touches the index only when its network starts or stops
/// having reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Nid {
    hv: u32,
    host: u32,
    network: u32,
}

/// The desired-state index: (port id, VLAN) → the networks with reasons holding the VLAN
/// there. Never holds an empty set.
type Index = HashMap<(u32, VlanId), HashSet<Nid>>;

/// Keys of desired-state entries: (port id, VLAN).
type Keys = HashSet<(u32, VlanId)>;

/// What a read of desired state needs to bring the last built [`Desired`] up to date.
#[derive(Clone, Debug, Default)]
struct Pending {
    /// The last built value, once a change made it stale.
    base: Option<Arc<Desired>>,
    /// The entries changed since `base` was built.
    dirty: Keys,
}

/// [`Desired`] as last built, and what changed since: a read after a change rebuilds only the
/// (port, VLAN) entries that changed — in place when nobody else holds the value, else on a
/// clone of it, which costs O(1) ([`Desired`] is a persistent map) — never the whole state.
#[derive(Debug, Default)]
struct DesiredCache {
    built: OnceLock<Arc<Desired>>,
    pending: Mutex<Pending>,
}

impl Clone for DesiredCache {
    fn clone(&self) -> Self {
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner).clone();
        Self { built: self.built.clone(), pending: Mutex::new(pending) }
    }
}

impl DesiredCache {
    /// Records that the reasons of (port, VLAN) changed.
    fn mark(&mut self, key: (u32, VlanId)) {
        let pending = self.pending.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(d) = self.built.take() {
            pending.base = Some(d);
        }
        if pending.base.is_some() {
            pending.dirty.insert(key);
        }
    }

    /// Whether a read was made since the last reset, so changes must be marked.
    fn tracking(&mut self) -> bool {
        self.built.get().is_some() || self.pending.get_mut().unwrap_or_else(PoisonError::into_inner).base.is_some()
    }

    /// Forgets everything built (the index was rebuilt).
    fn reset(&mut self) {
        self.built = OnceLock::new();
        *self.pending.get_mut().unwrap_or_else(PoisonError::into_inner) = Pending::default();
    }
}

/// The projected state: hypervisors, their facts, and desired VLANs per port.
#[derive(Clone, Debug)]
pub struct State {
    rules: Rules,
    policy: Policy,
    seq: u64,
    /// The time of the event at `seq`.
    at: UnixMs,
    /// Every hypervisor the log mentions, by its id in `hv_ids` (each interned id has one).
    hypervisors: Vec<Hypervisor>,
    hv_ids: Interner<HypervisorId>,
    /// The hypervisors' ids in name order (queries and the stored form walk them so).
    order: BTreeMap<HypervisorId, u32>,
    ports: Interner<SwitchPort>,
    vlans: Index,
    desired: DesiredCache,
    /// Bumped on every change to desired state (not part of the state's bytes).
    desired_version: u64,
    /// Reused buffer of the networks a change affects.
    scratch: Vec<Pair>,
    /// Each desired (port, VLAN): the event since which it has been desired.
    since: HashMap<(u32, VlanId), Stamp>,
    /// The index entries created or removed by the event being applied.
    touched: Vec<(u32, VlanId)>,
    /// What each switch saw last ([`Event::SwitchSaw`]), by switch name.
    switches: BTreeMap<String, SwitchView>,
    /// `switches`, indexed for tying uplinks.
    seen: Seen,
    /// The `SwitchSaw` event each switch's view comes from.
    switch_seen: BTreeMap<String, Stamp>,
}

/// How one uplink is tied, and what every source says about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkTie {
    pub host: CompactString,
    pub nic: CompactString,
    pub mac: Option<CompactString>,
    /// The port it leads to and the source that decided (`None`: no source ties it).
    pub port: Option<SwitchPort>,
    pub source: Option<NeighbourSource>,
    /// Every source's port, in precedence order.
    pub opinions: Vec<(NeighbourSource, SwitchPort)>,
    /// Whether the sources name different ports.
    pub disagree: bool,
}

impl State {
    /// An empty state folding with `policy`.
    pub fn new(policy: &Policy) -> Self {
        Self {
            rules: Rules::new(policy),
            policy: policy.clone(),
            seq: 0,
            at: 0,
            hypervisors: Vec::new(),
            hv_ids: Interner::default(),
            order: BTreeMap::new(),
            ports: Interner::default(),
            vlans: HashMap::default(),
            desired: DesiredCache::default(),
            desired_version: 0,
            scratch: Vec::new(),
            since: HashMap::default(),
            touched: Vec::new(),
            switches: BTreeMap::new(),
            seen: Seen::default(),
            switch_seen: BTreeMap::new(),
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

    /// The last event applied (seq 0: none).
    pub fn last_stamp(&self) -> Stamp {
        Stamp { seq: self.seq, at: self.at }
    }

    /// Folds one event in.
    pub fn apply(&mut self, env: &Envelope) {
        if env.seq >= self.seq {
            (self.seq, self.at) = (env.seq, env.at);
        }
        let stamp = Stamp { seq: env.seq, at: env.at };
        self.fold(env, stamp);
        self.settle_since(stamp);
    }

    /// Starts or ends the presence of the index entries the event created or removed.
    fn settle_since(&mut self, stamp: Stamp) {
        for key in self.touched.drain(..) {
            if self.vlans.contains_key(&key) {
                self.since.entry(key).or_insert(stamp);
            } else {
                self.since.remove(&key);
            }
        }
    }

    fn fold(&mut self, env: &Envelope, stamp: Stamp) {
        let id = &env.hypervisor;
        match &env.event {
            Event::Connected { kind, endpoint } => {
                let (_, hv) = self.entry(id, Status::Live);
                hv.kind = Some(*kind);
                hv.endpoint.clone_from(endpoint);
                hv.status = Status::Live;
            }
            Event::Learnt { changes } => {
                let (hv, _) = self.entry(id, Status::Live);
                for change in changes {
                    self.apply_change(hv, change, stamp);
                }
            }
            Event::Lost { since, .. } => {
                let (_, hv) = self.entry(id, Status::Lost { since: *since });
                hv.status = Status::Lost { since: *since };
            }
            Event::Reestablished { .. } => {
                self.entry(id, Status::Live).1.status = Status::Live;
            }
            Event::Expired => {
                let (hv, entry) = self.entry(id, Status::Expired);
                entry.status = Status::Expired;
                entry.held = None;
                self.forget(id, hv);
            }
            Event::RemovalHeld { would_remove, .. } => {
                let (_, hv) = self.entry(id, Status::Live);
                let since = hv.held.map_or(env.at, |h| h.since);
                hv.held = Some(Held { seq: env.seq, since, would_remove: *would_remove });
            }
            Event::RemovalReleased { .. } => {
                self.entry(id, Status::Live).1.held = None;
            }
            Event::SwitchSaw { switch, view } => {
                self.switches.insert(switch.clone(), view.clone());
                self.switch_seen.insert(switch.clone(), stamp);
                self.seen = Seen::new(&self.switches);
                for hv in 0..self.hypervisors.len() {
                    let hv = u32::try_from(hv).unwrap_or(u32::MAX);
                    self.retie(hv, None);
                }
            }
            // Records for the audit trail: about the log itself, what was not learnt, or
            // sources that disagree.
            Event::LossAccepted { .. } | Event::Refused { .. } | Event::TiesDisagreed { .. } => {}
        }
    }

    /// The hypervisor's id and entry, made with `status` and no facts when new.
    fn entry(&mut self, id: &HypervisorId, status: Status) -> (u32, &mut Hypervisor) {
        let ix = match self.hv_ids.get(id) {
            Some(ix) => ix,
            None => self.add_hypervisor(id, Hypervisor::new(status, Facts::default())),
        };
        // Every interned id has its entry (`add_hypervisor` keeps them in step).
        (ix, &mut self.hypervisors[ix as usize])
    }

    /// Interns `id` and stores `hv` as its entry, with no facts but the static links.
    fn add_hypervisor(&mut self, id: &HypervisorId, mut hv: Hypervisor) -> u32 {
        let ix = self.hv_ids.intern(id);
        hv.facts = self.rules.empty_facts(id, &mut self.ports);
        self.hypervisors.push(hv);
        self.order.insert(id.clone(), ix);
        ix
    }

    fn hypervisor(&self, id: &HypervisorId) -> Option<&Hypervisor> {
        self.hypervisors.get(self.hv_ids.get(id)? as usize)
    }

    /// Every hypervisor in name order, with its id.
    fn sorted_hypervisors(&self) -> impl Iterator<Item = (&HypervisorId, u32, &Hypervisor)> {
        self.order.iter().filter_map(|(id, &ix)| Some((id, ix, self.hypervisors.get(ix as usize)?)))
    }

    /// The desired VLAN state (brought up to date on the first read after a change, touching
    /// only the entries that changed, then cached).
    pub fn desired(&self) -> &Desired {
        self.desired.built.get_or_init(|| self.build_desired())
    }

    /// The desired VLAN state as a shared value (what the runtime publishes).
    pub fn desired_shared(&self) -> Arc<Desired> {
        self.desired.built.get_or_init(|| self.build_desired()).clone()
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
        self.reasons(p, vlan).into_iter().collect()
    }

    /// The facts of a hypervisor (`None` if the log never mentioned it).
    /// The `SwitchSaw` event the switch's current view comes from (`None`: it has reported none).
    pub fn switch_seen(&self, switch: &str) -> Option<Stamp> {
        self.switch_seen.get(switch).copied()
    }

    /// Since when `vlan` has been desired on `port` without interruption (`None`: not desired).
    pub fn desired_since(&self, port: &SwitchPort, vlan: VlanId) -> Option<Stamp> {
        self.since.get(&(self.ports.get(port)?, vlan)).copied()
    }

    pub fn facts_of(&self, id: &HypervisorId) -> Option<&Facts> {
        self.hypervisor(id).map(|h| &h.facts)
    }

    /// What switch `switch` saw last (`None`: no `SwitchSaw` for it yet).
    pub fn switch_view(&self, switch: &str) -> Option<&SwitchView> {
        self.switches.get(switch)
    }

    /// The switches that reported what they saw, in name order.
    pub fn switch_views(&self) -> impl Iterator<Item = (&String, &SwitchView)> {
        self.switches.iter()
    }

    /// The MACs of every hypervisor's uplinks, normalized (what a switch's view keeps).
    pub fn pnic_macs(&self) -> BTreeSet<String> {
        self.hypervisors
            .iter()
            .flat_map(|h| h.facts.uplinks())
            .filter_map(|u| u.mac.as_deref().and_then(crate::topology::normalize_mac))
            .collect()
    }

    /// How each uplink of hypervisor `id` is tied, in (host, NIC) order.
    pub fn ties_of(&self, id: &HypervisorId) -> Vec<UplinkTie> {
        let Some(hv) = self.hypervisor(id) else { return Vec::new() };
        let links = self.rules.links.get(id);
        let mut out: Vec<UplinkTie> = hv
            .facts
            .uplinks()
            .map(|u| {
                let link = links.and_then(|l| l.get(u.host.as_str())).and_then(|l| l.get(u.nic.as_str()));
                let name = hv.facts.host(&u.host).map_or("", |h| h.name.as_str());
                let tie = discovery::resolve(&self.seen, link, Some(u), name);
                let opinions = discovery::opinions(&self.seen, link, u, name);
                UplinkTie {
                    host: u.host.clone(),
                    nic: u.nic.clone(),
                    mac: u.mac.clone(),
                    disagree: discovery::disagree(&opinions),
                    port: tie.as_ref().map(|t| t.0.clone()),
                    source: tie.map(|t| t.1),
                    opinions,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.host, &a.nic).cmp(&(&b.host, &b.nic)));
        out
    }

    /// The uplinks of hypervisor `id` whose sources disagree.
    pub fn disagreements_of(&self, id: &HypervisorId) -> Vec<Disagreement> {
        self.ties_of(id)
            .into_iter()
            .filter(|t| t.disagree)
            .map(|t| Disagreement { host: t.host, nic: t.nic, opinions: t.opinions })
            .collect()
    }

    /// A hypervisor's status and kind (`None` if the log never mentioned it).
    pub fn status(&self, id: &HypervisorId) -> Option<HypervisorStatus> {
        self.hypervisor(id).map(Hypervisor::status)
    }

    /// The endpoint of the hypervisor's last `Connected`.
    pub fn endpoint(&self, id: &HypervisorId) -> Option<&str> {
        self.hypervisor(id).map(|h| h.endpoint.as_str())
    }

    /// Every hypervisor the log mentions, with its status.
    pub fn hypervisors(&self) -> impl Iterator<Item = (&HypervisorId, HypervisorStatus)> {
        self.sorted_hypervisors().map(|(id, _, h)| (id, h.status()))
    }

    /// Desired state recomputed naively from the facts, straight from the rule with no index
    /// (the reference the incremental maintenance must equal).
    pub fn recompute_desired(&self) -> Desired {
        let mut d = Desired::default();
        for (id, _, hv) in self.sorted_hypervisors() {
            let links = self.rules.links.get(id);
            for f in hv.facts.iter() {
                let (network, vnic) = match &f {
                    FactRef::Vnic(v) if self.rules.vnic_counts(v) => match hv.facts.network(&v.host, &v.network) {
                        Some(n) => (n, Some(v)),
                        None => continue,
                    },
                    FactRef::Network(n) if self.rules.count_vmless_networks => (*n, None),
                    _ => continue,
                };
                for nic in &network.uplinks {
                    let link = links.and_then(|l| l.get(network.host.as_str())).and_then(|l| l.get(nic.as_str()));
                    let name = hv.facts.host(&network.host).map_or("", |h| h.name.as_str());
                    let uplink = hv.facts.uplink(&network.host, nic);
                    let Some((port, _)) = discovery::resolve(&self.seen, link, uplink, name) else { continue };
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

    /// Adds to `out` the reasons network `n` gives: the network itself (with VM-less networks
    /// counting) and each counting vNIC attached to it.
    fn reasons_of(&self, n: &Nid, out: &mut BTreeSet<Reason>) {
        let Some(hv) = self.hypervisors.get(n.hv as usize) else { return };
        let id = self.hv_ids.value(n.hv);
        let facts = &hv.facts;
        if self.rules.count_vmless_networks {
            out.insert(Reason {
                hypervisor: id.clone(),
                host: facts.name(n.host).into(),
                network: facts.name(n.network).into(),
                vnic: None,
            });
        }
        let Some(attached) = facts.attached((n.host, n.network)) else { return };
        for k in &attached.vnics {
            let Some(v) = facts.vnic_by_key(k) else { continue };
            if facts.stored_counts(v) {
                out.insert(Reason {
                    hypervisor: id.clone(),
                    host: facts.name(v.host).into(),
                    network: facts.name(v.network).into(),
                    vnic: Some(VnicRef { vm: k.vm.clone(), vm_name: v.vm_name.clone(), nic: k.nic.clone() }),
                });
            }
        }
    }

    /// The reasons holding `vlan` on port `p` (empty: none).
    fn reasons(&self, p: u32, vlan: VlanId) -> BTreeSet<Reason> {
        let mut out = BTreeSet::new();
        for n in self.vlans.get(&(p, vlan)).into_iter().flatten() {
            self.reasons_of(n, &mut out);
        }
        out
    }

    /// The up-to-date [`Desired`]: the stale one with its changed entries rebuilt, or (the
    /// first time) everything built from the index.
    fn build_desired(&self) -> Arc<Desired> {
        let mut pending = self.desired.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(mut base) = pending.base.take() else {
            *pending = Pending::default();
            return Arc::new(self.materialize());
        };
        let dirty = std::mem::take(&mut pending.dirty);
        self.refresh(&mut base, &dirty);
        base
    }

    /// Rebuilds the `keys` entries of `d` from the index (cloning `d` first if it is shared, so
    /// a value someone holds never changes; the clone shares all it does not change).
    fn refresh(&self, d: &mut Arc<Desired>, keys: &Keys) {
        let d = Arc::make_mut(d);
        for &(p, vlan) in keys {
            let port = self.ports.value(p);
            let reasons = self.reasons(p, vlan);
            if reasons.is_empty() {
                if let Some(vlans) = d.ports.get_mut(port) {
                    vlans.remove(&vlan);
                    if vlans.is_empty() {
                        d.ports.remove(port);
                    }
                }
            } else {
                d.ports.entry(port.clone()).or_default().insert(vlan, reasons);
            }
        }
    }

    fn materialize(&self) -> Desired {
        let mut d = Desired::default();
        for &(p, vlan) in self.vlans.keys() {
            let reasons = self.reasons(p, vlan);
            if !reasons.is_empty() {
                d.ports.entry(self.ports.value(p).clone()).or_default().insert(vlan, reasons);
            }
        }
        d
    }

    fn apply_change(&mut self, hv_ix: u32, change: &Change, stamp: Stamp) {
        let Some(hv) = self.hypervisors.get_mut(hv_ix as usize) else { return };
        let facts = &mut hv.facts;
        let rules = &self.rules;
        // A vNIC change (the common one) moves one reason: the index changes only where its
        // network starts or stops having reasons; elsewhere the entries are marked.
        // The vNIC's move: where it was and goes (and whether it counts there), with the
        // standing of those networks before the change; the change is made here, in the same
        // lookup that finds the stored vNIC.
        let vnic = match change {
            Change::Upsert(Fact::Vnic(v)) => {
                let Some(m) = facts.upsert_vnic_changed(v, stamp) else { return };
                Some(m)
            }
            Change::Remove(FactKey::Vnic { vm, nic }) => {
                let Some(old) = facts.vnic_at(vm, nic) else { return };
                let before = [Some(facts.network_standing(old.0)), None];
                facts.remove(&change.key());
                Some(VnicMove { old: Some(old), new: None, before })
            }
            Change::Upsert(f) if unchanged(facts, f) => return,
            _ => None,
        };
        let (vlans, desired, touched) = (&mut self.vlans, &mut self.desired, &mut self.touched);
        let mut changed = false;
        if let Some(VnicMove { old, new, before }) = vnic {
            let nets = [old, new];
            for (i, (n, before)) in nets.iter().zip(before).enumerate() {
                let (Some((n, _)), Some(Standing { exists, reaches, counting: count })) = (*n, before) else {
                    continue;
                };
                if i == 1 && old.is_some_and(|o| o.0 == n) {
                    continue;
                }
                // The count after the change, from the one before: the vNIC left and/or joined.
                let left = u32::from(old.is_some_and(|(at, counted)| at == n && counted));
                let joined = u32::from(new.is_some_and(|(at, counts)| at == n && counts));
                let after = count.saturating_sub(left) + joined;
                let vmless = rules.count_vmless_networks;
                let nid = Nid { hv: hv_ix, host: n.0, network: n.1 };
                match (exists && (vmless || count > 0), exists && (vmless || after > 0)) {
                    (false, true) => {
                        entries(facts, n, |p, vlan| changed |= add_reason(vlans, desired, touched, p, vlan, nid))
                    }
                    (true, false) => {
                        entries(facts, n, |p, vlan| changed |= remove_reason(vlans, desired, touched, p, vlan, &nid))
                    }
                    (true, true) if left + joined > 0 => {
                        if desired.tracking() {
                            entries(facts, n, |p, vlan| {
                                desired.mark((p, vlan));
                                changed = true;
                            });
                        } else {
                            changed |= reaches;
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let mut affected = std::mem::take(&mut self.scratch);
            affected.clear();
            affected_by(facts, change, &mut affected);
            for &n in &affected {
                if contributes(rules, facts, n) {
                    let nid = Nid { hv: hv_ix, host: n.0, network: n.1 };
                    entries(facts, n, |p, vlan| changed |= remove_reason(vlans, desired, touched, p, vlan, &nid));
                }
            }
            match change {
                Change::Upsert(f) => facts.upsert(Cow::Borrowed(f), &mut self.ports, stamp),
                Change::Remove(k) => facts.remove(k),
            }
            if let (Change::Upsert(Fact::Uplink(u)), false) = (change, self.seen.is_empty()) {
                if let Some(k) = facts.id(&u.host).zip(facts.id(&u.nic)) {
                    let tied = tie_for(&self.seen, facts, &mut self.ports, k);
                    facts.set_tied(k, tied);
                }
            }
            for &n in &affected {
                if contributes(rules, facts, n) {
                    let nid = Nid { hv: hv_ix, host: n.0, network: n.1 };
                    entries(facts, n, |p, vlan| changed |= add_reason(vlans, desired, touched, p, vlan, nid));
                }
            }
            self.scratch = affected;
        }
        if changed {
            self.desired_version += 1;
        }
        // A renamed or removed host may match (or stop matching) switch LLDP neighbours by name.
        let host = match change {
            Change::Upsert(Fact::Host(h)) => Some(h.host.as_str()),
            Change::Remove(FactKey::Host { host }) => Some(host.as_str()),
            _ => None,
        };
        if let (Some(host), false) = (host, self.seen.is_empty()) {
            let host = self.hypervisors.get(hv_ix as usize).and_then(|hv| hv.facts.id(host));
            if let Some(host) = host {
                self.retie(hv_ix, Some(host));
            }
        }
    }

    /// Re-ties the uplinks of hypervisor `hv_ix` (of one host, when given) after what they are
    /// tied by changed: each uplink whose port moves takes its networks' reasons along.
    fn retie(&mut self, hv_ix: u32, host: Option<u32>) {
        let Some(hv) = self.hypervisors.get_mut(hv_ix as usize) else { return };
        let facts = &mut hv.facts;
        let (vlans, desired, touched) = (&mut self.vlans, &mut self.desired, &mut self.touched);
        let mut changed = false;
        for k in facts.uplink_ids(host) {
            let want = tie_for(&self.seen, facts, &mut self.ports, k);
            if facts.tied(k) == want {
                continue;
            }
            let nets = facts.networks_via(k);
            for &n in &nets {
                if contributes(&self.rules, facts, n) {
                    let nid = Nid { hv: hv_ix, host: n.0, network: n.1 };
                    entries(facts, n, |p, vlan| changed |= remove_reason(vlans, desired, touched, p, vlan, &nid));
                }
            }
            facts.set_tied(k, want);
            for &n in &nets {
                if contributes(&self.rules, facts, n) {
                    let nid = Nid { hv: hv_ix, host: n.0, network: n.1 };
                    entries(facts, n, |p, vlan| changed |= add_reason(vlans, desired, touched, p, vlan, nid));
                }
            }
        }
        if changed {
            self.desired_version += 1;
        }
    }

    /// Drops every fact of a hypervisor, and with them its reasons.
    fn forget(&mut self, id: &HypervisorId, hv_ix: u32) {
        let Some(hv) = self.hypervisors.get(hv_ix as usize) else { return };
        let facts = &hv.facts;
        let mut changed = false;
        let (vlans, desired, touched) = (&mut self.vlans, &mut self.desired, &mut self.touched);
        for n in facts.network_ids() {
            if contributes(&self.rules, facts, n) {
                let nid = Nid { hv: hv_ix, host: n.0, network: n.1 };
                entries(facts, n, |p, vlan| changed |= remove_reason(vlans, desired, touched, p, vlan, &nid));
            }
        }
        let facts = self.rules.empty_facts(id, &mut self.ports);
        if let Some(hv) = self.hypervisors.get_mut(hv_ix as usize) {
            hv.facts = facts;
        }
        if changed {
            self.desired_version += 1;
        }
    }

    /// Adds a decoded hypervisor with no facts but its static links, and returns its id (the
    /// caller upserts its facts; the index is rebuilt afterwards). (A hypervisor stored twice
    /// keeps the last.)
    fn insert_decoded(&mut self, id: HypervisorId, hv: Hypervisor) -> u32 {
        match self.hv_ids.get(&id) {
            Some(ix) => {
                let facts = self.rules.empty_facts(&id, &mut self.ports);
                self.hypervisors[ix as usize] = Hypervisor { facts, ..hv };
                ix
            }
            None => self.add_hypervisor(&id, hv),
        }
    }

    /// Rebuilds the desired-state index from the facts (after decoding a snapshot).
    fn rebuild_index(&mut self) {
        self.vlans.clear();
        self.desired.reset();
        self.seen = Seen::new(&self.switches);
        if !self.seen.is_empty() {
            for hv in &mut self.hypervisors {
                for k in hv.facts.uplink_ids(None) {
                    let tied = tie_for(&self.seen, &hv.facts, &mut self.ports, k);
                    hv.facts.set_tied(k, tied);
                }
            }
        }
        for (hv_ix, hv) in self.hypervisors.iter().enumerate() {
            let hv_ix = u32::try_from(hv_ix).unwrap_or(u32::MAX);
            for n in hv.facts.network_ids() {
                if contributes(&self.rules, &hv.facts, n) {
                    let nid = Nid { hv: hv_ix, host: n.0, network: n.1 };
                    entries(&hv.facts, n, |p, vlan| {
                        self.vlans.entry((p, vlan)).or_default().insert(nid);
                    });
                }
            }
        }
    }
}

/// The port uplink `k` ((host, nic) ids) leads to by [`discovery::resolve`], interned.
fn tie_for(seen: &Seen, facts: &Facts, ports: &mut Interner<SwitchPort>, k: Pair) -> Option<u32> {
    let link = facts.link_of(k).map(|p| ports.value(p).clone());
    let (port, _) = discovery::resolve(seen, link.as_ref(), facts.uplink_by_id(k), facts.host_name(k.0))?;
    Some(ports.intern(&port))
}

/// Whether upserting `f` would leave the facts as they are (it is there already, unchanged).
fn unchanged(facts: &Facts, f: &Fact) -> bool {
    match f {
        Fact::Host(h) => facts.host(&h.host) == Some(h),
        Fact::Uplink(u) => facts.uplink(&u.host, &u.nic) == Some(u),
        Fact::Network(n) => facts.network(&n.host, &n.network) == Some(n),
        Fact::Vnic(v) => facts.vnic(&v.vm, &v.nic).as_ref() == Some(v),
    }
}

/// Pushes onto `out` the networks ((host, network) ids) whose entries may change when a host,
/// uplink or network `change` is applied.
fn affected_by(facts: &mut Facts, change: &Change, out: &mut Vec<Pair>) {
    // An upsert interns its key (the fact is about to exist); a removal of a key never seen
    // affects nothing.
    let upsert = matches!(change, Change::Upsert(_));
    let ids = |facts: &mut Facts, a: &str, b: &str| -> Option<Pair> {
        if upsert {
            Some((facts.intern(a), facts.intern(b)))
        } else {
            Some((facts.id(a)?, facts.id(b)?))
        }
    };
    match change.key_ref() {
        KeyRef::Host | KeyRef::Vnic => {}
        KeyRef::Network(host, network) => out.extend(ids(facts, host, network)),
        KeyRef::Uplink(host, nic) => {
            if let Some((h, nic)) = ids(facts, host, nic) {
                for n in facts.network_ids_on(h) {
                    if facts.network_by_id((h, n)).is_some_and(|net| net.uplinks.contains(&nic)) {
                        out.push((h, n));
                    }
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
    Vnic,
}

impl Change {
    fn key_ref(&self) -> KeyRef<'_> {
        match self {
            Change::Upsert(Fact::Host(_)) | Change::Remove(FactKey::Host { .. }) => KeyRef::Host,
            Change::Upsert(Fact::Uplink(u)) => KeyRef::Uplink(&u.host, &u.nic),
            Change::Upsert(Fact::Network(n)) => KeyRef::Network(&n.host, &n.network),
            Change::Upsert(Fact::Vnic(_)) => KeyRef::Vnic,
            Change::Remove(FactKey::Uplink { host, nic }) => KeyRef::Uplink(host, nic),
            Change::Remove(FactKey::Network { host, network }) => KeyRef::Network(host, network),
            Change::Remove(FactKey::Vnic { .. }) => KeyRef::Vnic,
        }
    }
}

/// Whether network `n` ((host, network) ids) has reasons: it exists, and it counts itself
/// (VM-less networks counting) or a counting vNIC is attached to it.
fn contributes(rules: &Rules, facts: &Facts, n: Pair) -> bool {
    (rules.count_vmless_networks || facts.counting_on(n) > 0) && facts.network_by_id(n).is_some()
}

/// Calls `f(port id, vlan)` for every entry network `n`'s reasons go to: each VLAN it carries on
/// each port its uplinks lead to.
fn entries(facts: &Facts, n: Pair, mut f: impl FnMut(u32, VlanId)) {
    let Some(network) = facts.network_by_id(n).filter(|n| n.reaches) else { return };
    for &nic in &network.uplinks {
        let Some(p) = facts.port_of((n.0, nic)) else { continue };
        for vlan in network.fact.vlan.vlans() {
            f(p, vlan);
        }
    }
}

/// Adds network `n`'s reason to (port `p`, `vlan`); an entry it creates is `touched`.
fn add_reason(
    vlans: &mut Index,
    desired: &mut DesiredCache,
    touched: &mut Vec<(u32, VlanId)>,
    p: u32,
    vlan: VlanId,
    n: Nid,
) -> bool {
    let set = vlans.entry((p, vlan)).or_insert_with(|| {
        touched.push((p, vlan));
        HashSet::default()
    });
    let added = set.insert(n);
    if added {
        desired.mark((p, vlan));
    }
    added
}

/// Removes network `n`'s reason from (port `p`, `vlan`); an entry it empties is `touched`.
fn remove_reason(
    vlans: &mut Index,
    desired: &mut DesiredCache,
    touched: &mut Vec<(u32, VlanId)>,
    p: u32,
    vlan: VlanId,
    n: &Nid,
) -> bool {
    let Some(set) = vlans.get_mut(&(p, vlan)) else { return false };
    let removed = set.remove(n);
    if set.is_empty() {
        vlans.remove(&(p, vlan));
        touched.push((p, vlan));
    }
    if removed {
        desired.mark((p, vlan));
    }
    removed
}

#[cfg(test)]
mod tests;
