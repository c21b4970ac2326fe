//! One hypervisor's facts, keyed for the lookups the projector needs without allocating:
//! hosts, uplinks by host and NIC, networks by host and network, vNICs by VM and NIC, and the
//! index from a network on a host to the vNICs attached to it.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::fact::{Fact, FactKey, HostFact, NetworkFact, UplinkFact, VnicFact};

/// A borrowed fact of any kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactRef<'a> {
    Host(&'a HostFact),
    Uplink(&'a UplinkFact),
    Network(&'a NetworkFact),
    Vnic(&'a VnicFact),
}

impl FactRef<'_> {
    pub fn to_fact(self) -> Fact {
        match self {
            FactRef::Host(f) => Fact::Host(f.clone()),
            FactRef::Uplink(f) => Fact::Uplink(f.clone()),
            FactRef::Network(f) => Fact::Network(f.clone()),
            FactRef::Vnic(f) => Fact::Vnic(f.clone()),
        }
    }

    pub fn key(self) -> FactKey {
        match self {
            FactRef::Host(h) => FactKey::Host { host: h.host.clone() },
            FactRef::Uplink(u) => FactKey::Uplink { host: u.host.clone(), nic: u.nic.clone() },
            FactRef::Network(n) => FactKey::Network { host: n.host.clone(), network: n.network.clone() },
            FactRef::Vnic(v) => FactKey::Vnic { vm: v.vm.clone(), nic: v.nic.clone() },
        }
    }

    /// Whether `fact` is this very fact (same key, same content).
    pub fn same_as(self, fact: &Fact) -> bool {
        match (self, fact) {
            (FactRef::Host(a), Fact::Host(b)) => a == b,
            (FactRef::Uplink(a), Fact::Uplink(b)) => a == b,
            (FactRef::Network(a), Fact::Network(b)) => a == b,
            (FactRef::Vnic(a), Fact::Vnic(b)) => a == b,
            _ => false,
        }
    }
}

type Nested<T> = HashMap<String, HashMap<String, T>>;

fn nested_get<'a, T>(m: &'a Nested<T>, a: &str, b: &str) -> Option<&'a T> {
    m.get(a).and_then(|inner| inner.get(b))
}

/// Inserts `v` under the two keys it names; allocates keys only for a new entry.
fn nested_insert<T>(m: &mut Nested<T>, v: T, keys: impl Fn(&T) -> (&String, &String)) -> Option<T> {
    let (a, b) = keys(&v);
    if let Some(slot) = m.get_mut(a.as_str()).and_then(|inner| inner.get_mut(b.as_str())) {
        return Some(std::mem::replace(slot, v));
    }
    let (a, b) = (a.clone(), b.clone());
    m.entry(a).or_default().insert(b, v);
    None
}

fn nested_remove<T>(m: &mut Nested<T>, a: &str, b: &str) -> Option<T> {
    let inner = m.get_mut(a)?;
    let out = inner.remove(b);
    if inner.is_empty() {
        m.remove(a);
    }
    out
}

/// Every fact one hypervisor reported, with the indexes desired-state maintenance walks.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    hosts: HashMap<String, HostFact>,
    uplinks: Nested<UplinkFact>,
    networks: Nested<NetworkFact>,
    vnics: Nested<VnicFact>,
    /// host → network → (vm, nic) of the vNICs attached to that network on that host.
    vnics_on: Nested<HashSet<(String, String)>>,
    len: usize,
}

impl Facts {
    /// How many facts.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn host(&self, host: &str) -> Option<&HostFact> {
        self.hosts.get(host)
    }

    pub fn uplink(&self, host: &str, nic: &str) -> Option<&UplinkFact> {
        nested_get(&self.uplinks, host, nic)
    }

    pub fn network(&self, host: &str, network: &str) -> Option<&NetworkFact> {
        nested_get(&self.networks, host, network)
    }

    pub fn vnic(&self, vm: &str, nic: &str) -> Option<&VnicFact> {
        nested_get(&self.vnics, vm, nic)
    }

    /// The networks reported on `host`.
    pub fn networks_on(&self, host: &str) -> impl Iterator<Item = &NetworkFact> {
        self.networks.get(host).into_iter().flat_map(|m| m.values())
    }

    /// The vNICs attached to `network` on `host`.
    pub fn vnics_on(&self, host: &str, network: &str) -> impl Iterator<Item = &VnicFact> {
        nested_get(&self.vnics_on, host, network)
            .into_iter()
            .flat_map(|s| s.iter())
            .filter_map(|(vm, nic)| self.vnic(vm, nic))
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

    /// Every fact, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = FactRef<'_>> {
        let hosts = self.hosts.values().map(FactRef::Host);
        let uplinks = self.uplinks.values().flat_map(|m| m.values()).map(FactRef::Uplink);
        let networks = self.networks.values().flat_map(|m| m.values()).map(FactRef::Network);
        let vnics = self.vnics.values().flat_map(|m| m.values()).map(FactRef::Vnic);
        hosts.chain(uplinks).chain(networks).chain(vnics)
    }

    /// Every fact, ordered by key (deterministic: snapshots and diffs use it).
    pub fn sorted(&self) -> Vec<(FactKey, FactRef<'_>)> {
        let mut v: Vec<_> = self.iter().map(|f| (f.key(), f)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Adds or replaces a fact; returns the one it replaced.
    pub(crate) fn upsert(&mut self, fact: Fact) -> Option<Fact> {
        let old = match fact {
            Fact::Host(h) => match self.hosts.get_mut(&h.host) {
                Some(slot) => Some(Fact::Host(std::mem::replace(slot, h))),
                None => {
                    self.hosts.insert(h.host.clone(), h);
                    None
                }
            },
            Fact::Uplink(u) => nested_insert(&mut self.uplinks, u, |u| (&u.host, &u.nic)).map(Fact::Uplink),
            Fact::Network(n) => nested_insert(&mut self.networks, n, |n| (&n.host, &n.network)).map(Fact::Network),
            Fact::Vnic(v) => {
                let moved = self.vnic(&v.vm, &v.nic).map(|o| (o.host != v.host || o.network != v.network, o));
                match moved {
                    Some((false, _)) => {}
                    Some((true, o)) => {
                        let (h, n, vm, nic) = (o.host.clone(), o.network.clone(), o.vm.clone(), o.nic.clone());
                        self.unindex(&h, &n, vm, nic);
                        self.index(&v);
                    }
                    None => self.index(&v),
                }
                nested_insert(&mut self.vnics, v, |v| (&v.vm, &v.nic)).map(Fact::Vnic)
            }
        };
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes the fact with this key; returns it.
    pub(crate) fn remove(&mut self, key: &FactKey) -> Option<Fact> {
        let old = match key {
            FactKey::Host { host } => self.hosts.remove(host).map(Fact::Host),
            FactKey::Uplink { host, nic } => nested_remove(&mut self.uplinks, host, nic).map(Fact::Uplink),
            FactKey::Network { host, network } => nested_remove(&mut self.networks, host, network).map(Fact::Network),
            FactKey::Vnic { vm, nic } => {
                let old = nested_remove(&mut self.vnics, vm, nic);
                if let Some(o) = &old {
                    self.unindex(&o.host, &o.network, o.vm.clone(), o.nic.clone());
                }
                old.map(Fact::Vnic)
            }
        };
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    fn index(&mut self, v: &VnicFact) {
        let key = (v.vm.clone(), v.nic.clone());
        match self.vnics_on.get_mut(&v.host).and_then(|m| m.get_mut(&v.network)) {
            Some(set) => {
                set.insert(key);
            }
            None => {
                self.vnics_on.entry(v.host.clone()).or_default().entry(v.network.clone()).or_default().insert(key);
            }
        }
    }

    fn unindex(&mut self, host: &str, network: &str, vm: String, nic: String) {
        if let Some(inner) = self.vnics_on.get_mut(host) {
            if let Some(set) = inner.get_mut(network) {
                set.remove(&(vm, nic));
                if set.is_empty() {
                    inner.remove(network);
                }
            }
            if inner.is_empty() {
                self.vnics_on.remove(host);
            }
        }
    }
}
