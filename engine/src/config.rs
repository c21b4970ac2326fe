//! Engine policy and configuration: grace periods, what counts towards desired state, the
//! mass-removal guard, the snapshot interval and static topology links.
//!
//! [`Policy`] is the part the projector folds with (it decides desired state, so replay must use
//! the same one); the rest drives sessions and the runtime.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::{HypervisorId, SwitchPort};
use crate::topology::TopologyEntry;

/// The default grace period: how long a lost hypervisor's facts are kept.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(180);

/// The longest grace period accepted (one week): long enough for any outage an operator would
/// ride out, short enough that milliseconds of it never overflow.
pub const MAX_GRACE_SECS: u64 = 604_800;

/// A host NIC to switch port tie given by configuration. It overrides whatever the adapter
/// reports as the NIC's neighbour (static wins).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticLink {
    pub hypervisor: HypervisorId,
    /// The host's stable id as the adapter reports it (`HostFact::host`: vSphere moref,
    /// XenAPI host uuid).
    pub host: String,
    /// Uplink device name on the host (`vmnic0`, `eth1`).
    pub nic: String,
    pub port: SwitchPort,
}

/// What puts a VLAN on a port (the projector's rules beyond the fixed one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Powered-off VMs count too (their vNICs count whatever their connected flag: a
    /// powered-off VM reports none). Off by default.
    pub count_powered_off: bool,
    /// Every network puts its VLANs on its uplinks' ports, with or without VMs (reasons with
    /// `vnic: None`). Off by default.
    pub count_vmless_networks: bool,
    /// Static topology: overrides adapter-reported neighbours.
    pub static_links: Vec<StaticLink>,
}

/// The guard against a resync that would wipe out a hypervisor's facts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MassRemoval {
    /// Largest share (0.0..=1.0) of a hypervisor's known facts one resync may remove.
    pub share: f64,
    /// Below this many removals the guard never trips (small hypervisors change wholesale).
    pub min_facts: usize,
}

impl Default for MassRemoval {
    fn default() -> Self {
        Self { share: 0.5, min_facts: 10 }
    }
}

impl MassRemoval {
    /// Whether removing `would_remove` of `known` facts at once must be held back.
    pub fn trips(&self, would_remove: usize, known: usize) -> bool {
        would_remove >= self.min_facts.max(1) && (would_remove as f64) > self.share * known as f64
    }
}

/// The engine's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Grace period for every hypervisor without its own, in seconds (default 180).
    pub grace_secs: u64,
    /// Per-hypervisor grace periods, in seconds.
    pub grace_secs_per_hypervisor: BTreeMap<HypervisorId, u64>,
    pub policy: Policy,
    /// Every `[[topology]]` entry; those by id are also in [`Policy::static_links`] (the
    /// projector folds them), those by name or MAC the session resolves
    /// ([`crate::topology`]).
    pub topology: Vec<TopologyEntry>,
    pub mass_removal: MassRemoval,
    /// A projector snapshot is saved every this many events (0: never).
    pub snapshot_every: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grace_secs: DEFAULT_GRACE.as_secs(),
            grace_secs_per_hypervisor: BTreeMap::new(),
            policy: Policy::default(),
            topology: Vec::new(),
            mass_removal: MassRemoval::default(),
            snapshot_every: 10_000,
        }
    }
}

impl Config {
    /// The grace period of `hypervisor`.
    pub fn grace_for(&self, hypervisor: &HypervisorId) -> Duration {
        Duration::from_secs(self.grace_secs_per_hypervisor.get(hypervisor).copied().unwrap_or(self.grace_secs))
    }

    /// Checks the values that have a valid range.
    pub fn validate(&self) -> Result<()> {
        let grace_ok = |g: u64| (1..=MAX_GRACE_SECS).contains(&g);
        if !grace_ok(self.grace_secs) {
            return Err(Error::Config(format!(
                "grace_secs is {}, it must be 1 to {MAX_GRACE_SECS} seconds (one week)",
                self.grace_secs
            )));
        }
        if let Some((h, g)) = self.grace_secs_per_hypervisor.iter().find(|(_, g)| !grace_ok(**g)) {
            return Err(Error::Config(format!(
                "the grace period of {h} is {g} s, it must be 1 to {MAX_GRACE_SECS} seconds (one week)"
            )));
        }
        if !(0.0..=1.0).contains(&self.mass_removal.share) {
            return Err(Error::Config(format!(
                "mass_removal.share is {}, it must be between 0.0 and 1.0",
                self.mass_removal.share
            )));
        }
        let mut seen = BTreeMap::new();
        for l in &self.policy.static_links {
            if let Some(other) = seen.insert((&l.hypervisor, &l.host, &l.nic), &l.port) {
                if other != &l.port {
                    return Err(Error::Config(format!(
                        "static link for {} {}/{} is given twice ({} and {})",
                        l.hypervisor, l.host, l.nic, other, l.port
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::default();
        assert_eq!(c.grace_for(&HypervisorId::new("x").unwrap()), Duration::from_secs(180));
        assert!(!c.policy.count_powered_off);
        assert!(!c.policy.count_vmless_networks);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn per_hypervisor_grace_overrides_the_default() {
        let mut c = Config::default();
        let h = HypervisorId::new("xen217").unwrap();
        c.grace_secs_per_hypervisor.insert(h.clone(), 30);
        assert_eq!(c.grace_for(&h), Duration::from_secs(30));
    }

    #[test]
    fn mass_removal_guard_trips_only_above_share_and_minimum() {
        let g = MassRemoval { share: 0.5, min_facts: 10 };
        assert!(!g.trips(5, 6));
        assert!(!g.trips(50, 100));
        assert!(g.trips(51, 100));
    }

    #[test]
    fn a_grace_of_zero_or_beyond_a_week_is_refused() {
        for g in [0, MAX_GRACE_SECS + 1, 18_446_744_073_709_552] {
            assert!(Config { grace_secs: g, ..Config::default() }.validate().is_err(), "{g}");
            let mut c = Config::default();
            c.grace_secs_per_hypervisor.insert(HypervisorId::new("x").unwrap(), g);
            assert!(c.validate().unwrap_err().to_string().contains("grace period of x"), "{g}");
        }
    }

    #[test]
    fn a_share_above_one_is_refused() {
        let c = Config { mass_removal: MassRemoval { share: 1.5, min_facts: 1 }, ..Config::default() };
        assert!(c.validate().is_err());
    }
}
