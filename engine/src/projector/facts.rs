//! One hypervisor's facts, keyed by interned ids for the lookups the projector needs: hosts,
//! uplinks by host and NIC (each with the id of the switch port it leads to), networks by host
//! and network (each with the ids of its uplinks), vNICs by VM and NIC (each with the ids of
//! its host and network), and the indexes from a network on a host to the vNICs attached to it
//! (with how many of them count under the policy) and from a host to its networks.
//!
//! Strings are interned per hypervisor; switch ports are interned by the state (they are shared
//! between hypervisors) and passed in. Upserting a fact that already exists updates it in place,
//! reusing its strings' buffers.
//!
//! vNICs (the bulk of the facts and of the changes) are stored compactly, keyed by their VM and
//! NIC ids themselves ([`VKey`], inline [`CompactString`]s: an upsert finds its vNIC in one
//! lookup, without interning the VM id first), with their host and network as interned ids and
//! their VM name and MAC inline: one small record with no heap blocks of its own; a
//! [`VnicFact`] is rebuilt when asked for.
//!
//! Every fact carries its provenance: the [`Stamp`] of the event that set its current value (an
//! upsert that changes nothing does not move it), so `why` at any point reads it from the state.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};

use compact_str::CompactString;
use hashbrown::Equivalent;
use rustc_hash::{FxBuildHasher, FxHashMap as HashMap, FxHashSet as HashSet};

use super::intern::Interner;
use super::snapshot::VnicIn;
use super::Stamp;
use crate::fact::{Fact, FactKey, HostFact, NetworkFact, UplinkFact, VnicFact};
use crate::ids::SwitchPort;

/// A fact of any kind: borrowed, or (a vNIC) rebuilt from its compact stored form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FactRef<'a> {
    Host(&'a HostFact),
    Uplink(&'a UplinkFact),
    Network(&'a NetworkFact),
    Vnic(VnicFact),
}

impl FactRef<'_> {
    pub fn to_fact(self) -> Fact {
        match self {
            FactRef::Host(f) => Fact::Host(f.clone()),
            FactRef::Uplink(f) => Fact::Uplink(f.clone()),
            FactRef::Network(f) => Fact::Network(f.clone()),
            FactRef::Vnic(f) => Fact::Vnic(f),
        }
    }

    pub fn key(&self) -> FactKey {
        match self {
            FactRef::Host(h) => FactKey::Host { host: h.host.clone() },
            FactRef::Uplink(u) => FactKey::Uplink { host: u.host.clone(), nic: u.nic.clone() },
            FactRef::Network(n) => FactKey::Network { host: n.host.clone(), network: n.network.clone() },
            FactRef::Vnic(v) => FactKey::Vnic { vm: v.vm.clone(), nic: v.nic.clone() },
        }
    }

    /// Whether `fact` is this very fact (same key, same content).
    pub fn same_as(&self, fact: &Fact) -> bool {
        match (self, fact) {
            (FactRef::Host(a), Fact::Host(b)) => *a == b,
            (FactRef::Uplink(a), Fact::Uplink(b)) => *a == b,
            (FactRef::Network(a), Fact::Network(b)) => *a == b,
            (FactRef::Vnic(a), Fact::Vnic(b)) => a == b,
            _ => false,
        }
    }
}

/// A pair of interned ids: (host, nic) or (host, network).
pub(crate) type Pair = (u32, u32);

/// A vNIC's key: its VM and NIC ids, inline (short ids need no heap block).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct VKey {
    pub(crate) vm: CompactString,
    pub(crate) nic: CompactString,
}

impl VKey {
    fn new(vm: &str, nic: &str) -> Self {
        Self { vm: CompactString::from(vm), nic: CompactString::from(nic) }
    }
}

/// Hashes as [`VKeyRef`] does, so a lookup needs no owned key.
impl Hash for VKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        VKeyRef(self.vm.as_str(), self.nic.as_str()).hash(h);
    }
}

/// A borrowed [`VKey`]: (vm, nic).
#[derive(Hash)]
struct VKeyRef<'a>(&'a str, &'a str);

impl Equivalent<VKey> for VKeyRef<'_> {
    fn equivalent(&self, key: &VKey) -> bool {
        key.vm.as_str() == self.0 && key.nic.as_str() == self.1
    }
}

/// An uplink, the switch port its reported neighbour is, and the port it leads to (both
/// interned by the state).
#[derive(Clone, Debug)]
pub(crate) struct Uplink {
    fact: UplinkFact,
    port: Option<u32>,
    /// The port it leads to: the static link, else the reported neighbour, else what the
    /// switches saw, bond members lifted to their bond (set by the state: [`Facts::set_tied`];
    /// until then the static link or the reported neighbour).
    tied: Option<u32>,
    set: Stamp,
}

/// A network and the ids of the uplink NICs that carry it.
#[derive(Clone, Debug)]
pub(crate) struct Network {
    pub(crate) fact: NetworkFact,
    pub(crate) uplinks: Vec<u32>,
    /// Whether it carries a VLAN and one of its uplinks leads to a port (kept up to date on
    /// every network and uplink change): whether its reasons reach desired state at all.
    pub(crate) reaches: bool,
    set: Stamp,
}

/// A vNIC (its [`VKey`] is its key): the ids of its host and network, its VM name and MAC
/// inline, its flags.
#[derive(Clone, Debug)]
pub(crate) struct Vnic {
    pub(crate) host: u32,
    pub(crate) network: u32,
    pub(crate) vm_name: CompactString,
    mac: CompactString,
    connected: bool,
    powered_on: bool,
    set: Stamp,
}

/// Whether a vNIC with these flags counts (see [`Facts::counts`]).
fn counting(powered_on: bool, connected: bool, count_powered_off: bool) -> bool {
    if powered_on {
        connected
    } else {
        count_powered_off
    }
}

/// The vNICs attached to one network on one host.
#[derive(Clone, Debug, Default)]
pub(crate) struct Attached {
    pub(crate) vnics: HashSet<VKey>,
}

/// What a vNIC change reads and writes of a (host, network), kept small and apart from the
/// networks and the attached vNICs so that it stays in cache: whether the network exists,
/// whether it reaches a port ([`Network::reaches`]), and how many attached vNICs count
/// (powered on and connected; with the policy's `count_powered_off`, powered-off ones too).
/// Absent: no network and no counting vNIC.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Standing {
    pub(crate) exists: bool,
    pub(crate) reaches: bool,
    pub(crate) counting: u32,
}

/// What a vNIC change moved: where the vNIC was and goes ((host, network) ids, and whether it
/// counts there; `None`: not stored before / removed), and the standing of those two networks
/// before the change (`None` where there is no network).
pub(crate) struct VnicMove {
    pub(crate) old: Option<(Pair, bool)>,
    pub(crate) new: Option<(Pair, bool)>,
    pub(crate) before: [Option<Standing>; 2],
}

/// Network `k`'s [`Standing`], from the map it is kept in (so it can be read while a vNIC is
/// borrowed from another).
fn standing(nets: &HashMap<Pair, Standing>, k: Pair) -> Standing {
    nets.get(&k).copied().unwrap_or_default()
}

/// Counts a vNIC that starts (`+1`) or stops (`-1`) counting on (host, network) `k`; an
/// entry left with no network and no count goes.
fn count(nets: &mut HashMap<Pair, Standing>, k: Pair, delta: i8) {
    let s = nets.entry(k).or_default();
    s.counting = if delta > 0 { s.counting + 1 } else { s.counting.saturating_sub(1) };
    if !s.exists && s.counting == 0 {
        nets.remove(&k);
    }
}

/// Overwrites `dst` with `src`, reusing `dst`'s buffer.
fn set(dst: &mut CompactString, src: &str) {
    if dst != src {
        dst.clear();
        dst.push_str(src);
    }
}

/// Every fact one hypervisor reported, with the indexes desired-state maintenance walks.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    names: Interner<CompactString>,
    hosts: HashMap<u32, (HostFact, Stamp)>,
    uplinks: HashMap<Pair, Uplink>,
    networks: HashMap<Pair, Network>,
    /// (host, network) → what a vNIC change reads and writes there, apart from the networks.
    nets: HashMap<Pair, Standing>,
    vnics: hashbrown::HashMap<VKey, Vnic, FxBuildHasher>,
    /// host → the networks reported on it.
    networks_by_host: HashMap<u32, HashSet<u32>>,
    /// (host, network) → the keys of the vNICs attached to that network on that host.
    vnics_on: HashMap<Pair, Attached>,
    /// Static links (host, nic) → port: they win over the reported neighbour.
    links: HashMap<Pair, u32>,
    len: usize,
    /// Whether powered-off vNICs count (the policy's `count_powered_off`).
    count_powered_off: bool,
}

impl Facts {
    /// No facts, with the static links configured for this hypervisor (host → NIC → port),
    /// counting powered-off vNICs or not.
    pub(crate) fn with_links<'a>(
        links: impl IntoIterator<Item = (&'a str, &'a str, &'a SwitchPort)>,
        ports: &mut Interner<SwitchPort>,
        count_powered_off: bool,
    ) -> Self {
        let mut f = Facts { count_powered_off, ..Facts::default() };
        for (host, nic, port) in links {
            let key = (f.names.intern(host), f.names.intern(nic));
            f.links.insert(key, ports.intern(port));
        }
        f
    }

    /// How many facts.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn pair(&self, a: &str, b: &str) -> Option<Pair> {
        Some((self.names.get(a)?, self.names.get(b)?))
    }

    pub fn host(&self, host: &str) -> Option<&HostFact> {
        self.hosts.get(&self.names.get(host)?).map(|(h, _)| h)
    }

    pub fn uplink(&self, host: &str, nic: &str) -> Option<&UplinkFact> {
        self.uplinks.get(&self.pair(host, nic)?).map(|u| &u.fact)
    }

    pub fn network(&self, host: &str, network: &str) -> Option<&NetworkFact> {
        self.networks.get(&self.pair(host, network)?).map(|n| &n.fact)
    }

    /// The vNIC with this key (rebuilt from its stored form).
    pub fn vnic(&self, vm: &str, nic: &str) -> Option<VnicFact> {
        self.vnics.get_key_value(&VKeyRef(vm, nic)).map(|(k, v)| self.vnic_fact(k, v))
    }

    /// The networks reported on `host`.
    pub fn networks_on(&self, host: &str) -> impl Iterator<Item = &NetworkFact> {
        let h = self.names.get(host);
        h.and_then(|h| self.networks_by_host.get(&h).map(|s| (h, s)))
            .into_iter()
            .flat_map(move |(h, s)| s.iter().filter_map(move |n| self.networks.get(&(h, *n))))
            .map(|n| &n.fact)
    }

    /// The vNICs attached to `network` on `host`.
    pub fn vnics_on(&self, host: &str, network: &str) -> impl Iterator<Item = VnicFact> + '_ {
        self.pair(host, network)
            .and_then(|k| self.vnics_on.get(&k))
            .into_iter()
            .flat_map(|s| s.vnics.iter())
            .filter_map(|k| self.vnics.get(k).map(|v| self.vnic_fact(k, v)))
    }

    /// The fact with this key.
    pub fn get(&self, key: &FactKey) -> Option<FactRef<'_>> {
        match key {
            FactKey::Host { host } => self.host(host).map(FactRef::Host),
            FactKey::Uplink { host, nic } => self.uplink(host, nic).map(FactRef::Uplink),
            FactKey::Network { host, network } => self.network(host, network).map(FactRef::Network),
            FactKey::Vnic { vm, nic } => self.vnic(vm, nic).map(FactRef::Vnic),
        }
    }

    /// The event that set the fact with this key to its current value.
    pub fn set_by(&self, key: &FactKey) -> Option<Stamp> {
        match key {
            FactKey::Host { host } => self.hosts.get(&self.names.get(host.as_str())?).map(|(_, s)| *s),
            FactKey::Uplink { host, nic } => self.uplinks.get(&self.pair(host, nic)?).map(|u| u.set),
            FactKey::Network { host, network } => self.networks.get(&self.pair(host, network)?).map(|n| n.set),
            FactKey::Vnic { vm, nic } => self.vnics.get(&VKeyRef(vm, nic)).map(|v| v.set),
        }
    }

    /// Every host, in no particular order.
    pub fn hosts(&self) -> impl Iterator<Item = &HostFact> {
        self.hosts.values().map(|(h, _)| h)
    }

    /// Every uplink, in no particular order.
    pub fn uplinks(&self) -> impl Iterator<Item = &UplinkFact> {
        self.uplinks.values().map(|u| &u.fact)
    }

    /// The hosts that have uplinks none of which leads to a known switch port (no neighbour
    /// reported, no static link): their networks reach no switch.
    pub fn hosts_without_switch_port(&self) -> std::collections::BTreeSet<&str> {
        let mut reaches: HashMap<u32, bool> = HashMap::default();
        for k in self.uplinks.keys() {
            *reaches.entry(k.0).or_default() |= self.port_of(*k).is_some();
        }
        reaches.into_iter().filter(|(_, r)| !r).map(|(h, _)| self.name(h)).collect()
    }

    /// Every fact, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = FactRef<'_>> {
        let hosts = self.hosts.values().map(|(h, _)| FactRef::Host(h));
        let uplinks = self.uplinks.values().map(|u| FactRef::Uplink(&u.fact));
        let networks = self.networks.values().map(|n| FactRef::Network(&n.fact));
        let vnics = self.vnics.iter().map(|(k, v)| FactRef::Vnic(self.vnic_fact(k, v)));
        hosts.chain(uplinks).chain(networks).chain(vnics)
    }

    /// Every fact, ordered by key (deterministic: snapshots and diffs use it).
    pub fn sorted(&self) -> Vec<(FactKey, FactRef<'_>)> {
        let mut v: Vec<_> = self.iter().map(|f| (f.key(), f)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Every fact with the event that set it, ordered by key (the stored form).
    pub(crate) fn sorted_stamped(&self) -> Vec<(Fact, Stamp)> {
        let hosts = self.hosts.values().map(|(h, s)| (FactRef::Host(h), *s));
        let uplinks = self.uplinks.values().map(|u| (FactRef::Uplink(&u.fact), u.set));
        let networks = self.networks.values().map(|n| (FactRef::Network(&n.fact), n.set));
        let vnics = self.vnics.iter().map(|(k, v)| (FactRef::Vnic(self.vnic_fact(k, v)), v.set));
        let mut all: Vec<_> = hosts.chain(uplinks).chain(networks).chain(vnics).map(|(f, s)| (f.key(), f, s)).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.into_iter().map(|(_, f, s)| (f.to_fact(), s)).collect()
    }

    // ----- crate-internal access by id -----

    /// The id of a string, interning it when new.
    pub(crate) fn intern(&mut self, s: &str) -> u32 {
        self.names.intern(s)
    }

    /// The id of a string, if any fact (or static link) ever used it.
    pub(crate) fn id(&self, s: &str) -> Option<u32> {
        self.names.get(s)
    }

    pub(crate) fn name(&self, id: u32) -> &str {
        self.names.value(id)
    }

    pub(crate) fn vnic_by_key(&self, k: &VKey) -> Option<&Vnic> {
        self.vnics.get(k)
    }

    /// The [`VnicFact`] stored as `v` under key `k`.
    pub(crate) fn vnic_fact(&self, k: &VKey, v: &Vnic) -> VnicFact {
        VnicFact {
            vm: k.vm.clone(),
            vm_name: v.vm_name.clone(),
            nic: k.nic.clone(),
            mac: v.mac.clone(),
            host: self.name(v.host).into(),
            network: self.name(v.network).into(),
            connected: v.connected,
            powered_on: v.powered_on,
        }
    }

    /// Whether the stored vNIC `v` counts.
    pub(crate) fn stored_counts(&self, v: &Vnic) -> bool {
        counting(v.powered_on, v.connected, self.count_powered_off)
    }

    pub(crate) fn network_by_id(&self, k: Pair) -> Option<&Network> {
        self.networks.get(&k)
    }

    /// The switch port (host, nic) leads to: the uplink's tie ([`Uplink::tied`]), else (no
    /// uplink fact) the static link.
    pub(crate) fn port_of(&self, k: Pair) -> Option<u32> {
        match self.uplinks.get(&k) {
            Some(u) => u.tied,
            None => self.links.get(&k).copied(),
        }
    }

    /// The uplink with (host, nic) ids `k`.
    pub(crate) fn uplink_by_id(&self, k: Pair) -> Option<&UplinkFact> {
        self.uplinks.get(&k).map(|u| &u.fact)
    }

    /// The static link of (host, nic) ids `k`.
    pub(crate) fn link_of(&self, k: Pair) -> Option<u32> {
        self.links.get(&k).copied()
    }

    /// The name of the host with id `host` (empty when no host fact has it).
    pub(crate) fn host_name(&self, host: u32) -> &str {
        self.hosts.get(&host).map_or("", |(h, _)| h.name.as_str())
    }

    /// The (host, nic) ids of every uplink (of `host`, when given).
    pub(crate) fn uplink_ids(&self, host: Option<u32>) -> Vec<Pair> {
        let mut v: Vec<Pair> = self.uplinks.keys().filter(|k| host.is_none_or(|h| k.0 == h)).copied().collect();
        v.sort_unstable();
        v
    }

    /// The networks ((host, network) ids) that use uplink `k`.
    pub(crate) fn networks_via(&self, (host, nic): Pair) -> Vec<Pair> {
        self.network_ids_on(host)
            .filter(|&n| self.networks.get(&(host, n)).is_some_and(|net| net.uplinks.contains(&nic)))
            .map(|n| (host, n))
            .collect()
    }

    /// The port uplink `k` is tied to.
    pub(crate) fn tied(&self, k: Pair) -> Option<u32> {
        self.uplinks.get(&k).and_then(|u| u.tied)
    }

    /// Ties uplink `k` to `port` (the state resolved it from every source).
    pub(crate) fn set_tied(&mut self, k: Pair, port: Option<u32>) {
        if let Some(u) = self.uplinks.get_mut(&k) {
            u.tied = port;
            self.refresh_reach_via(k);
        }
    }

    /// The ids of the networks on `host`.
    pub(crate) fn network_ids_on(&self, host: u32) -> impl Iterator<Item = u32> + '_ {
        self.networks_by_host.get(&host).into_iter().flat_map(|s| s.iter().copied())
    }

    /// The vNICs attached to (host, network) ids.
    pub(crate) fn attached(&self, k: Pair) -> Option<&Attached> {
        self.vnics_on.get(&k)
    }

    /// How many vNICs attached to (host, network) ids count.
    pub(crate) fn counting_on(&self, k: Pair) -> u32 {
        self.nets.get(&k).map_or(0, |s| s.counting)
    }

    /// Whether a vNIC counts: powered on and connected, or powered off when the policy counts
    /// powered-off VMs.
    pub(crate) fn counts(&self, v: &VnicFact) -> bool {
        counting(v.powered_on, v.connected, self.count_powered_off)
    }

    /// Every network's (host, network) ids.
    pub(crate) fn network_ids(&self) -> impl Iterator<Item = Pair> + '_ {
        self.networks.keys().copied()
    }

    /// Adds or replaces a fact (in place when it exists), set by the event `stamp`. An owned
    /// fact (decoding a snapshot) is moved in; a borrowed one (an event's) is cloned when new.
    pub(crate) fn upsert(&mut self, fact: Cow<'_, Fact>, ports: &mut Interner<SwitchPort>, stamp: Stamp) {
        let added = match fact {
            Cow::Borrowed(Fact::Host(h)) => self.upsert_host(Cow::Borrowed(h), stamp),
            Cow::Owned(Fact::Host(h)) => self.upsert_host(Cow::Owned(h), stamp),
            Cow::Borrowed(Fact::Uplink(u)) => self.upsert_uplink(Cow::Borrowed(u), ports, stamp),
            Cow::Owned(Fact::Uplink(u)) => self.upsert_uplink(Cow::Owned(u), ports, stamp),
            Cow::Borrowed(Fact::Network(n)) => self.upsert_network(Cow::Borrowed(n), stamp),
            Cow::Owned(Fact::Network(n)) => self.upsert_network(Cow::Owned(n), stamp),
            Cow::Borrowed(Fact::Vnic(v)) => {
                self.upsert_vnic(v, stamp);
                false
            }
            Cow::Owned(Fact::Vnic(v)) => {
                self.upsert_vnic(&v, stamp);
                false
            }
        };
        if added {
            self.len += 1;
        }
    }

    /// [`Facts::upsert`] of a host; whether it is new.
    fn upsert_host(&mut self, h: Cow<'_, HostFact>, stamp: Stamp) -> bool {
        let k = self.names.intern(h.host.as_str());
        match self.hosts.get_mut(&k) {
            Some((slot, set_by)) => {
                set(&mut slot.name, &h.name);
                *set_by = stamp;
                false
            }
            None => {
                self.hosts.insert(k, (h.into_owned(), stamp));
                true
            }
        }
    }

    /// [`Facts::upsert`] of an uplink; whether it is new.
    fn upsert_uplink(&mut self, u: Cow<'_, UplinkFact>, ports: &mut Interner<SwitchPort>, stamp: Stamp) -> bool {
        let k = (self.names.intern(u.host.as_str()), self.names.intern(u.nic.as_str()));
        let port = u.port.as_ref().map(|p| ports.intern(p));
        let tied = self.links.get(&k).copied().or(port);
        let added = match self.uplinks.get_mut(&k) {
            Some(slot) => {
                slot.fact.mac.clone_from(&u.mac);
                slot.fact.port.clone_from(&u.port);
                slot.fact.source = u.source;
                slot.port = port;
                slot.tied = tied;
                slot.set = stamp;
                false
            }
            None => {
                self.uplinks.insert(k, Uplink { fact: u.into_owned(), port, tied, set: stamp });
                true
            }
        };
        self.refresh_reach_via(k);
        added
    }

    /// [`Facts::upsert`] of a network; whether it is new.
    fn upsert_network(&mut self, n: Cow<'_, NetworkFact>, stamp: Stamp) -> bool {
        let k = (self.names.intern(n.host.as_str()), self.names.intern(n.network.as_str()));
        let uplinks: Vec<u32> = n.uplinks.iter().map(|u| self.names.intern(u.as_str())).collect();
        let added = match self.networks.get_mut(&k) {
            Some(slot) => {
                set(&mut slot.fact.name, &n.name);
                slot.fact.vlan.clone_from(&n.vlan);
                slot.fact.uplinks.clone_from(&n.uplinks);
                slot.uplinks = uplinks;
                slot.set = stamp;
                false
            }
            None => {
                self.networks.insert(k, Network { fact: n.into_owned(), uplinks, reaches: false, set: stamp });
                self.nets.entry(k).or_default().exists = true;
                self.networks_by_host.entry(k.0).or_default().insert(k.1);
                true
            }
        };
        self.refresh_reach(k);
        added
    }

    /// Room for `n` more vNICs (decoding a snapshot knows how many).
    pub(crate) fn reserve_vnics(&mut self, n: usize) {
        self.vnics.reserve(n);
    }

    /// Room for `n` more vNICs attached at `at` ((host, network) ids), so that a snapshot's
    /// vNICs fill each place's set without growing it step by step.
    pub(crate) fn reserve_attached(&mut self, at: Pair, n: usize) {
        self.vnics_on.entry(at).or_default().vnics.reserve(n);
    }

    /// Adds a vNIC decoded from a snapshot, its strings borrowed from the snapshot's bytes;
    /// `false`, and nothing changed, when it is there already (a snapshot stores each once).
    pub(crate) fn insert_vnic_in(&mut self, v: &VnicIn<'_>, stamp: Stamp) -> bool {
        let k = VKey::new(v.vm, v.nic);
        let hashbrown::hash_map::Entry::Vacant(slot) = self.vnics.entry(k.clone()) else { return false };
        let at = v.at;
        slot.insert(Vnic {
            host: at.0,
            network: at.1,
            vm_name: CompactString::from(v.vm_name),
            mac: CompactString::from(v.mac),
            connected: v.connected,
            powered_on: v.powered_on,
            set: stamp,
        });
        self.index(at, k, counting(v.powered_on, v.connected, self.count_powered_off));
        self.len += 1;
        true
    }

    fn upsert_vnic(&mut self, v: &VnicFact, stamp: Stamp) {
        let at = (self.names.intern(v.host.as_str()), self.names.intern(v.network.as_str()));
        self.upsert_vnic_at(at, v, stamp)
    }

    /// Where the vNIC (vm, nic) is attached ((host, network) ids) and whether it counts.
    pub(crate) fn vnic_at(&self, vm: &str, nic: &str) -> Option<(Pair, bool)> {
        self.vnics.get(&VKeyRef(vm, nic)).map(|o| ((o.host, o.network), self.stored_counts(o)))
    }

    /// Adds or replaces (in place) the vNIC `v`, whose (host, network) ids are `at`, set by the
    /// event `stamp`.
    fn upsert_vnic_at(&mut self, at: Pair, v: &VnicFact, stamp: Stamp) {
        let counts = self.counts(v);
        match self.vnics.get_key_value_mut(&VKeyRef(&v.vm, &v.nic)) {
            Some((k, slot)) => {
                let was = (slot.host, slot.network);
                let counted = counting(slot.powered_on, slot.connected, self.count_powered_off);
                set(&mut slot.vm_name, &v.vm_name);
                set(&mut slot.mac, &v.mac);
                slot.connected = v.connected;
                slot.powered_on = v.powered_on;
                slot.set = stamp;
                if was != at {
                    (slot.host, slot.network) = at;
                    let k = k.clone();
                    self.unindex(was, &k, counted);
                    self.index(at, k, counts);
                } else if counted != counts {
                    count(&mut self.nets, at, if counts { 1 } else { -1 });
                }
            }
            None => {
                let vnic = Vnic {
                    host: at.0,
                    network: at.1,
                    vm_name: CompactString::from(v.vm_name.as_str()),
                    mac: CompactString::from(v.mac.as_str()),
                    connected: v.connected,
                    powered_on: v.powered_on,
                    set: stamp,
                };
                let k = VKey::new(&v.vm, &v.nic);
                self.vnics.insert(k.clone(), vnic);
                self.index(at, k, counts);
                self.len += 1;
            }
        }
    }

    /// Removes the fact with this key.
    pub(crate) fn remove(&mut self, key: &FactKey) {
        let removed = match key {
            FactKey::Host { host } => self.id(host).and_then(|h| self.hosts.remove(&h)).is_some(),
            FactKey::Uplink { host, nic } => match self.pair(host, nic) {
                Some(k) if self.uplinks.remove(&k).is_some() => {
                    self.refresh_reach_via(k);
                    true
                }
                _ => false,
            },
            FactKey::Network { host, network } => match self.pair(host, network) {
                Some(k) if self.networks.remove(&k).is_some() => {
                    if let Some(s) = self.nets.get_mut(&k) {
                        (s.exists, s.reaches) = (false, false);
                        if s.counting == 0 {
                            self.nets.remove(&k);
                        }
                    }
                    if let Some(s) = self.networks_by_host.get_mut(&k.0) {
                        s.remove(&k.1);
                        if s.is_empty() {
                            self.networks_by_host.remove(&k.0);
                        }
                    }
                    true
                }
                _ => false,
            },
            FactKey::Vnic { vm, nic } => match self.vnics.remove_entry(&VKeyRef(vm, nic)) {
                Some((k, old)) => {
                    let counted = self.stored_counts(&old);
                    self.unindex((old.host, old.network), &k, counted);
                    true
                }
                None => false,
            },
        };
        if removed {
            self.len -= 1;
        }
    }

    /// Recomputes [`Network::reaches`] for network `k` ((host, network) ids).
    fn refresh_reach(&mut self, k: Pair) {
        let Some(n) = self.networks.get(&k) else { return };
        let reaches =
            n.fact.vlan.vlans().next().is_some() && n.uplinks.iter().any(|&nic| self.port_of((k.0, nic)).is_some());
        if let Some(n) = self.networks.get_mut(&k) {
            n.reaches = reaches;
            self.nets.entry(k).or_default().reaches = reaches;
        }
    }

    /// Recomputes [`Network::reaches`] for the networks using uplink `k` ((host, nic) ids).
    fn refresh_reach_via(&mut self, (host, nic): Pair) {
        let using: Vec<u32> = self
            .network_ids_on(host)
            .filter(|&n| self.networks.get(&(host, n)).is_some_and(|net| net.uplinks.contains(&nic)))
            .collect();
        for n in using {
            self.refresh_reach((host, n));
        }
    }

    /// Upserts the vNIC `v`, set by the event `stamp`, in one lookup of
    /// the stored vNIC, and says what moved: `None` when it is stored so already (nothing
    /// changes, its stamp included); else where it was (its (host, network) ids and whether it
    /// counted) if stored, where it goes and whether it counts there, and the standing
    /// ([`Facts::network_standing`]) of both networks before the change.
    pub(crate) fn upsert_vnic_changed(&mut self, v: &VnicFact, stamp: Stamp) -> Option<VnicMove> {
        let counts = counting(v.powered_on, v.connected, self.count_powered_off);
        let Some((k, slot)) = self.vnics.get_key_value_mut(&VKeyRef(&v.vm, &v.nic)) else {
            let at = (self.names.intern(v.host.as_str()), self.names.intern(v.network.as_str()));
            let before = [None, Some(standing(&self.nets, at))];
            self.upsert_vnic_at(at, v, stamp);
            return Some(VnicMove { old: None, new: Some((at, counts)), before });
        };
        let same_host = self.names.value(slot.host).as_str() == v.host.as_str();
        let same_network = self.names.value(slot.network).as_str() == v.network.as_str();
        let same_rest = slot.powered_on == v.powered_on
            && slot.connected == v.connected
            && slot.vm_name.as_str() == v.vm_name.as_str()
            && slot.mac.as_str() == v.mac.as_str();
        if same_host && same_network && same_rest {
            return None;
        }
        let was = (slot.host, slot.network);
        let counted = counting(slot.powered_on, slot.connected, self.count_powered_off);
        if !same_rest {
            set(&mut slot.vm_name, &v.vm_name);
            set(&mut slot.mac, &v.mac);
            slot.connected = v.connected;
            slot.powered_on = v.powered_on;
        }
        slot.set = stamp;
        let host = if same_host { was.0 } else { self.names.intern(v.host.as_str()) };
        let network = if same_network { was.1 } else { self.names.intern(v.network.as_str()) };
        let at = (host, network);
        (slot.host, slot.network) = at;
        let before = [Some(standing(&self.nets, was)), (was != at).then(|| standing(&self.nets, at))];
        if was != at {
            let k = k.clone();
            self.unindex(was, &k, counted);
            self.index(at, k, counts);
        } else if counted != counts {
            count(&mut self.nets, at, if counts { 1 } else { -1 });
        }
        Some(VnicMove { old: Some((was, counted)), new: Some((at, counts)), before })
    }

    /// Network `k`'s standing before a vNIC change: whether it exists, whether it reaches a
    /// port, and how many vNICs on it count.
    pub(crate) fn network_standing(&self, k: Pair) -> Standing {
        standing(&self.nets, k)
    }

    fn index(&mut self, at: Pair, k: VKey, counts: bool) {
        self.vnics_on.entry(at).or_default().vnics.insert(k);
        if counts {
            count(&mut self.nets, at, 1);
        }
    }

    fn unindex(&mut self, at: Pair, k: &VKey, counted: bool) {
        if let Some(a) = self.vnics_on.get_mut(&at) {
            a.vnics.remove(k);
            if a.vnics.is_empty() {
                self.vnics_on.remove(&at);
            }
        }
        if counted {
            count(&mut self.nets, at, -1);
        }
    }
}
