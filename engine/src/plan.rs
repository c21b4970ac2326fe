//! The reconcile planner: a pure function from (desired, observed, owned ledger, policy) to a
//! [`Plan`] of switch operations. No IO, no clock, no randomness: the reconciler's async shell
//! reads the switch and the ledger, calls [`plan`], and executes the result.
//!
//! Rules, in the order they are applied:
//! - **Policy first**: excluded ports get no operation; VLANs outside the allowed ranges are
//!   neither added nor removed (desired ones are listed in [`Plan::refused`]).
//! - **Ownership**: a VLAN is removed only if the ledger says netfold put it there. An operator's
//!   VLAN stays even when nothing needs it.
//! - **Blast-radius guard**: if more removals are due than [`Policy::max_removals`], none is
//!   planned and [`Plan::held`] says why; additions still go ahead.
//! - **Make before break**: every addition comes before every removal.
//! - Ledger entries for VLANs no longer on their port (and not being re-added) are returned in
//!   [`Plan::forget`] so a later operator edit is never mistaken for netfold's own.
//!
//! [`settle`] is the other pure half of ownership: write-ahead intents (an `AddVlan` recorded
//! before it was sent, whose reply never came) are settled against what the switch shows —
//! present → owned, absent → dropped once no late reply can still land (see
//! docs/adr/0004-write-ahead-ownership.md).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::event::UnixMs;
use crate::ids::{VlanId, VlanRange};
use crate::port::PortName;
use crate::switch::{Observed, Op};

/// Per-port VLAN sets, keyed by port name (desired, observed, owned all use this shape).
pub type PortSets = BTreeMap<PortName, BTreeSet<VlanId>>;

/// Write-ahead intents: per port, each VLAN netfold is adding (or was, when it crashed or the
/// reply timed out), with the time the intent was made durable.
pub type Intents = BTreeMap<PortName, BTreeMap<VlanId, UnixMs>>;

/// What the operator allows netfold to do on one switch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// VLANs netfold may add or remove; empty means every VLAN (1..=4094).
    pub allowed: Vec<VlanRange>,
    /// The only ports netfold configures (the ones facing hypervisor hosts); empty means every
    /// port desired state names.
    pub managed_ports: BTreeSet<PortName>,
    /// Ports netfold never touches, even when listed in `managed_ports`.
    pub excluded_ports: BTreeSet<PortName>,
    /// The most removals one cycle may plan; above it nothing is removed.
    pub max_removals: usize,
    /// Plan and log, apply nothing.
    pub dry_run: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            allowed: Vec::new(),
            managed_ports: BTreeSet::new(),
            excluded_ports: BTreeSet::new(),
            max_removals: 64,
            dry_run: false,
        }
    }
}

impl Policy {
    /// Whether netfold may touch `vlan` at all.
    pub fn allows(&self, vlan: VlanId) -> bool {
        self.allowed.is_empty() || self.allowed.iter().any(|r| r.contains(vlan))
    }

    /// Whether netfold may touch `port` at all.
    pub fn manages(&self, port: &PortName) -> bool {
        !self.excluded_ports.contains(port) && (self.managed_ports.is_empty() || self.managed_ports.contains(port))
    }

    /// Why `vlan` may not be configured on `port`, a port this policy does not manage.
    fn port_refusal(&self, port: &PortName, vlan: VlanId) -> Refusal {
        let port = port.clone();
        if self.excluded_ports.contains(&port) {
            Refusal::ExcludedPort { port, vlan }
        } else {
            Refusal::UnmanagedPort { port, vlan }
        }
    }
}

/// Why a desired VLAN is not planned.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Refusal {
    /// The VLAN is outside the switch's allowed ranges.
    OutsideAllowed { port: PortName, vlan: VlanId },
    /// The port is excluded by policy.
    ExcludedPort { port: PortName, vlan: VlanId },
    /// The port is not one of the switch's managed ports.
    UnmanagedPort { port: PortName, vlan: VlanId },
}

impl Refusal {
    pub fn port(&self) -> &PortName {
        match self {
            Refusal::OutsideAllowed { port, .. }
            | Refusal::ExcludedPort { port, .. }
            | Refusal::UnmanagedPort { port, .. } => port,
        }
    }

    pub fn vlan(&self) -> VlanId {
        match self {
            Refusal::OutsideAllowed { vlan, .. }
            | Refusal::ExcludedPort { vlan, .. }
            | Refusal::UnmanagedPort { vlan, .. } => *vlan,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::OutsideAllowed { port, vlan } => {
                write!(f, "VLAN {vlan} on {port} is desired but outside the allowed VLAN ranges")
            }
            Refusal::ExcludedPort { port, vlan } => {
                write!(f, "VLAN {vlan} on {port} is desired but the port is excluded")
            }
            Refusal::UnmanagedPort { port, vlan } => {
                write!(f, "VLAN {vlan} on {port} is desired but the port is not in managed_ports")
            }
        }
    }
}

/// The desired VLANs a plan left out because they are outside the allowed ranges, per port,
/// as `100-199,300`: how a trunk wider than `allowed_vlans` is clipped (vSphere guest tagging,
/// VLAN 4095, arrives as a trunk of 1-4094). Pure; the reconciler logs it when it changes.
pub fn clipped(refused: &[Refusal]) -> BTreeMap<String, String> {
    let mut per_port: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    for r in refused {
        if let Refusal::OutsideAllowed { port, vlan } = r {
            per_port.entry(port.to_string()).or_default().push(vlan.get());
        }
    }
    per_port
        .into_iter()
        .map(|(port, mut vlans)| {
            vlans.sort_unstable();
            vlans.dedup();
            let mut ranges: Vec<(u16, u16)> = Vec::new();
            for v in vlans {
                match ranges.last_mut() {
                    Some((_, last)) if *last + 1 == v => *last = v,
                    _ => ranges.push((v, v)),
                }
            }
            let text: Vec<String> =
                ranges.iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
            (port, text.join(","))
        })
        .collect()
}

/// Removals withheld by the blast-radius guard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The removals that were due (none of them is in the plan).
    pub removals: Vec<Op>,
    pub cap: usize,
}

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} removals are due but the cap is {} per cycle: nothing is removed until an operator raises \
             max_removals or the desired state changes",
            self.removals.len(),
            self.cap
        )
    }
}

/// What one reconcile cycle should do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Operations to apply, additions first, then removals; each group ordered by port, VLAN.
    pub ops: Vec<Op>,
    /// Desired memberships policy does not let netfold configure.
    pub refused: Vec<Refusal>,
    /// Set when the removal cap withheld every removal.
    pub held: Option<Held>,
    /// Ledger entries to drop: owned VLANs that are no longer on their port.
    pub forget: Vec<(PortName, VlanId)>,
    /// Copied from the policy: the shell must apply nothing.
    pub dry_run: bool,
}

impl Plan {
    /// No operation to apply (refusals and held removals may still be reported).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Plans one cycle. Pure: the same inputs always give the same plan.
pub fn plan(desired: &PortSets, observed: &Observed, owned: &PortSets, policy: &Policy) -> Plan {
    let empty = BTreeSet::new();
    let ports: BTreeSet<&PortName> = desired.keys().chain(owned.keys()).collect();
    let mut adds = Vec::new();
    let mut removes = Vec::new();
    let mut refused = Vec::new();
    let mut forget = Vec::new();
    for port in ports {
        let want = desired.get(port).unwrap_or(&empty);
        if !policy.manages(port) {
            refused.extend(want.iter().map(|&vlan| policy.port_refusal(port, vlan)));
            continue;
        }
        let have = observed.get(port).unwrap_or(&empty);
        let mine = owned.get(port).unwrap_or(&empty);
        // Sorted-set merges (linear), not a lookup per VLAN: the steady state is the common case.
        for &vlan in want.difference(have) {
            if policy.allows(vlan) {
                adds.push(Op::AddVlan { port: port.clone(), vlan });
            }
        }
        if !policy.allowed.is_empty() {
            refused.extend(
                want.iter()
                    .filter(|v| !policy.allows(**v))
                    .map(|&vlan| Refusal::OutsideAllowed { port: port.clone(), vlan }),
            );
        }
        for &vlan in mine.difference(want) {
            if have.contains(&vlan) {
                if policy.allows(vlan) {
                    removes.push(Op::RemoveVlan { port: port.clone(), vlan });
                }
            } else {
                forget.push((port.clone(), vlan));
            }
        }
        for &vlan in mine.intersection(want) {
            // Owned and desired but gone from the port, and policy will not put it back.
            if !have.contains(&vlan) && !policy.allows(vlan) {
                forget.push((port.clone(), vlan));
            }
        }
    }
    let held = if removes.len() > policy.max_removals {
        Some(Held { removals: std::mem::take(&mut removes), cap: policy.max_removals })
    } else {
        None
    };
    adds.extend(removes);
    Plan { ops: adds, refused, held, forget, dry_run: policy.dry_run }
}

/// What settling the unresolved intents against the switch decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settlement {
    /// On the switch: netfold's add landed, so the VLAN is netfold's (owned). With the intent's
    /// time.
    pub claimed: Vec<(PortName, VlanId, UnixMs)>,
    /// Not on the switch and older than the settle time: the add never landed (dropped).
    pub dropped: Vec<(PortName, VlanId, UnixMs)>,
    /// The earliest time a still-unresolved intent (absent, younger than the settle time: a late
    /// reply could still land) may be dropped; `None` when none is left.
    pub recheck_at: Option<UnixMs>,
}

/// Settles `intents` against `observed` at `now`: present → claimed; absent for at least
/// `settle_ms` since the intent → dropped; absent and younger → left for a later cycle (a request
/// the switch has not carried out yet may still land). Pure.
pub fn settle(intents: &Intents, observed: &Observed, now: UnixMs, settle_ms: u64) -> Settlement {
    let mut out = Settlement::default();
    let empty = BTreeSet::new();
    for (port, vlans) in intents {
        let have = observed.get(port).unwrap_or(&empty);
        for (&vlan, &at) in vlans {
            if have.contains(&vlan) {
                out.claimed.push((port.clone(), vlan, at));
            } else if now.saturating_sub(at) >= settle_ms {
                out.dropped.push((port.clone(), vlan, at));
            } else {
                let due = at.saturating_add(settle_ms);
                out.recheck_at = Some(out.recheck_at.map_or(due, |r: UnixMs| r.min(due)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_tagging_trunk_is_clipped_to_the_allowed_ranges_and_summarised() {
        let want: PortSets = [(p("eth1"), (1..=4094).map(v).collect())].into();
        let policy = Policy { allowed: vec!["100-199".parse().unwrap(), "300".parse().unwrap()], ..Policy::default() };
        let p = plan(&want, &PortSets::new(), &PortSets::new(), &policy);
        assert_eq!(p.ops.len(), 101, "only the allowed VLANs are added");
        assert_eq!(clipped(&p.refused), [("eth1".to_string(), "1-99,200-299,301-4094".to_string())].into());
        assert!(clipped(&plan(&want, &PortSets::new(), &PortSets::new(), &Policy::default()).refused).is_empty());
    }
    use proptest::prelude::*;

    fn v(n: u16) -> VlanId {
        VlanId::new(n).unwrap()
    }

    fn p(s: &str) -> PortName {
        PortName::parse(crate::port::Grammar::Memory, s).unwrap()
    }

    fn sets(items: &[(&str, &[u16])]) -> PortSets {
        items.iter().map(|(port, vs)| (p(port), vs.iter().map(|&n| v(n)).collect())).collect()
    }

    fn add(port: &str, n: u16) -> Op {
        Op::AddVlan { port: p(port), vlan: v(n) }
    }

    fn rm(port: &str, n: u16) -> Op {
        Op::RemoveVlan { port: p(port), vlan: v(n) }
    }

    #[test]
    fn intents_settle_present_to_owned_and_absent_to_dropped_after_the_settle_time() {
        let intents: Intents =
            [(p("e1"), [(v(10), 1_000), (v(11), 1_000), (v(12), 9_000)].into_iter().collect())].into();
        let observed = sets(&[("e1", &[10])]);
        let s = settle(&intents, &observed, 10_000, 5_000);
        assert_eq!(s.claimed, vec![(p("e1"), v(10), 1_000)]);
        assert_eq!(s.dropped, vec![(p("e1"), v(11), 1_000)]);
        assert_eq!(s.recheck_at, Some(14_000), "the young absent intent waits for a late reply");
    }

    #[test]
    fn adds_missing_and_removes_only_owned_undesired() {
        let desired = sets(&[("e1", &[10, 20])]);
        let observed = sets(&[("e1", &[20, 30, 40])]);
        let owned = sets(&[("e1", &[20, 30])]);
        let p = plan(&desired, &observed, &owned, &Policy::default());
        assert_eq!(p.ops, vec![add("e1", 10), rm("e1", 30)]);
        assert!(p.held.is_none() && p.refused.is_empty() && p.forget.is_empty());
    }

    #[test]
    fn operator_vlan_is_never_removed() {
        let p = plan(&PortSets::new(), &sets(&[("e1", &[99])]), &PortSets::new(), &Policy::default());
        assert!(p.ops.is_empty());
    }

    #[test]
    fn additions_come_before_removals_across_ports() {
        // A VM moved from e2 to e1: the new port gets its VLAN before the old one loses it.
        let desired = sets(&[("e1", &[100])]);
        let observed = sets(&[("e1", &[]), ("e2", &[100])]);
        let owned = sets(&[("e2", &[100])]);
        let p = plan(&desired, &observed, &owned, &Policy::default());
        assert_eq!(p.ops, vec![add("e1", 100), rm("e2", 100)]);
    }

    #[test]
    fn removal_cap_holds_every_removal_and_says_why() {
        let observed = sets(&[("e1", &[1, 2, 3]), ("e2", &[])]);
        let owned = sets(&[("e1", &[1, 2, 3])]);
        let desired = sets(&[("e2", &[7])]);
        let policy = Policy { max_removals: 2, ..Policy::default() };
        let p = plan(&desired, &observed, &owned, &policy);
        assert_eq!(p.ops, vec![add("e2", 7)]);
        let held = p.held.unwrap();
        assert_eq!(held.removals.len(), 3);
        assert!(held.to_string().contains("3 removals are due but the cap is 2"));
    }

    #[test]
    fn policy_refuses_outside_ranges_and_excluded_ports() {
        let desired = sets(&[("e1", &[10, 500]), ("mgmt", &[10])]);
        let observed = sets(&[("e1", &[600]), ("mgmt", &[1])]);
        let owned = sets(&[("e1", &[600]), ("mgmt", &[1])]);
        let policy =
            Policy { allowed: vec!["1-100".parse().unwrap()], excluded_ports: [p("mgmt")].into(), ..Policy::default() };
        let pl = plan(&desired, &observed, &owned, &policy);
        assert_eq!(pl.ops, vec![add("e1", 10)]);
        assert_eq!(
            pl.refused,
            vec![
                Refusal::OutsideAllowed { port: p("e1"), vlan: v(500) },
                Refusal::ExcludedPort { port: p("mgmt"), vlan: v(10) }
            ]
        );
    }

    #[test]
    fn only_managed_ports_are_configured_and_exclusion_wins() {
        let desired = sets(&[("e1", &[10]), ("e2", &[20]), ("e3", &[30])]);
        let observed = sets(&[("e1", &[]), ("e2", &[]), ("e3", &[])]);
        let policy =
            Policy { managed_ports: [p("e1"), p("e3")].into(), excluded_ports: [p("e3")].into(), ..Policy::default() };
        let pl = plan(&desired, &observed, &PortSets::new(), &policy);
        assert_eq!(pl.ops, vec![add("e1", 10)]);
        assert_eq!(
            pl.refused,
            vec![
                Refusal::UnmanagedPort { port: p("e2"), vlan: v(20) },
                Refusal::ExcludedPort { port: p("e3"), vlan: v(30) }
            ]
        );
        assert!(pl.refused[0].to_string().contains("not in managed_ports"));
    }

    #[test]
    fn owned_vlan_gone_from_the_port_is_forgotten() {
        let pl = plan(&PortSets::new(), &sets(&[("e1", &[])]), &sets(&[("e1", &[5])]), &Policy::default());
        assert!(pl.ops.is_empty());
        assert_eq!(pl.forget, vec![(p("e1"), v(5))]);
    }

    #[test]
    fn dry_run_is_carried_into_the_plan() {
        let policy = Policy { dry_run: true, ..Policy::default() };
        let p = plan(&sets(&[("e1", &[3])]), &PortSets::new(), &PortSets::new(), &policy);
        assert!(p.dry_run);
        assert_eq!(p.ops, vec![add("e1", 3)]);
    }

    // ---- properties ----

    const PORTS: [&str; 4] = ["e1", "e2", "e3", "mgmt"];

    fn port_sets() -> impl Strategy<Value = PortSets> {
        proptest::collection::btree_map(
            proptest::sample::select(&PORTS[..]).prop_map(p),
            proptest::collection::btree_set((1u16..=40).prop_map(|n| VlanId::new(n).unwrap()), 0..12),
            0..4,
        )
    }

    fn policies() -> impl Strategy<Value = Policy> {
        (proptest::option::of((1u16..=40, 0u16..=20)), any::<bool>(), any::<bool>()).prop_map(
            |(range, exclude, only)| Policy {
                allowed: range
                    .map(|(a, len)| vec![VlanRange::new(v(a), v((a + len).min(4094))).unwrap()])
                    .unwrap_or_default(),
                managed_ports: if only { [p("e1"), p("mgmt")].into() } else { BTreeSet::new() },
                excluded_ports: if exclude { [p("mgmt")].into() } else { BTreeSet::new() },
                max_removals: usize::MAX,
                dry_run: false,
            },
        )
    }

    /// Applies a plan to a model switch and ledger, as a perfect switch would.
    fn execute(p: &Plan, observed: &mut Observed, owned: &mut PortSets) {
        for op in &p.ops {
            let port = observed.entry(op.port().clone()).or_default();
            match op {
                Op::AddVlan { vlan, .. } => {
                    if port.insert(*vlan) {
                        owned.entry(op.port().clone()).or_default().insert(*vlan);
                    }
                }
                Op::RemoveVlan { vlan, .. } => {
                    port.remove(vlan);
                    owned.entry(op.port().clone()).or_default().remove(vlan);
                }
            }
        }
        for (port, vlan) in &p.forget {
            owned.entry(port.clone()).or_default().remove(vlan);
        }
    }

    proptest! {
        #[test]
        fn converges_in_one_cycle_and_second_plan_is_empty(
            desired in port_sets(), observed in port_sets(), owned_raw in port_sets(), policy in policies()
        ) {
            // The ledger only ever holds VLANs netfold may have added; take any subset of observed.
            let owned: PortSets = owned_raw.iter().map(|(p, vs)| {
                (p.clone(), vs.intersection(observed.get(p).unwrap_or(&BTreeSet::new())).copied().collect())
            }).collect();
            let (mut obs, mut own) = (observed.clone(), owned.clone());
            let first = plan(&desired, &obs, &own, &policy);
            execute(&first, &mut obs, &mut own);
            for (port, want) in &desired {
                if !policy.manages(port) { continue; }
                let have = obs.get(port).cloned().unwrap_or_default();
                for vlan in want.iter().filter(|v| policy.allows(**v)) {
                    prop_assert!(have.contains(vlan), "{port} lacks desired {vlan}");
                }
                for vlan in own.get(port).into_iter().flatten() {
                    prop_assert!(want.contains(vlan) || !policy.allows(*vlan));
                }
            }
            let second = plan(&desired, &obs, &own, &policy);
            prop_assert!(second.ops.is_empty(), "second plan not empty: {:?}", second.ops);
            prop_assert!(second.forget.is_empty());
        }

        #[test]
        fn never_removes_unowned_and_never_plans_outside_policy(
            desired in port_sets(), observed in port_sets(), owned in port_sets(), policy in policies(),
            cap in 0usize..6
        ) {
            let policy = Policy { max_removals: cap, ..policy };
            let p = plan(&desired, &observed, &owned, &policy);
            let mut seen_remove = false;
            let removals = p.ops.iter().filter(|o| !o.is_add()).count();
            prop_assert!(removals <= cap);
            for op in &p.ops {
                prop_assert!(policy.manages(op.port()), "touched excluded {}", op.port());
                prop_assert!(policy.allows(op.vlan()), "touched disallowed {}", op.vlan());
                match op {
                    Op::RemoveVlan { port, vlan } => {
                        seen_remove = true;
                        prop_assert!(owned.get(port).is_some_and(|s| s.contains(vlan)), "removed unowned {vlan} on {port}");
                        prop_assert!(!desired.get(port).is_some_and(|s| s.contains(vlan)));
                    }
                    Op::AddVlan { .. } => prop_assert!(!seen_remove, "an add after a remove"),
                }
            }
        }
    }
}
