//! Facts: what a hypervisor tells us, each with a stable key so it can be added, changed or
//! removed. Adapters map vendor data into these; the session diffs them into `Learnt` events;
//! the projector folds them into desired VLAN state.
//!
//! Facts are the bulk of the log's events and of a snapshot, so their strings are
//! [`CompactString`]s: the ids and names hypervisors use (`vm-42`, `4000`, a MAC, `host-12`,
//! `vmnic0`, `dvportgroup-12`) fit inline in 24 bytes, and decoding a fact from the log or a
//! snapshot, cloning it or dropping it allocates nothing for them; longer ones (a XenAPI uuid)
//! live on the heap as a `String`'s would. The stored bytes are a string's either way.

use std::collections::BTreeMap;
use std::fmt;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::ids::{SwitchPort, VlanId, VlanRange};

/// A hypervisor host (ESXi host, XenServer host).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostFact {
    /// Stable id inside its manager (vSphere moref `host-12`, XenAPI host uuid).
    pub host: CompactString,
    /// Human name (`esx-01.lab`).
    pub name: CompactString,
}

/// Where the tie between a host NIC and a switch port came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NeighbourSource {
    /// CDP as reported by the hypervisor.
    Cdp,
    /// LLDP as reported by the hypervisor.
    Lldp,
    /// The switch's own LLDP neighbour table.
    SwitchLldp,
    /// Static topology configuration.
    Static,
    /// The switch's MAC table: the NIC's MAC was seen on one port only. Appended last: bincode
    /// stores the variant index.
    MacTable,
}

impl fmt::Display for NeighbourSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NeighbourSource::Cdp => "hypervisor CDP",
            NeighbourSource::Lldp => "hypervisor LLDP",
            NeighbourSource::SwitchLldp => "switch LLDP",
            NeighbourSource::Static => "static topology",
            NeighbourSource::MacTable => "switch MAC table",
        })
    }
}

/// A physical uplink NIC of a host and, when known, the switch port it is cabled to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UplinkFact {
    pub host: CompactString,
    /// Device name on the host (`vmnic0`, `eth1`).
    pub nic: CompactString,
    pub mac: Option<CompactString>,
    /// The neighbour port, `None` while unknown.
    pub port: Option<SwitchPort>,
    pub source: Option<NeighbourSource>,
}

/// The VLANs a network / port group carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VlanSpec {
    /// No tag: the network rides the port's native VLAN and needs nothing configured.
    Untagged,
    /// One VLAN.
    Access(VlanId),
    /// Every VLAN of these ranges (vSphere VLAN 4095 on a standard switch is `Trunk(1-4094)`).
    Trunk(Vec<VlanRange>),
}

impl VlanSpec {
    pub fn vlans(&self) -> impl Iterator<Item = VlanId> + '_ {
        let (single, ranges): (Option<VlanId>, &[VlanRange]) = match self {
            VlanSpec::Untagged => (None, &[]),
            VlanSpec::Access(v) => (Some(*v), &[]),
            VlanSpec::Trunk(r) => (None, r.as_slice()),
        };
        single.into_iter().chain(ranges.iter().flat_map(|r| r.iter()))
    }
}

impl fmt::Display for VlanSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VlanSpec::Untagged => f.write_str("untagged"),
            VlanSpec::Access(v) => write!(f, "vlan {v}"),
            VlanSpec::Trunk(r) => {
                f.write_str("trunk ")?;
                for (i, r) in r.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{r}")?;
                }
                Ok(())
            }
        }
    }
}

/// A network / port group as seen on one host, with the host uplinks it uses.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NetworkFact {
    pub host: CompactString,
    /// Stable id (standard port group name, DVS port group key, XenAPI network uuid).
    pub network: CompactString,
    pub name: CompactString,
    pub vlan: VlanSpec,
    /// Uplink NIC device names on `host` that carry this network.
    pub uplinks: Vec<CompactString>,
}

/// A VM's virtual NIC.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VnicFact {
    /// Stable VM id (moref `vm-42`, XenAPI VM uuid).
    pub vm: CompactString,
    pub vm_name: CompactString,
    /// Stable NIC id within the VM (device key `4000`, VIF device `0`).
    pub nic: CompactString,
    pub mac: CompactString,
    /// The host the VM runs on.
    pub host: CompactString,
    /// The `NetworkFact::network` it is attached to.
    pub network: CompactString,
    pub connected: bool,
    pub powered_on: bool,
}

/// One fact of any kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Fact {
    Host(HostFact),
    Uplink(UplinkFact),
    Network(NetworkFact),
    Vnic(VnicFact),
}

/// The stable identity of a fact within one hypervisor.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FactKey {
    Host { host: CompactString },
    Uplink { host: CompactString, nic: CompactString },
    Network { host: CompactString, network: CompactString },
    Vnic { vm: CompactString, nic: CompactString },
}

impl Fact {
    pub fn key(&self) -> FactKey {
        match self {
            Fact::Host(h) => FactKey::Host { host: h.host.clone() },
            Fact::Uplink(u) => FactKey::Uplink { host: u.host.clone(), nic: u.nic.clone() },
            Fact::Network(n) => FactKey::Network { host: n.host.clone(), network: n.network.clone() },
            Fact::Vnic(v) => FactKey::Vnic { vm: v.vm.clone(), nic: v.nic.clone() },
        }
    }
}

impl fmt::Display for FactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FactKey::Host { host } => write!(f, "host {host}"),
            FactKey::Uplink { host, nic } => write!(f, "uplink {host}/{nic}"),
            FactKey::Network { host, network } => write!(f, "network {network} on {host}"),
            FactKey::Vnic { vm, nic } => write!(f, "vnic {vm}/{nic}"),
        }
    }
}

/// One explicit change to the facts of a hypervisor.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Change {
    /// Add the fact, or replace the fact with the same key.
    Upsert(Fact),
    /// Remove the fact with this key.
    Remove(FactKey),
}

impl Change {
    pub fn key(&self) -> FactKey {
        match self {
            Change::Upsert(f) => f.key(),
            Change::Remove(k) => k.clone(),
        }
    }
}

/// The changes that turn `old` into `new`, in key order: an upsert for every added or changed
/// fact, a removal for every key that is gone. Adapters use it to turn two snapshots of vendor
/// state into one explicit delta.
pub fn diff(old: &BTreeMap<FactKey, Fact>, new: &BTreeMap<FactKey, Fact>) -> Vec<Change> {
    let mut out: Vec<Change> = new
        .iter()
        .filter(|(k, f)| old.get(*k) != Some(*f))
        .map(|(_, f)| Change::Upsert(f.clone()))
        .chain(old.keys().filter(|k| !new.contains_key(*k)).map(|k| Change::Remove(k.clone())))
        .collect();
    out.sort_by_key(Change::key);
    out
}
