//! The per-hypervisor session state machine: turns an adapter's observations (and the grace
//! timer) into events. Pure: [`Session::step`] takes the input, the time and the projected
//! facts, and returns the next state, the events to append, the operator notices to log once
//! they are durable, the refused pieces and what to do with the grace timer.
//!
//! The session's state is exactly what the log says about the hypervisor
//! ([`Session::from_status`]), so it survives restarts with the log.
//!
//! ```text
//!            Inventory                Disconnected{silent_ms} / hollow inventory (+ Ask::Reread)
//!   New ─────────────────> Live ───────────────────────────────> Lost{since = last contact}
//!    ^  Connected+Learnt    ^  <──────────────────────────────────   │
//!    │                      │   Inventory: Reestablished + Learnt(diff)
//!    │                      │                                        │ grace elapsed, adapter attached:
//!    │                      │                                        │   Ask::LastAttempt, wait a window
//! Expired <─────────────────┴──────────────────────────────────────┘
//!   (Inventory: Connected + Learnt)   grace elapsed (after the last attempt failed or its window): Expired
//! ```
//!
//! A full inventory whose removals trip the mass-removal guard keeps the facts and appends
//! `RemovalHeld`; the hold ends with `RemovalReleased` (an operator's release, or a later full
//! read that no longer trips the guard).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use compact_str::CompactString;

use crate::config::MassRemoval;
use crate::error::Invalid;
use crate::event::{Event, UnixMs};
use crate::fact::{Change, Fact, FactKey, HostFact, NeighbourSource, UplinkFact};
use crate::ids::{HypervisorId, Kind};
use crate::observe::{Ask, Observation, Rejected};
use crate::projector::{Facts, Held, HypervisorStatus, Status};
use crate::topology::{self, TopologyEntry};

/// Where one hypervisor's session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Session {
    /// Never connected (as far as the log knows).
    New,
    /// Connected; facts are current.
    Live,
    /// Lost at `since`; facts kept until `since + grace`.
    Lost { since: UnixMs },
    /// The grace period ran out; facts were dropped.
    Expired,
}

/// What drives a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The adapter reported something.
    Observed(Observation),
    /// A grace timer fired (possibly stale: the session checks the time itself).
    GraceElapsed,
}

/// Whether the engine can ask the adapter for one last attempt before the grace runs out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LastAttempt {
    /// No adapter is attached (replay, tests of the pure fold): expiry does not wait.
    Unavailable,
    /// An adapter is attached and has not been asked yet; expiry waits up to `window_ms` for
    /// the attempt.
    Due { window_ms: u64 },
    /// Asked: the next timer, or a report that the attempt failed, expires the hypervisor;
    /// an inventory before then is a return within grace.
    Asked,
}

/// What the step needs to know besides its input.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    pub hypervisor: &'a HypervisorId,
    pub kind: Kind,
    /// Now, unix ms.
    pub now: UnixMs,
    /// This hypervisor's grace period, ms.
    pub grace_ms: u64,
    /// The projected facts of this hypervisor (`None`: none known).
    pub known: Option<&'a Facts>,
    pub guard: &'a MassRemoval,
    /// The removal the guard holds back, as the log says.
    pub held: Option<Held>,
    /// An operator asked to let the held removal through: this inventory bypasses the guard.
    pub release: bool,
    pub last_attempt: LastAttempt,
    /// This hypervisor's `[[topology]]` entries: those by name or MAC are resolved here.
    pub topology: &'a [TopologyEntry],
}

/// An operator message to log once the events of the step are durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// `<Kind>:Lost connection to hypervisor <name>. Retrying...` (info)
    Lost,
    /// `<Kind>:Reestablished connection with hypervisor <name>.` (info)
    Reestablished,
    /// `<Kind>:Lost connection to hypervisor <name>. Removing learnt information.` (warn)
    Removing,
}

impl Notice {
    /// The exact operator line.
    pub fn line(self, kind: impl fmt::Display, hypervisor: &HypervisorId) -> String {
        match self {
            Notice::Lost => format!("{kind}:Lost connection to hypervisor {hypervisor}. Retrying..."),
            Notice::Reestablished => format!("{kind}:Reestablished connection with hypervisor {hypervisor}."),
            Notice::Removing => {
                format!("{kind}:Lost connection to hypervisor {hypervisor}. Removing learnt information.")
            }
        }
    }
}

/// What to do with the hypervisor's grace timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    Unchanged,
    /// Fire at this unix ms.
    Arm {
        at: UnixMs,
    },
    Cancel,
}

/// The result of one step: apply `next` only once `events` are durable.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub next: Session,
    pub events: Vec<Event>,
    pub notices: Vec<Notice>,
    pub invalid: Vec<Invalid>,
    pub timer: Timer,
    /// What to ask of the adapter once the events are durable.
    pub ask: Option<Ask>,
}

impl Step {
    fn stay(s: Session) -> Self {
        Step {
            next: s,
            events: Vec::new(),
            notices: Vec::new(),
            invalid: Vec::new(),
            timer: Timer::Unchanged,
            ask: None,
        }
    }
}

impl fmt::Display for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Session {
    /// The session as the log left it.
    pub fn from_status(status: Option<HypervisorStatus>) -> Self {
        match status.map(|s| s.status) {
            None => Session::New,
            Some(Status::Live) => Session::Live,
            Some(Status::Lost { since }) => Session::Lost { since },
            Some(Status::Expired) => Session::Expired,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Session::New => "new",
            Session::Live => "live",
            Session::Lost { .. } => "lost",
            Session::Expired => "expired",
        }
    }

    /// One transition. What it refused is recorded as a last `Refused` event.
    pub fn step(&self, input: Input, ctx: &Ctx<'_>) -> Step {
        let mut step = self.transition(input, ctx);
        let refusals: Vec<Rejected> = step.invalid.iter().filter_map(Invalid::refusal).collect();
        if !refusals.is_empty() {
            step.events.push(Event::Refused { refusals });
        }
        step
    }

    fn transition(&self, input: Input, ctx: &Ctx<'_>) -> Step {
        let known_len = ctx.known.map_or(0, Facts::len);
        let asked = ctx.last_attempt == LastAttempt::Asked;
        match (*self, input) {
            (Session::Lost { since }, Input::GraceElapsed) => {
                let at = since.saturating_add(ctx.grace_ms);
                match ctx.last_attempt {
                    _ if ctx.now < at => Step { timer: Timer::Arm { at }, ..Step::stay(*self) },
                    LastAttempt::Due { window_ms } => Step {
                        timer: Timer::Arm { at: ctx.now.saturating_add(window_ms) },
                        ask: Some(Ask::LastAttempt),
                        ..Step::stay(*self)
                    },
                    LastAttempt::Unavailable | LastAttempt::Asked => expire(*self),
                }
            }
            (s, Input::GraceElapsed) => Step { timer: Timer::Cancel, ..Step::stay(s) },

            (Session::Live, Input::Observed(Observation::Disconnected { reason, silent_ms })) => {
                lost(ctx, ctx.now.saturating_sub(silent_ms), reason, Vec::new())
            }
            // The last attempt before expiry failed: expire now rather than at the window's end.
            (Session::Lost { since }, Input::Observed(Observation::Disconnected { .. }))
                if asked && ctx.now >= since.saturating_add(ctx.grace_ms) =>
            {
                expire(*self)
            }
            (s, Input::Observed(Observation::Disconnected { .. })) => Step::stay(s),

            (Session::Live, Input::Observed(Observation::Delta { changes, rejected })) => {
                let mut invalid = adapter_rejects(ctx.hypervisor, rejected);
                let changes = validate_delta(ctx, changes, &mut invalid);
                let changes = tie_delta(ctx, changes, &mut invalid);
                let events = if changes.is_empty() { Vec::new() } else { vec![Event::Learnt { changes }] };
                Step { events, invalid, ..Step::stay(Session::Live) }
            }
            (s, Input::Observed(Observation::Delta { rejected, .. })) => {
                let mut invalid = adapter_rejects(ctx.hypervisor, rejected);
                invalid.push(Invalid::DeltaOutOfSession { hypervisor: ctx.hypervisor.clone(), session: s.name() });
                Step { invalid, ..Step::stay(s) }
            }

            (s, Input::Observed(Observation::Inventory { endpoint, facts, rejected })) => {
                let mut invalid = adapter_rejects(ctx.hypervisor, rejected);
                if known_len > 0 && matches!(s, Session::Live | Session::Lost { .. }) {
                    if let Some(what) = hollow(&facts) {
                        invalid.push(Invalid::HollowInventory {
                            hypervisor: ctx.hypervisor.clone(),
                            what,
                            known: known_len,
                        });
                        let reason = format!("inventory came back {what}");
                        let ask = Some(Ask::Reread { reason: reason.clone() });
                        return match s {
                            Session::Live => Step { ask, ..lost(ctx, ctx.now, reason, invalid) },
                            _ => Step { invalid, ask, ..Step::stay(s) },
                        };
                    }
                }
                let mut good = validate_inventory(ctx.hypervisor, facts, &mut invalid);
                tie_inventory(ctx, &mut good, &mut invalid);
                match s {
                    Session::Lost { since } if !asked && ctx.now >= since.saturating_add(ctx.grace_ms) => {
                        // The grace ran out before the timer was handled: expire, then start over.
                        let changes = diff(ctx, None, good, &mut invalid).changes;
                        let mut events = vec![Event::Expired, Event::Connected { kind: ctx.kind, endpoint }];
                        push_learnt(&mut events, changes);
                        Step { events, notices: vec![Notice::Removing], invalid, timer: Timer::Cancel, ..live() }
                    }
                    Session::Lost { since } => {
                        let mut events = vec![Event::Reestablished { outage_ms: ctx.now.saturating_sub(since) }];
                        diff(ctx, ctx.known, good, &mut invalid).push_to(ctx, &mut events);
                        Step { events, notices: vec![Notice::Reestablished], invalid, timer: Timer::Cancel, ..live() }
                    }
                    Session::Live => {
                        let mut events = Vec::new();
                        diff(ctx, ctx.known, good, &mut invalid).push_to(ctx, &mut events);
                        Step { events, invalid, ..live() }
                    }
                    Session::New | Session::Expired => {
                        let mut events = vec![Event::Connected { kind: ctx.kind, endpoint }];
                        diff(ctx, ctx.known, good, &mut invalid).push_to(ctx, &mut events);
                        Step { events, invalid, timer: Timer::Cancel, ..live() }
                    }
                }
            }
        }
    }
}

fn live() -> Step {
    Step::stay(Session::Live)
}

fn expire(s: Session) -> Step {
    Step {
        next: Session::Expired,
        events: vec![Event::Expired],
        notices: vec![Notice::Removing],
        timer: Timer::Cancel,
        ..Step::stay(s)
    }
}

/// Lost at `since` (the last contact): the grace runs from then.
fn lost(ctx: &Ctx<'_>, since: UnixMs, reason: String, invalid: Vec<Invalid>) -> Step {
    Step {
        next: Session::Lost { since },
        events: vec![Event::Lost { reason, since }],
        notices: vec![Notice::Lost],
        invalid,
        timer: Timer::Arm { at: since.saturating_add(ctx.grace_ms) },
        ask: None,
    }
}

fn push_learnt(events: &mut Vec<Event>, changes: Vec<Change>) {
    if !changes.is_empty() {
        events.push(Event::Learnt { changes });
    }
}

fn adapter_rejects(hypervisor: &HypervisorId, rejected: Vec<Rejected>) -> Vec<Invalid> {
    rejected
        .into_iter()
        .map(|r| Invalid::Adapter { hypervisor: hypervisor.clone(), what: r.what, why: r.why })
        .collect()
}

/// Why an inventory looks like the symptom of an expired session rather than real data.
fn hollow(facts: &[Fact]) -> Option<&'static str> {
    if facts.is_empty() {
        return Some("empty");
    }
    let blank = |f: &Fact| match f {
        Fact::Host(h) => h.name.is_empty(),
        Fact::Uplink(u) => u.mac.is_none() && u.port.is_none(),
        Fact::Network(n) => n.name.is_empty(),
        Fact::Vnic(v) => v.vm_name.is_empty() && v.mac.is_empty(),
    };
    facts.iter().all(blank).then_some("with every property missing")
}

/// Drops conflicting duplicates (every entry of a key that appears with different contents)
/// and collapses identical ones.
fn dedup<T: PartialEq>(
    hypervisor: &HypervisorId,
    items: Vec<T>,
    key: impl Fn(&T) -> FactKey,
    invalid: &mut Vec<Invalid>,
) -> BTreeMap<FactKey, T> {
    let mut out: BTreeMap<FactKey, T> = BTreeMap::new();
    let mut conflicts: BTreeMap<FactKey, usize> = BTreeMap::new();
    for item in items {
        let k = key(&item);
        if let Some(n) = conflicts.get_mut(&k) {
            *n += 1;
            continue;
        }
        match out.get(&k) {
            Some(existing) if *existing == item => {}
            Some(_) => {
                out.remove(&k);
                conflicts.insert(k, 2);
            }
            None => {
                out.insert(k, item);
            }
        }
    }
    for (key, count) in conflicts {
        invalid.push(Invalid::DuplicateKey { hypervisor: hypervisor.clone(), key, count });
    }
    out
}

/// The usable facts of an inventory, by key.
fn validate_inventory(
    hypervisor: &HypervisorId,
    facts: Vec<Fact>,
    invalid: &mut Vec<Invalid>,
) -> BTreeMap<FactKey, Fact> {
    let mut good = dedup(hypervisor, facts, Fact::key, invalid);
    let networks: BTreeSet<(CompactString, CompactString)> = good
        .values()
        .filter_map(|f| match f {
            Fact::Network(n) => Some((n.host.clone(), n.network.clone())),
            _ => None,
        })
        .collect();
    good.retain(|_, f| match f {
        Fact::Vnic(v) if !networks.contains(&(v.host.clone(), v.network.clone())) => {
            invalid.push(unknown_network(hypervisor, v));
            false
        }
        _ => true,
    });
    good
}

fn unknown_network(hypervisor: &HypervisorId, v: &crate::fact::VnicFact) -> Invalid {
    Invalid::UnknownNetwork {
        hypervisor: hypervisor.clone(),
        vm: v.vm.to_string(),
        nic: v.nic.to_string(),
        host: v.host.to_string(),
        network: v.network.to_string(),
    }
}

/// `uplink` as the resolved topology has it: tied to its port (`source: Static`); an uplink no
/// entry ties keeps the adapter's neighbour, except one the session itself tied before, whose
/// neighbour is unknown until the next full read.
fn tied(links: &topology::Resolved, uplink: &UplinkFact) -> UplinkFact {
    let mut u = uplink.clone();
    match links.links.get(&(u.host.clone(), u.nic.clone())) {
        Some(port) => (u.port, u.source) = (Some(port.clone()), Some(NeighbourSource::Static)),
        None if u.source == Some(NeighbourSource::Static) => (u.port, u.source) = (None, None),
        None => {}
    }
    u
}

fn topology_refusals(ctx: &Ctx<'_>, r: &topology::Resolved, invalid: &mut Vec<Invalid>) {
    invalid.extend(r.refusals.iter().map(|x| Invalid::Topology {
        hypervisor: ctx.hypervisor.clone(),
        what: x.what.clone(),
        why: x.why.clone(),
    }));
}

/// Ties the uplinks of a full inventory by the `[[topology]]` entries, refusing those that tie
/// nothing.
fn tie_inventory(ctx: &Ctx<'_>, good: &mut BTreeMap<FactKey, Fact>, invalid: &mut Vec<Invalid>) {
    if ctx.topology.is_empty() {
        return;
    }
    let hosts = good.values().filter_map(|f| match f {
        Fact::Host(h) => Some(h),
        _ => None,
    });
    let uplinks = good.values().filter_map(|f| match f {
        Fact::Uplink(u) => Some(u),
        _ => None,
    });
    let r = topology::resolve(ctx.topology, hosts, uplinks);
    topology_refusals(ctx, &r, invalid);
    for f in good.values_mut() {
        if let Fact::Uplink(u) = f {
            *u = tied(&r, u);
        }
    }
}

/// A delta that changes hosts or uplinks re-resolves the `[[topology]]` entries over the facts
/// it leaves: its uplinks are tied, and known uplinks whose tie it changes (a host renamed, a
/// MAC now on two hosts) are upserted with the new one.
fn tie_delta(ctx: &Ctx<'_>, changes: Vec<Change>, invalid: &mut Vec<Invalid>) -> Vec<Change> {
    let touches = |c: &Change| {
        matches!(c.key(), FactKey::Host { .. } | FactKey::Uplink { .. })
            && !matches!(c, Change::Remove(FactKey::Uplink { .. }))
    };
    if ctx.topology.is_empty() || !changes.iter().any(touches) {
        return changes;
    }
    let mut by_key: BTreeMap<FactKey, Change> = changes.into_iter().map(|c| (c.key(), c)).collect();
    let mut hosts: BTreeMap<&str, &HostFact> = BTreeMap::new();
    let mut uplinks: BTreeMap<(&str, &str), &UplinkFact> = BTreeMap::new();
    if let Some(k) = ctx.known {
        hosts.extend(k.hosts().map(|h| (h.host.as_str(), h)));
        uplinks.extend(k.uplinks().map(|u| ((u.host.as_str(), u.nic.as_str()), u)));
    }
    for c in by_key.values() {
        match c {
            Change::Upsert(Fact::Host(h)) => {
                hosts.insert(&h.host, h);
            }
            Change::Upsert(Fact::Uplink(u)) => {
                uplinks.insert((&u.host, &u.nic), u);
            }
            Change::Remove(FactKey::Host { host }) => {
                hosts.remove(host.as_str());
            }
            Change::Remove(FactKey::Uplink { host, nic }) => {
                uplinks.remove(&(host.as_str(), nic.as_str()));
            }
            _ => {}
        }
    }
    let r = topology::resolve(ctx.topology, hosts.into_values(), uplinks.values().copied());
    topology_refusals(ctx, &r, invalid);
    let rewritten: Vec<UplinkFact> = uplinks.into_values().map(|u| tied(&r, u)).collect();
    for u in rewritten {
        let key = FactKey::Uplink { host: u.host.clone(), nic: u.nic.clone() };
        let known = ctx.known.and_then(|k| k.uplink(&u.host, &u.nic));
        if by_key.contains_key(&key) || known != Some(&u) {
            by_key.insert(key, Change::Upsert(Fact::Uplink(u)));
        }
    }
    by_key.retain(|k, c| match (c, ctx.known.and_then(|known| known.get(k))) {
        (Change::Upsert(f), Some(old)) => !old.same_as(f),
        _ => true,
    });
    by_key.into_values().collect()
}

/// How many removal keys a `RemovalHeld` event names.
const HELD_SAMPLE: usize = 20;

/// The outcome of diffing a full inventory against the known facts.
struct Diff {
    changes: Vec<Change>,
    /// The removals the guard held back: (how many, out of how many known, the first keys).
    held: Option<(u64, u64, Vec<FactKey>)>,
}

impl Diff {
    /// Appends the events this diff means, given what the log says is held: `RemovalReleased`
    /// before the changes when a hold ends, `RemovalHeld` after them when one starts or changes.
    fn push_to(self, ctx: &Ctx<'_>, events: &mut Vec<Event>) {
        if self.held.is_none() && ctx.held.is_some() {
            let by = if ctx.release { "operator" } else { "resync" };
            events.push(Event::RemovalReleased { by: by.to_string() });
        }
        push_learnt(events, self.changes);
        if let Some((would_remove, known, sample)) = self.held {
            if ctx.held.map(|h| h.would_remove) != Some(would_remove) {
                events.push(Event::RemovalHeld { would_remove, known, sample });
            }
        }
    }
}

/// The changes that turn `known` into `good`; removals beyond the guard are held back unless
/// an operator released them.
fn diff(ctx: &Ctx<'_>, known: Option<&Facts>, good: BTreeMap<FactKey, Fact>, invalid: &mut Vec<Invalid>) -> Diff {
    let mut removes: Vec<FactKey> = known
        .map(|k| k.sorted().into_iter().map(|(key, _)| key).filter(|key| !good.contains_key(key)).collect())
        .unwrap_or_default();
    let mut changes: Vec<Change> = good
        .into_iter()
        .filter(|(key, f)| !known.and_then(|k| k.get(key)).is_some_and(|old| old.same_as(f)))
        .map(|(_, f)| Change::Upsert(f))
        .collect();
    let known_len = known.map_or(0, Facts::len);
    let mut held = None;
    if !ctx.release && ctx.guard.trips(removes.len(), known_len) {
        invalid.push(Invalid::MassRemovalHeldBack {
            hypervisor: ctx.hypervisor.clone(),
            would_remove: removes.len(),
            known: known_len,
            share_pct: (ctx.guard.share * 100.0).round() as u32,
        });
        let sample = removes.iter().take(HELD_SAMPLE).cloned().collect();
        held = Some((removes.len() as u64, known_len as u64, sample));
        removes.clear();
    }
    changes.extend(removes.into_iter().rev().map(Change::Remove));
    Diff { changes, held }
}

/// The usable changes of a delta against the projected facts.
fn validate_delta(ctx: &Ctx<'_>, changes: Vec<Change>, invalid: &mut Vec<Invalid>) -> Vec<Change> {
    let hv = ctx.hypervisor;
    let good = dedup(hv, changes, Change::key, invalid);
    let network_after = |host: &str, network: &str| {
        let key = FactKey::Network { host: host.into(), network: network.into() };
        match good.get(&key) {
            Some(Change::Upsert(_)) => true,
            Some(Change::Remove(_)) => false,
            None => ctx.known.is_some_and(|k| k.network(host, network).is_some()),
        }
    };
    let mut out = Vec::with_capacity(good.len());
    for (key, change) in &good {
        let current = ctx.known.and_then(|k| k.get(key));
        match change {
            Change::Upsert(Fact::Vnic(v)) if !network_after(&v.host, &v.network) => {
                invalid.push(unknown_network(hv, v));
            }
            Change::Upsert(f) if current.as_ref().is_some_and(|c| c.same_as(f)) => {}
            Change::Remove(k) if current.is_none() => {
                invalid.push(Invalid::UnknownRemoval { hypervisor: hv.clone(), key: k.clone() });
            }
            _ => out.push(change.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fact::{HostFact, NetworkFact, VlanSpec, VnicFact};
    use crate::ids::VlanId;

    fn hv() -> HypervisorId {
        HypervisorId::new("vc-east").unwrap()
    }

    fn net(n: &str, vlan: u16) -> Fact {
        Fact::Network(NetworkFact {
            host: "h1".into(),
            network: n.into(),
            name: n.into(),
            vlan: VlanSpec::Access(VlanId::new(vlan).unwrap()),
            uplinks: vec!["vmnic0".into()],
        })
    }

    fn vnic(vm: &str, network: &str) -> Fact {
        Fact::Vnic(VnicFact {
            vm: vm.into(),
            vm_name: vm.into(),
            nic: "4000".into(),
            mac: "00:50:56:00:00:01".into(),
            host: "h1".into(),
            network: network.into(),
            connected: true,
            powered_on: true,
        })
    }

    fn ctx<'a>(id: &'a HypervisorId, now: UnixMs, known: Option<&'a Facts>, guard: &'a MassRemoval) -> Ctx<'a> {
        Ctx {
            hypervisor: id,
            kind: Kind::VMware,
            now,
            grace_ms: 180_000,
            known,
            guard,
            held: None,
            release: false,
            last_attempt: LastAttempt::Unavailable,
            topology: &[],
        }
    }

    fn inventory(facts: Vec<Fact>) -> Input {
        Input::Observed(Observation::Inventory { endpoint: "https://vc".into(), facts, rejected: vec![] })
    }

    #[test]
    fn first_inventory_connects_and_learns_every_fact() {
        let (id, g) = (hv(), MassRemoval::default());
        let s = Session::New.step(inventory(vec![net("pg", 10), vnic("vm-1", "pg")]), &ctx(&id, 5, None, &g));
        assert_eq!(s.next, Session::Live);
        assert!(matches!(&s.events[0], Event::Connected { kind: Kind::VMware, .. }));
        assert!(matches!(&s.events[1], Event::Learnt { changes } if changes.len() == 2));
        assert!(s.invalid.is_empty());
    }

    #[test]
    fn vnic_on_unknown_network_is_refused_and_the_rest_learnt() {
        let (id, g) = (hv(), MassRemoval::default());
        let s = Session::New.step(inventory(vec![net("pg", 10), vnic("vm-1", "nope")]), &ctx(&id, 5, None, &g));
        assert!(matches!(&s.events[1], Event::Learnt { changes } if changes.len() == 1));
        assert!(matches!(&s.invalid[..], [Invalid::UnknownNetwork { network, .. }] if network == "nope"));
        let Some(Event::Refused { refusals }) = s.events.last() else { panic!("no Refused: {:?}", s.events) };
        assert_eq!(refusals.len(), 1);
        assert_eq!(refusals[0].what, "vnic vm-1/4000");
        assert!(refusals[0].why.contains("`nope` is unknown on host h1"), "{}", refusals[0].why);
    }

    #[test]
    fn every_refusal_is_recorded_after_what_was_learnt_and_a_clean_step_records_none() {
        let (id, g) = (hv(), MassRemoval::default());
        let rejected =
            vec![Rejected { what: "distributed port group \"p\" (dvportgroup-9)".into(), why: "private VLAN".into() }];
        let first = Input::Observed(Observation::Inventory {
            endpoint: "https://vc".into(),
            facts: vec![net("pg", 10)],
            rejected: rejected.clone(),
        });
        let s = Session::New.step(first, &ctx(&id, 5, None, &g));
        let names: Vec<&str> = s.events.iter().map(Event::name).collect();
        assert_eq!(names, ["Connected", "Learnt", "Refused"]);
        assert_eq!(s.events[2], Event::Refused { refusals: rejected.clone() });
        // A delta that only refuses appends only the refusal; one that refuses nothing, no Refused.
        let st = known_state();
        let known = st.facts_of(&id);
        let delta = |changes, rejected| Input::Observed(Observation::Delta { changes, rejected });
        let s = Session::Live.step(delta(vec![], rejected.clone()), &ctx(&id, 6, known, &g));
        assert_eq!(s.events, vec![Event::Refused { refusals: rejected }]);
        let s = Session::Live.step(delta(vec![Change::Upsert(net("pg", 11))], vec![]), &ctx(&id, 7, known, &g));
        assert!(matches!(&s.events[..], [Event::Learnt { .. }]), "{:?}", s.events);
    }

    #[test]
    fn conflicting_duplicates_are_all_refused() {
        let (id, g) = (hv(), MassRemoval::default());
        let host = |name: &str| Fact::Host(HostFact { host: "h1".into(), name: name.into() });
        let s = Session::New.step(inventory(vec![host("a"), host("b"), net("pg", 10)]), &ctx(&id, 5, None, &g));
        assert!(matches!(&s.events[1], Event::Learnt { changes } if changes.len() == 1));
        assert!(matches!(&s.invalid[..], [Invalid::DuplicateKey { count: 2, .. }]));
    }

    #[test]
    fn disconnect_while_lost_adds_nothing() {
        let (id, g) = (hv(), MassRemoval::default());
        let s = Session::Lost { since: 1 }.step(
            Input::Observed(Observation::Disconnected { reason: "x".into(), silent_ms: 0 }),
            &ctx(&id, 5, None, &g),
        );
        assert_eq!(s, Step::stay(Session::Lost { since: 1 }));
    }

    #[test]
    fn stale_grace_timer_rearms_instead_of_expiring() {
        let (id, g) = (hv(), MassRemoval::default());
        let s = Session::Lost { since: 1_000 }.step(Input::GraceElapsed, &ctx(&id, 2_000, None, &g));
        assert_eq!(s.timer, Timer::Arm { at: 181_000 });
        assert!(s.events.is_empty());
        let s = Session::Lost { since: 1_000 }.step(Input::GraceElapsed, &ctx(&id, 181_000, None, &g));
        assert_eq!(s.events, vec![Event::Expired]);
        assert_eq!(s.notices, vec![Notice::Removing]);
    }

    #[test]
    fn operator_lines_are_word_for_word() {
        let id = HypervisorId::new("xen217").unwrap();
        assert_eq!(
            Notice::Lost.line(Kind::XenCitrix, &id),
            "Xen-Citrix:Lost connection to hypervisor xen217. Retrying..."
        );
        assert_eq!(
            Notice::Reestablished.line(Kind::VMware, &id),
            "VMware:Reestablished connection with hypervisor xen217."
        );
        assert_eq!(
            Notice::Removing.line(Kind::VMware, &id),
            "VMware:Lost connection to hypervisor xen217. Removing learnt information."
        );
    }
    fn disconnected(silent_ms: u64) -> Input {
        Input::Observed(Observation::Disconnected { reason: "timed out".into(), silent_ms })
    }

    /// A projected state in which `vc-east` knows one network.
    fn known_state() -> crate::projector::State {
        let mut st = crate::projector::State::new(&crate::config::Policy::default());
        st.apply(&crate::event::Envelope {
            seq: 1,
            at: 0,
            hypervisor: hv(),
            schema: 1,
            prev: [0; 32],
            event: Event::Learnt { changes: vec![Change::Upsert(net("pg", 10))] },
        });
        st
    }

    #[test]
    fn a_loss_is_dated_at_the_last_contact_and_the_grace_runs_from_there() {
        let (id, g) = (hv(), MassRemoval::default());
        let s = Session::Live.step(disconnected(15_000), &ctx(&id, 100_000, None, &g));
        assert_eq!(s.next, Session::Lost { since: 85_000 });
        assert_eq!(s.timer, Timer::Arm { at: 265_000 });
        assert_eq!(s.notices, vec![Notice::Lost]);
        // A report of more silence than there has been time is clamped to the epoch, not wrapped.
        let s = Session::Live.step(disconnected(u64::MAX), &ctx(&id, 100_000, None, &g));
        assert_eq!(s.next, Session::Lost { since: 0 });
    }

    #[test]
    fn grace_over_with_an_adapter_asks_for_a_last_attempt_and_waits_its_window() {
        let (id, g) = (hv(), MassRemoval::default());
        let lost = Session::Lost { since: 1_000 };
        let due = Ctx { last_attempt: LastAttempt::Due { window_ms: 7_000 }, ..ctx(&id, 181_000, None, &g) };
        let s = lost.step(Input::GraceElapsed, &due);
        assert_eq!(s.ask, Some(Ask::LastAttempt));
        assert_eq!(s.timer, Timer::Arm { at: 188_000 });
        assert!(s.events.is_empty(), "nothing removed before the last attempt");
        // Before the deadline the adapter is not asked anything.
        let early = Ctx { now: 100_000, ..due };
        assert_eq!(lost.step(Input::GraceElapsed, &early).ask, None);
        // The window ran out: expire.
        let asked = Ctx { last_attempt: LastAttempt::Asked, now: 188_000, ..due };
        assert_eq!(lost.step(Input::GraceElapsed, &asked).events, vec![Event::Expired]);
    }

    #[test]
    fn the_last_attempt_failing_expires_at_once_and_succeeding_is_a_return_within_grace() {
        let (id, g) = (hv(), MassRemoval::default());
        let lost = Session::Lost { since: 1_000 };
        let asked = Ctx { last_attempt: LastAttempt::Asked, ..ctx(&id, 182_000, None, &g) };
        let s = lost.step(disconnected(0), &asked);
        assert_eq!((s.next, s.events, s.notices), (Session::Expired, vec![Event::Expired], vec![Notice::Removing]));
        // A failed attempt reported before the deadline changes nothing.
        let s = lost.step(disconnected(0), &Ctx { now: 100_000, ..asked });
        assert_eq!(s, Step::stay(lost));
        // The attempt got through: the facts are kept.
        let st = known_state();
        let with_known = Ctx { known: st.facts_of(&id), ..asked };
        let s = lost.step(inventory(vec![net("pg", 10)]), &with_known);
        assert_eq!(s.next, Session::Live);
        assert_eq!(s.events, vec![Event::Reestablished { outage_ms: 181_000 }]);
        assert_eq!(s.notices, vec![Notice::Reestablished]);
        // Without the ask, the same late inventory is an expiry and a fresh start.
        let late = Ctx { last_attempt: LastAttempt::Due { window_ms: 5_000 }, ..with_known };
        let s = lost.step(inventory(vec![net("pg", 10)]), &late);
        assert_eq!(s.events[0], Event::Expired);
    }

    #[test]
    fn a_hollow_inventory_is_a_loss_and_the_adapter_is_asked_to_read_again() {
        let (id, g) = (hv(), MassRemoval::default());
        let st = known_state();
        let c = ctx(&id, 5_000, st.facts_of(&id), &g);
        let s = Session::Live.step(inventory(vec![]), &c);
        assert_eq!(s.next, Session::Lost { since: 5_000 });
        assert_eq!(s.events, vec![Event::Lost { reason: "inventory came back empty".into(), since: 5_000 }]);
        assert_eq!(s.ask, Some(Ask::Reread { reason: "inventory came back empty".into() }));
        // Still hollow while lost: nothing appended, asked again.
        let s = Session::Lost { since: 5_000 }.step(inventory(vec![]), &c);
        assert!(s.events.is_empty());
        assert!(matches!(s.ask, Some(Ask::Reread { .. })));
    }

    fn state_after(events: &[Event]) -> crate::projector::State {
        let mut st = crate::projector::State::new(&crate::config::Policy::default());
        for (i, event) in events.iter().enumerate() {
            let seq = i as u64 + 1;
            st.apply(&crate::event::Envelope {
                seq,
                at: 0,
                hypervisor: hv(),
                schema: 1,
                prev: [0; 32],
                event: event.clone(),
            });
        }
        st
    }

    fn esx(host: &str, name: &str) -> Fact {
        Fact::Host(HostFact { host: host.into(), name: name.into() })
    }

    fn pnic(host: &str, mac: &str) -> Fact {
        Fact::Uplink(UplinkFact {
            host: host.into(),
            nic: "vmnic0".into(),
            mac: Some(mac.into()),
            port: None,
            source: None,
        })
    }

    fn by_name(position: usize, name: &str, port: &str) -> TopologyEntry {
        TopologyEntry {
            position,
            hypervisor: hv(),
            host: crate::topology::HostSelector::Name(name.into()),
            nic: Some("vmnic0".into()),
            port: port.parse().unwrap(),
        }
    }

    fn uplinks_of(events: &[Event]) -> Vec<UplinkFact> {
        events
            .iter()
            .flat_map(|e| match e {
                Event::Learnt { changes } => changes.clone(),
                _ => vec![],
            })
            .filter_map(|c| match c {
                Change::Upsert(Fact::Uplink(u)) => Some(u),
                _ => None,
            })
            .collect()
    }

    /// `esx-01` and `esx-02`, each with one pNIC.
    #[test]
    fn an_inventory_after_the_grace_ran_out_while_lost_expires_then_starts_over() {
        let (id, g) = (hv(), MassRemoval::default());
        let known = known_state();
        let facts = known.facts_of(&id);
        // Lost at 1 s, grace 180 s: the inventory arrives at 200 s, before the timer was handled.
        let s = Session::Lost { since: 1_000 }
            .step(inventory(vec![net("pg", 10), vnic("vm-1", "pg")]), &ctx(&id, 200_000, facts, &g));
        assert_eq!(s.next, Session::Live);
        assert!(
            matches!(&s.events[..], [Event::Expired, Event::Connected { .. }, Event::Learnt { changes }]
            if changes.len() == 2),
            "{:?}",
            s.events
        );
        assert_eq!(s.notices, vec![Notice::Removing]);
        assert_eq!(s.timer, Timer::Cancel);
        // One millisecond inside the grace, the same inventory is a return.
        let s = Session::Lost { since: 1_000 }
            .step(inventory(vec![net("pg", 10), vnic("vm-1", "pg")]), &ctx(&id, 180_999, facts, &g));
        assert!(matches!(&s.events[0], Event::Reestablished { outage_ms: 179_999 }), "{:?}", s.events);
        assert_eq!(s.notices, vec![Notice::Reestablished]);
    }

    #[test]
    fn a_delta_while_not_live_is_refused_and_nothing_learnt() {
        let (id, g) = (hv(), MassRemoval::default());
        for session in [Session::New, Session::Lost { since: 1_000 }, Session::Expired] {
            let delta =
                Input::Observed(Observation::Delta { changes: vec![Change::Upsert(net("pg", 10))], rejected: vec![] });
            let s = session.step(delta, &ctx(&id, 5_000, None, &g));
            assert_eq!(s.next, session);
            assert!(!s.events.iter().any(|e| matches!(e, Event::Learnt { .. })), "{session}: {:?}", s.events);
            assert!(
                matches!(&s.invalid[..], [Invalid::DeltaOutOfSession { session: name, .. }] if *name == session.name()),
                "{session}: {:?}",
                s.invalid
            );
            assert_eq!(s.timer, Timer::Unchanged);
        }
    }

    #[test]
    fn grace_elapsed_while_not_lost_cancels_the_timer_and_changes_nothing() {
        let (id, g) = (hv(), MassRemoval::default());
        for session in [Session::New, Session::Live, Session::Expired] {
            let s = session.step(Input::GraceElapsed, &ctx(&id, 999_999, None, &g));
            assert_eq!(s, Step { timer: Timer::Cancel, ..Step::stay(session) }, "{session}");
        }
    }

    fn two_hosts() -> Input {
        inventory(vec![esx("host-1", "esx-01"), esx("host-2", "esx-02"), pnic("host-1", "aa"), pnic("host-2", "bb")])
    }

    #[test]
    fn topology_by_host_name_ties_the_uplink_in_the_learnt_facts() {
        let (id, g) = (hv(), MassRemoval::default());
        let topology = [by_name(1, "esx-02", "tor1:Et2")];
        let c = Ctx { topology: &topology, ..ctx(&id, 5, None, &g) };
        let s = Session::New.step(two_hosts(), &c);
        let ups = uplinks_of(&s.events);
        let tied: Vec<(&str, Option<String>)> =
            ups.iter().map(|u| (u.host.as_str(), u.port.as_ref().map(|p| p.to_string()))).collect();
        assert_eq!(tied, [("host-1", None), ("host-2", Some("tor1:Et2".to_string()))]);
        assert_eq!(ups[1].source, Some(NeighbourSource::Static));
        assert!(s.invalid.is_empty(), "{:?}", s.invalid);
        // The same inventory again learns nothing: the tie is what the log already says.
        let st = state_after(&s.events);
        let again = Session::Live.step(two_hosts(), &Ctx { known: st.facts_of(&id), ..c });
        assert_eq!(again.events, vec![]);
    }

    #[test]
    fn a_rename_that_makes_a_host_name_ambiguous_unties_the_uplink_and_is_refused() {
        let (id, g) = (hv(), MassRemoval::default());
        let topology = [by_name(4, "esx-02", "tor1:Et2")];
        let c = Ctx { topology: &topology, ..ctx(&id, 5, None, &g) };
        let first = Session::New.step(two_hosts(), &c);
        let st = state_after(&first.events);
        let rename = Input::Observed(Observation::Delta {
            changes: vec![Change::Upsert(esx("host-1", "esx-02"))],
            rejected: vec![],
        });
        let s = Session::Live.step(rename, &Ctx { known: st.facts_of(&id), ..c });
        let Event::Learnt { changes } = &s.events[0] else { panic!("{:?}", s.events) };
        assert_eq!(changes.len(), 2, "the rename and host-2's uplink, untied: {changes:?}");
        let ups = uplinks_of(&s.events);
        assert_eq!((ups[0].host.as_str(), &ups[0].port, ups[0].source), ("host-2", &None, None));
        let Some(Event::Refused { refusals }) = s.events.last() else { panic!("no Refused: {:?}", s.events) };
        assert_eq!(refusals[0].what, "[[topology]] #4 (host_name `esx-02`, nic `vmnic0` → tor1:Et2)");
        assert!(refusals[0].why.contains("host-1/vmnic0, host-2/vmnic0"), "{}", refusals[0].why);
        // A VM change does not re-resolve (nor re-refuse).
        let st = state_after(&[first.events.clone(), s.events.clone()].concat());
        let vm = Input::Observed(Observation::Delta { changes: vec![Change::Upsert(net("pg", 10))], rejected: vec![] });
        let s = Session::Live.step(vm, &Ctx { known: st.facts_of(&id), ..c });
        assert!(matches!(&s.events[..], [Event::Learnt { changes }] if changes.len() == 1), "{:?}", s.events);
    }
}
