//! A data directory's history: open it, fold it to any point, explain and compare.
//!
//! The log and the policy it was folded with live in the data directory (`db/`, written by the
//! agent; the policy in the `meta` table), so replay reproduces exactly what the agent computed.
//! Reading never writes it: the store is opened read-only, on a private copy
//! ([`store::Store::open_read_only`]); records it lost against its head anchor are reported
//! ([`History::loss`]), never passed over.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use engine::config::Policy;
use engine::projector::State;
use engine::{Envelope, Event, FactKey, HypervisorId, Reason, Recorded, SwitchPort, VlanId};
use serde::Serialize;
use store::layout::{db_path, EVENTS_LOG, META_TABLE, POLICY_KEY};
use store::{Log, SledLog, Store};

use crate::point::Point;
use crate::{Error, Result};

/// Called as a long fold advances: `(seq reached, head)`.
pub type Progress<'a> = &'a dyn Fn(u64, u64);

/// An opened data directory.
pub struct History {
    // Field order matters: the log must drop (joining its writer) before the store.
    log: SledLog<Recorded>,
    store: Store,
    policy: Policy,
}

/// A state folded to a point, with the provenance of every fact: which event last set it.
pub struct Folded {
    pub state: State,
    /// The last envelope folded (None: the point is before the first event).
    pub last: Option<(u64, engine::UnixMs)>,
    pub provenance: HashMap<(HypervisorId, FactKey), (u64, engine::UnixMs)>,
    /// The last `SwitchSaw` of each switch (what ties uplinks by the switch's sources).
    pub switch_seen: HashMap<String, (u64, engine::UnixMs)>,
}

impl History {
    /// Opens `data_dir` (which must exist and hold a netfold database) for reading; it is never
    /// written. A running agent holds it exclusively: that is [`Error::Open`] with
    /// [`store::Error::InUse`].
    pub fn open(data_dir: &Path) -> Result<Self> {
        let path = db_path(data_dir);
        if !path.is_dir() {
            return Err(Error::NoData(data_dir.to_path_buf()));
        }
        let store = Store::open_read_only(&path).map_err(|source| Error::Open { path: path.clone(), source })?;
        let log = store.log::<Recorded>(EVENTS_LOG).map_err(|source| Error::Open { path: path.clone(), source })?;
        let policy = store
            .table(META_TABLE)
            .and_then(|t| t.get::<Policy>(POLICY_KEY))
            .map_err(|source| Error::Open { path, source })?
            .unwrap_or_default();
        Ok(Self { log, store, policy })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn log(&self) -> &SledLog<Recorded> {
        &self.log
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn head(&self) -> u64 {
        self.log.head()
    }

    /// The acknowledged records the log has lost (against its head anchor), with the blob
    /// files sled discarded when it opened: `Some` means this history is incomplete.
    pub fn loss(&self) -> Option<Error> {
        self.log.loss().map(|loss| Error::Lost {
            loss: loss.clone(),
            first: None,
            discarded: self.store.discarded_blobs().to_vec(),
        })
    }

    /// Every envelope from `from` on, in order; a bad record ends it with an error.
    pub fn events(&self, from: u64) -> impl Iterator<Item = Result<Envelope>> + '_ {
        self.log.read(from).map(|e| e.map(Envelope::from).map_err(Error::Log))
    }

    /// Folds the log from the start up to `point` (`None`: the head).
    pub fn fold(&self, point: Option<Point>, progress: Progress<'_>) -> Result<Folded> {
        self.fold_watching(point, progress, |_, _| {})
    }

    /// The state at `point` (`None`: the head). For a sequence number (or the head) it starts
    /// from the most recent retained snapshot at or before it, so it folds at most one snapshot
    /// interval of the log; for a time, or without a usable snapshot, it folds from the start.
    /// `Folded::provenance` is left empty: `why` needs the events behind every fact and folds
    /// from the start ([`History::why`]).
    pub fn state_at(&self, point: Option<Point>, progress: Progress<'_>) -> Result<Folded> {
        let head = self.head();
        let target = match point {
            None => Some(head),
            Some(Point::Seq(n)) => Some(n.min(head)),
            Some(Point::Time(_)) => None,
        };
        let snap = match target {
            Some(n) => self.log.snapshot_at_or_before(n).map_err(Error::Log)?,
            None => None,
        };
        let Some(snap) = snap else { return self.fold(point, progress) };
        let mut state = match State::decode(&snap.bytes, &self.policy) {
            Ok(s) if s.seq() == snap.seq => s,
            _ => {
                tracing::warn!(seq = snap.seq, "a snapshot does not decode; folding from the start");
                return self.fold(point, progress);
            }
        };
        let mut last = None;
        for env in self.events(snap.seq + 1) {
            let env = env?;
            if point.is_some_and(|p| !p.includes(&env)) {
                break;
            }
            state.apply(&env);
            last = Some((env.seq, env.at));
        }
        if last.is_none() && snap.seq > 0 {
            last = self.events(snap.seq).next().transpose()?.map(|e| (e.seq, e.at));
        }
        progress(last.map_or(0, |(s, _)| s), head);
        Ok(Folded { state, last, provenance: HashMap::new(), switch_seen: HashMap::new() })
    }

    /// Folds like [`History::fold`], calling `watch(&state, &envelope)` after each event.
    fn fold_watching(
        &self,
        point: Option<Point>,
        progress: Progress<'_>,
        mut watch: impl FnMut(&State, &Envelope),
    ) -> Result<Folded> {
        let head = self.head();
        let mut state = State::new(&self.policy);
        let mut provenance = HashMap::new();
        let mut switch_seen = HashMap::new();
        let mut last = None;
        for env in self.events(1) {
            let env = env?;
            if point.is_some_and(|p| !p.includes(&env)) {
                break;
            }
            match &env.event {
                Event::Learnt { changes } => {
                    for c in changes {
                        let k = (env.hypervisor.clone(), c.key());
                        match c {
                            engine::Change::Upsert(_) => provenance.insert(k, (env.seq, env.at)),
                            engine::Change::Remove(_) => provenance.remove(&k),
                        };
                    }
                }
                Event::Expired => provenance.retain(|(h, _), _| *h != env.hypervisor),
                Event::SwitchSaw { switch, .. } => {
                    switch_seen.insert(switch.clone(), (env.seq, env.at));
                }
                _ => {}
            }
            state.apply(&env);
            watch(&state, &env);
            last = Some((env.seq, env.at));
            if env.seq % 65_536 == 0 {
                progress(env.seq, head);
            }
        }
        progress(last.map_or(0, |(s, _)| s), head);
        Ok(Folded { state, last, provenance, switch_seen })
    }

    /// Why `vlan` is (or was, at `point`) on `port`: every reason, with the events that set the
    /// facts behind it, and since when the VLAN has been there without interruption.
    pub fn why(&self, port: &SwitchPort, vlan: VlanId, point: Option<Point>, progress: Progress<'_>) -> Result<Why> {
        let mut since = None;
        let folded = self.fold_watching(point, progress, |state, env| {
            let present = state.desired().ports.get(port).is_some_and(|v| v.contains_key(&vlan));
            match (present, since) {
                (true, None) => since = Some((env.seq, env.at)),
                (false, Some(_)) => since = None,
                _ => {}
            }
        })?;
        let reasons = folded
            .state
            .why(port, vlan)
            .into_iter()
            .map(|reason| {
                let mut learnt = Vec::new();
                let facts = folded.state.facts_of(&reason.hypervisor);
                let mut keys = vec![FactKey::Network { host: reason.host.clone(), network: reason.network.clone() }];
                if let Some(v) = &reason.vnic {
                    keys.insert(0, FactKey::Vnic { vm: v.vm.clone(), nic: v.nic.clone() });
                }
                if let Some(n) = facts.and_then(|f| f.network(&reason.host, &reason.network)) {
                    for nic in &n.uplinks {
                        keys.push(FactKey::Uplink { host: reason.host.clone(), nic: nic.clone() });
                    }
                }
                for key in keys {
                    if let Some(&(seq, at)) = folded.provenance.get(&(reason.hypervisor.clone(), key.clone())) {
                        learnt.push(Learnt { fact: key.to_string(), seq, at });
                    }
                }
                let uplinks: Vec<String> = facts
                    .and_then(|f| f.network(&reason.host, &reason.network))
                    .map(|n| n.uplinks.clone())
                    .unwrap_or_default();
                let ties: Vec<Tie> = folded
                    .state
                    .ties_of(&reason.hypervisor)
                    .into_iter()
                    .filter(|t| t.host == reason.host && uplinks.contains(&t.nic) && t.port.as_ref() == Some(port))
                    .map(|t| Tie { nic: t.nic, source: t.source, opinions: t.opinions, disagree: t.disagree })
                    .collect();
                let by_switch = ties.iter().any(|t| {
                    matches!(t.source, Some(engine::NeighbourSource::MacTable | engine::NeighbourSource::SwitchLldp))
                });
                if let Some(&(seq, at)) = folded.switch_seen.get(&port.switch).filter(|_| by_switch) {
                    learnt.push(Learnt { fact: format!("what switch {} saw", port.switch), seq, at });
                }
                Explained { reason, learnt, ties }
            })
            .collect();
        Ok(Why { port: port.clone(), vlan, at: folded.last, since, reasons })
    }

    /// What changed in desired state from `a` to `b`.
    pub fn diff(&self, a: Point, b: Point, progress: Progress<'_>) -> Result<Vec<DiffLine>> {
        let before = self.state_at(Some(a), progress)?.state;
        let after = self.state_at(Some(b), progress)?.state;
        Ok(diff_desired(&flatten(&before), &flatten(&after)))
    }
}

/// Desired state as `(port, vlan) → reason count`.
fn flatten(state: &State) -> BTreeMap<(SwitchPort, VlanId), usize> {
    state
        .desired()
        .ports
        .iter()
        .flat_map(|(p, vlans)| vlans.iter().map(move |(v, r)| ((p.clone(), *v), r.len())))
        .collect()
}

fn diff_desired(a: &BTreeMap<(SwitchPort, VlanId), usize>, b: &BTreeMap<(SwitchPort, VlanId), usize>) -> Vec<DiffLine> {
    let keys: BTreeSet<_> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let change = match (a.get(k), b.get(k)) {
                (None, Some(n)) => DiffChange::Added { reasons: *n },
                (Some(n), None) => DiffChange::Removed { reasons: *n },
                (Some(x), Some(y)) if x != y => DiffChange::Reasons { before: *x, after: *y },
                _ => return None,
            };
            Some(DiffLine { port: k.0.clone(), vlan: k.1, change })
        })
        .collect()
}

/// An event that set a fact behind a reason.
#[derive(Clone, Debug, Serialize)]
pub struct Learnt {
    pub fact: String,
    pub seq: u64,
    pub at: engine::UnixMs,
}

/// A reason and the events behind it.
#[derive(Clone, Debug, Serialize)]
pub struct Explained {
    pub reason: Reason,
    pub learnt: Vec<Learnt>,
    /// How the reason's uplinks are tied to the port: by which source.
    pub ties: Vec<Tie>,
}

/// An uplink of a reason's host tied to the port, and the source that tied it.
#[derive(Clone, Debug, Serialize)]
pub struct Tie {
    pub nic: String,
    pub source: Option<engine::NeighbourSource>,
    /// Every source's port, in precedence order.
    pub opinions: Vec<(engine::NeighbourSource, SwitchPort)>,
    pub disagree: bool,
}

/// The answer to "why is this VLAN on this port?".
#[derive(Clone, Debug, Serialize)]
pub struct Why {
    pub port: SwitchPort,
    pub vlan: VlanId,
    /// The last event folded: the answer holds as of it.
    pub at: Option<(u64, engine::UnixMs)>,
    /// The event since which the VLAN has been desired without interruption.
    pub since: Option<(u64, engine::UnixMs)>,
    pub reasons: Vec<Explained>,
}

/// One difference in desired state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiffLine {
    pub port: SwitchPort,
    pub vlan: VlanId,
    pub change: DiffChange,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum DiffChange {
    Added { reasons: usize },
    Removed { reasons: usize },
    Reasons { before: usize, after: usize },
}
