//! Desired state: for each switch port, the VLANs it must carry and why.
//!
//! A VLAN is desired on a port while at least one [`Reason`] holds. The projector maintains this
//! incrementally; the reconcile planner reads it per switch.

use std::collections::{BTreeMap, BTreeSet};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::ids::{HypervisorId, SwitchPort, VlanId};

/// A VM NIC that needs a VLAN.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VnicRef {
    pub vm: CompactString,
    pub vm_name: CompactString,
    pub nic: CompactString,
}

/// Why a VLAN is on a port: this hypervisor's host has a network with that VLAN on an uplink
/// cabled to the port, and (unless VM-less networks count) this VM NIC is on it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Reason {
    pub hypervisor: HypervisorId,
    pub host: CompactString,
    pub network: CompactString,
    pub vnic: Option<VnicRef>,
}

/// The VLANs of one port, each with the reasons that hold it there.
pub type PortVlans = imbl::OrdMap<VlanId, BTreeSet<Reason>>;

/// The desired VLAN membership of every port netfold has a reason for.
///
/// A persistent map: a clone shares every port with the original and costs O(1), and a change
/// to a clone copies only the path to the port it changes. So the engine publishes each new
/// desired state as a clone of the one it maintains, while readers keep older ones, and never
/// copies the whole state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub ports: imbl::OrdMap<SwitchPort, PortVlans>,
}

impl Desired {
    /// One switch's ports (a range of the map: other switches' ports are not visited).
    pub fn ports_of<'a>(&'a self, switch: &'a str) -> impl Iterator<Item = (&'a SwitchPort, &'a PortVlans)> + 'a {
        let first = SwitchPort { switch: switch.to_string(), port: String::new() };
        self.ports.range(first..).take_while(move |(p, _)| p.switch == switch)
    }

    /// The VLAN sets of one switch's ports, keyed by port name.
    pub fn vlans_for(&self, switch: &str) -> BTreeMap<String, BTreeSet<VlanId>> {
        self.ports_of(switch).map(|(p, vlans)| (p.port.clone(), vlans.keys().copied().collect())).collect()
    }

    /// The reasons for `vlan` on `port`; empty when the VLAN is not desired there.
    pub fn why(&self, port: &SwitchPort, vlan: VlanId) -> Vec<&Reason> {
        self.ports.get(port).and_then(|v| v.get(&vlan)).map(|r| r.iter().collect()).unwrap_or_default()
    }
}
