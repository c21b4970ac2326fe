//! A data directory's history: open it, fold it to any point, explain and compare.
//!
//! The log and the policy it was folded with live in the data directory (`db/`, written by the
//! agent; the policy in the `meta` table), so replay reproduces exactly what the agent computed.
//! Reading never writes it: the store is opened read-only, on a private copy
//! ([`store::Store::open_read_only`]); records it lost against its head anchor are reported
//! ([`History::loss`]), never passed over.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use engine::config::Policy;
use engine::projector::State;
use engine::{Envelope, FactKey, Reason, Recorded, SwitchPort, VlanId};
use serde::{Deserialize, Serialize};
use store::layout::{db_path, EVENTS_LOG, META_TABLE, POLICY_KEY};
use store::{AnyLog, AnyStore, Log, PgStore, Store};

use crate::point::Point;
use crate::{Error, Result};

/// Called as a long fold advances: `(seq reached, head)`.
pub type Progress<'a> = &'a dyn Fn(u64, u64);

/// An opened data directory.
pub struct History {
    // Field order matters: the log must drop (joining its writer) before the store.
    log: Arc<AnyLog<Recorded>>,
    store: AnyStore,
    policy: Policy,
}

/// A state folded to a point (it carries its provenance: [`State::desired_since`],
/// [`engine::projector::Facts::set_by`]).
pub struct Folded {
    pub state: State,
    /// The last envelope folded (None: the point is before the first event).
    pub last: Option<(u64, engine::UnixMs)>,
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
        Ok(Self { log: Arc::new(AnyLog::Sled(log)), store: AnyStore::Sled(store), policy })
    }

    /// The history in a PostgreSQL database (ADR 0008), opened for reading
    /// ([`store::PgStore::connect_read_only`]: PostgreSQL refuses any write). Any number of
    /// readers may open it, instances running or not; each answer holds as of the record it
    /// names.
    pub async fn open_postgres(store: PgStore) -> Result<Self, store::Error> {
        let log = store.log::<Recorded>(EVENTS_LOG).await?;
        let policy = store.table(META_TABLE).get::<Policy>(POLICY_KEY)?.unwrap_or_default();
        Ok(Self { log: Arc::new(AnyLog::Postgres(log)), store: AnyStore::Postgres(store), policy })
    }

    /// The history of a running agent's own log (its store, its event log, the policy it folds
    /// with): what the agent's HTTP API answers `state --at`, `why`, `diff` and `verify` from
    /// while the data directory is its alone. Folds read the log as appends go on; each
    /// answer holds as of the record it names.
    pub fn live(store: AnyStore, log: Arc<AnyLog<Recorded>>, policy: Policy) -> Self {
        Self { log, store, policy }
    }

    pub fn store(&self) -> &AnyStore {
        &self.store
    }

    pub fn log(&self) -> &AnyLog<Recorded> {
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
            discarded: match &self.store {
                AnyStore::Sled(s) => s.discarded_blobs().to_vec(),
                AnyStore::Postgres(_) => Vec::new(),
            },
        })
    }

    /// Every envelope from `from` on, in order; a bad record ends it with an error.
    pub fn events(&self, from: u64) -> impl Iterator<Item = Result<Envelope>> + '_ {
        self.events_to(from, u64::MAX)
    }

    /// The envelopes `from..=last`, in order; a bad record ends it with an error.
    fn events_to(&self, from: u64, last: u64) -> impl Iterator<Item = Result<Envelope>> + '_ {
        self.log.read_to(from, last).map(|e| e.map(Envelope::from).map_err(Error::Log))
    }

    /// Folds the log from the start up to `point` (`None`: the head).
    pub fn fold(&self, point: Option<Point>, progress: Progress<'_>) -> Result<Folded> {
        self.fold_from(State::new(&self.policy), self.events(1), point, progress, &mut drop)
    }

    /// Folds `events` (those after `state`) onto `state` up to `point` (`None`: their end),
    /// handing each folded envelope to `done`.
    fn fold_from(
        &self,
        mut state: State,
        events: impl Iterator<Item = Result<Envelope>>,
        point: Option<Point>,
        progress: Progress<'_>,
        done: &mut dyn FnMut(Envelope),
    ) -> Result<Folded> {
        let head = self.head();
        let mut last = (state.seq() > 0).then(|| (state.seq(), state.last_stamp().at));
        for env in events {
            let env = env?;
            if point.is_some_and(|p| !p.includes(&env)) {
                break;
            }
            state.apply(&env);
            last = Some((env.seq, env.at));
            if env.seq % 65_536 == 0 {
                progress(env.seq, head);
            }
            done(env);
        }
        progress(last.map_or(0, |(s, _)| s), head);
        Ok(Folded { state, last })
    }

    /// The state at `point` (`None`: the head), provenance included. For a sequence number (or
    /// the head) it starts from the most recent retained snapshot at or before it, so it folds
    /// at most one snapshot interval of the log; for a time, or without a usable snapshot, it
    /// folds from the start. The interval's events are read and decoded (on other threads)
    /// while the snapshot decodes, and freed on another thread once folded.
    pub fn state_at(&self, point: Option<Point>, progress: Progress<'_>) -> Result<Folded> {
        let target = match point {
            None => self.head(),
            Some(Point::Seq(n)) => n.min(self.head()),
            Some(Point::Time(_)) => return self.fold(point, progress),
        };
        let Some(snap) = self.log.snapshot_at_or_before(target).map_err(Error::Log)? else {
            return self.fold(point, progress);
        };
        let interval = self.events_to(snap.seq + 1, target);
        match State::decode(&snap.bytes, &self.policy) {
            Ok(state) if state.seq() == snap.seq => {
                let mut freed = Freed::start();
                return self.fold_from(state, interval, point, progress, &mut |env| freed.push(env));
            }
            Ok(state) => tracing::warn!(
                seq = snap.seq,
                holds = state.seq(),
                "a snapshot holds another seq; folding from the start"
            ),
            Err(e) => tracing::warn!(seq = snap.seq, error = %e, "a snapshot cannot be used; folding from the start"),
        }
        drop(interval);
        self.fold(point, progress)
    }

    /// Why `vlan` is (or was, at `point`) on `port`: every reason, with the events that set the
    /// facts behind it, and since when the VLAN has been there without interruption. Read from
    /// the state at `point` ([`History::state_at`]): it folds at most one snapshot interval.
    pub fn why(&self, port: &SwitchPort, vlan: VlanId, point: Option<Point>, progress: Progress<'_>) -> Result<Why> {
        let folded = self.state_at(point, progress)?;
        let why = explain(&folded, port, vlan);
        drop_elsewhere(folded);
        Ok(why)
    }

    /// What changed in desired state from `a` to `b`.
    pub fn diff(&self, a: Point, b: Point, progress: Progress<'_>) -> Result<Vec<DiffLine>> {
        let state = self.state_at(Some(a), progress)?.state;
        let before = flatten(&state);
        drop_elsewhere(state);
        let after = self.state_at(Some(b), progress)?.state;
        let lines = diff_desired(&before, &flatten(&after));
        drop_elsewhere(after);
        Ok(lines)
    }
}

/// Drops `value` on a thread of its own, not waited for: a folded state of 50,000 VMs takes
/// about 4 ms to free, and the answer read from it is ready before that. Without the thread
/// it is dropped here (with the closure that failed to start).
fn drop_elsewhere<T: Send + 'static>(value: T) {
    let _ = std::thread::Builder::new().name("history-free".into()).spawn(move || drop(value));
}

/// Folded envelopes, freed on a thread of their own in batches. Their strings were allocated by
/// the threads that decoded them; freeing them on the folding thread costs it about as much as
/// folding them (60k events: 25 ms of frees beside 27 ms of fold). Worth it for a snapshot's
/// interval, which the folding thread finishes alone once the readers are done; not for a whole
/// log, whose decoding already keeps every core busy. The thread is not waited for.
struct Freed {
    batch: Vec<Envelope>,
    to: Option<std::sync::mpsc::Sender<Vec<Envelope>>>,
}

impl Freed {
    const BATCH: usize = 4096;

    fn start() -> Self {
        let (to, from) = std::sync::mpsc::channel::<Vec<Envelope>>();
        let spawned =
            std::thread::Builder::new().name("history-free".into()).spawn(move || from.into_iter().for_each(drop));
        // Without the thread, envelopes are freed where they were folded.
        Self { batch: Vec::with_capacity(Self::BATCH), to: spawned.ok().map(|_| to) }
    }

    fn push(&mut self, env: Envelope) {
        let Some(to) = &self.to else { return };
        self.batch.push(env);
        if self.batch.len() == Self::BATCH {
            // Should the thread be gone, the batch comes back in the error and is freed here.
            let _ = to.send(std::mem::replace(&mut self.batch, Vec::with_capacity(Self::BATCH)));
        }
    }
}

impl Drop for Freed {
    fn drop(&mut self) {
        if let Some(to) = self.to.take() {
            let _ = to.send(std::mem::take(&mut self.batch));
        }
    }
}

/// The answer to "why is `vlan` on `port`?" in a folded state: its reasons, the events that set
/// the facts behind each, and since when the VLAN has been desired.
pub fn explain(folded: &Folded, port: &SwitchPort, vlan: VlanId) -> Why {
    let state = &folded.state;
    let stamp = |s: engine::projector::Stamp| (s.seq, s.at);
    let reasons = state
        .why(port, vlan)
        .into_iter()
        .map(|reason| {
            let facts = state.facts_of(&reason.hypervisor);
            let mut keys = vec![FactKey::Network { host: reason.host.clone(), network: reason.network.clone() }];
            if let Some(v) = &reason.vnic {
                keys.insert(0, FactKey::Vnic { vm: v.vm.clone(), nic: v.nic.clone() });
            }
            if let Some(n) = facts.and_then(|f| f.network(&reason.host, &reason.network)) {
                for nic in &n.uplinks {
                    keys.push(FactKey::Uplink { host: reason.host.clone(), nic: nic.clone() });
                }
            }
            let mut learnt: Vec<Learnt> = keys
                .into_iter()
                .filter_map(|key| {
                    let (seq, at) = stamp(facts?.set_by(&key)?);
                    Some(Learnt { fact: key.to_string(), seq, at })
                })
                .collect();
            let uplinks = facts
                .and_then(|f| f.network(&reason.host, &reason.network))
                .map(|n| n.uplinks.clone())
                .unwrap_or_default();
            let ties: Vec<Tie> = state
                .ties_of(&reason.hypervisor)
                .into_iter()
                .filter(|t| t.host == reason.host && uplinks.contains(&t.nic) && t.port.as_ref() == Some(port))
                .map(|t| Tie { nic: t.nic.to_string(), source: t.source, opinions: t.opinions, disagree: t.disagree })
                .collect();
            let by_switch = ties.iter().any(|t| {
                matches!(t.source, Some(engine::NeighbourSource::MacTable | engine::NeighbourSource::SwitchLldp))
            });
            if let Some(seen) = state.switch_seen(&port.switch).filter(|_| by_switch) {
                let (seq, at) = stamp(seen);
                learnt.push(Learnt { fact: format!("what switch {} saw", port.switch), seq, at });
            }
            Explained { reason, learnt, ties }
        })
        .collect();
    let since = state.desired_since(port, vlan).map(stamp);
    Why { port: port.clone(), vlan, at: folded.last, since, reasons }
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
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Learnt {
    pub fact: String,
    pub seq: u64,
    pub at: engine::UnixMs,
}

/// A reason and the events behind it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Explained {
    pub reason: Reason,
    pub learnt: Vec<Learnt>,
    /// How the reason's uplinks are tied to the port: by which source.
    pub ties: Vec<Tie>,
}

/// An uplink of a reason's host tied to the port, and the source that tied it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tie {
    pub nic: String,
    pub source: Option<engine::NeighbourSource>,
    /// Every source's port, in precedence order.
    pub opinions: Vec<(engine::NeighbourSource, SwitchPort)>,
    pub disagree: bool,
}

/// The answer to "why is this VLAN on this port?".
#[derive(Clone, Debug, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffLine {
    pub port: SwitchPort,
    pub vlan: VlanId,
    pub change: DiffChange,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiffChange {
    Added { reasons: usize },
    Removed { reasons: usize },
    Reasons { before: usize, after: usize },
}
