//! The core task: the one place that steps sessions, appends to the log, applies what the log
//! acknowledged and runs the grace timers. Everything here is wiring; decisions are made by
//! [`Session::step`] and [`State::apply`].
//!
//! Every record is applied as the log hands it over, through one subscription ([`Core::fold_to`]):
//! the core's own appends right after they are durable, and (instances sharing a store, ADR
//! 0014) other instances' as they become known. What the core does after its own appends for
//! everyone's (re-filter switch views when hosts move, re-judge disagreements after a switch
//! reported) it does after others' too, for the work it holds ([`Core::settle_followed`]).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::{Attached, Command, Metrics, Outcome, SharedState, Work};
use crate::clock::Clock;
use crate::config::Config;
use crate::desired::Desired;
use crate::discovery::{Disagreement, Discovery, SwitchView};
use crate::error::{Error, Invalid, Result};
use crate::event::{Envelope, Event, Recorded, UnixMs, SWITCH_RECORDER};
use crate::ids::{HypervisorId, Kind};
use crate::observe::{Ask, Rejected};
use crate::projector::{State, Status};
use crate::session::{Ctx, Input, LastAttempt, Notice, Session, Timer};
use crate::topology::TopologyEntry;

/// Once this many commands were handled without publishing, publish even if more wait.
const PUBLISH_EVERY: u32 = 64;
/// How often an append the log refused (disk full, IO error) is tried again.
const RETRY_APPEND: Duration = Duration::from_secs(1);
/// How long an append in flight may still take once the engine is told to stop.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// Whether `event` may change which hosts reach a switch port.
fn moves_host_ports(event: &Event) -> bool {
    match event {
        Event::Learnt { changes } => changes
            .iter()
            .any(|c| matches!(c.key(), crate::fact::FactKey::Host { .. } | crate::fact::FactKey::Uplink { .. })),
        Event::Expired | Event::Connected { .. } => true,
        _ => false,
    }
}

/// The latest snapshot (when it decodes) with the log's tail folded in.
pub(super) fn recover_state<L: store::Log<Recorded>>(log: &L, config: &Config) -> Result<State> {
    let policy = &config.policy;
    let latest = log.latest_snapshot().map_err(Error::log("reading the latest snapshot"))?;
    // The tail after the snapshot is read and decoded (on other threads) while it decodes.
    let tail = latest.as_ref().map(|snap| (snap.seq, log.read(snap.seq + 1)));
    let mut state = match latest {
        Some(snap) => match State::decode(&snap.bytes, policy) {
            Ok(s) if s.seq() == snap.seq && snap.seq <= log.head() => s,
            Ok(s) => {
                let e = Error::Snapshot { seq: snap.seq, reason: format!("it holds seq {}", s.seq()) };
                tracing::warn!(error = %e, "ignoring the snapshot; folding the whole log");
                State::new(policy)
            }
            Err(e) => {
                let e = Error::Snapshot { seq: snap.seq, reason: e.to_string() };
                tracing::warn!(error = %e, "ignoring the snapshot; folding the whole log");
                State::new(policy)
            }
        },
        None => State::new(policy),
    };
    let from = state.seq() + 1;
    let entries = match tail {
        Some((seq, tail)) if seq + 1 == from => tail,
        ignored => {
            drop(ignored);
            log.read(from)
        }
    };
    for entry in entries {
        let entry = entry.map_err(Error::log("folding the log at start-up"))?;
        state.apply(&Envelope::from(entry));
    }
    tracing::info!(seq = state.seq(), from, "projector state recovered");
    Ok(state)
}

/// What the core may append for.
enum Holds {
    /// Everything: it is its log's one writer.
    All,
    /// Only the work whose lease this instance holds, each append under that lease's fence
    /// (instances sharing one store, ADR 0014).
    Leases(BTreeMap<Work, store::Fence>),
}

impl Holds {
    /// The fence appends for `work` are made under (`None`: the log's one writer); an error
    /// when this instance does not hold `work`.
    fn fence(&self, work: &Work) -> Result<Option<&store::Fence>> {
        match self {
            Holds::All => Ok(None),
            Holds::Leases(held) => held.get(work).map(Some).ok_or_else(|| Error::NotHeld { lease: work.lease() }),
        }
    }

    fn holds(&self, work: &Work) -> bool {
        self.fence(work).is_ok()
    }

    fn hypervisor(&self, id: &HypervisorId) -> bool {
        self.holds(&Work::Hypervisor(id.clone()))
    }
}

/// What other instances appended that calls for work of this one's ([`Core::settle_followed`]).
#[derive(Default)]
struct Followed {
    /// Hosts' ports may have moved: re-filter the switch views.
    moves: bool,
    /// A switch reported: re-judge the disagreements.
    saw: bool,
}

pub(super) struct Core<L> {
    log: Arc<L>,
    /// Where every record is applied from, in order (the next is the state's seq + 1).
    follow: store::Subscription<Recorded>,
    holds: Holds,
    followed: Followed,
    config: Config,
    clock: Arc<dyn Clock>,
    state: SharedState,
    desired: watch::Sender<Arc<Desired>>,
    metrics: Arc<Metrics>,
    /// Grace deadlines (unix ms) of lost hypervisors.
    timers: BTreeMap<HypervisorId, UnixMs>,
    /// The adapters attached, by hypervisor: where to send what the engine asks of them.
    attached: BTreeMap<HypervisorId, Attached>,
    /// Lost hypervisors whose adapter was asked for a last attempt before expiry.
    asked: BTreeSet<HypervisorId>,
    /// Hypervisors whose held removal an operator released: their next inventory bypasses
    /// the guard.
    releases: BTreeSet<HypervisorId>,
    published_version: u64,
    snapshot_seq: u64,
    /// The engine's stop signal, once running (a held-back append gives up on it).
    stop: Option<watch::Receiver<bool>>,
    /// `[[topology]]` entries by hypervisor.
    topology: BTreeMap<HypervisorId, Vec<TopologyEntry>>,
    /// Hosts last seen with uplinks but no known switch port, by hypervisor: each is warned
    /// about once when it becomes so, not on every read.
    unported: BTreeMap<HypervisorId, BTreeSet<String>>,
    /// The last discovery each switch reported, with its policy: re-filtered when new pNIC MACs
    /// are learnt, so a new host is tied without waiting for the next poll.
    discoveries: BTreeMap<String, (Discovery, crate::plan::Policy)>,
    /// The disagreements last recorded ([`Event::TiesDisagreed`]), by hypervisor.
    disagreed: BTreeMap<HypervisorId, Vec<Disagreement>>,
    /// What the last full read of each live hypervisor refused, as recorded in this process
    /// ([`Event::Refused`]): a full read that refuses the same again records nothing new. A
    /// refusing delta, a session that is no longer live or a restart forgets it, so the next
    /// full read records its refusals once more.
    refused: BTreeMap<HypervisorId, Vec<Rejected>>,
    /// Notified when hosts with no known port appear: discovery pollers read their switches now.
    pub(super) wanted: Arc<tokio::sync::Notify>,
}

impl<L: store::Log<Recorded>> Core<L> {
    pub(super) fn new(
        log: Arc<L>,
        config: Config,
        clock: Arc<dyn Clock>,
        state: SharedState,
        desired: watch::Sender<Arc<Desired>>,
        metrics: Arc<Metrics>,
        shared: bool,
    ) -> Self {
        let (published_version, snapshot_seq) = state.read(|s| (s.desired_version(), s.seq()));
        let follow = log.subscribe(snapshot_seq + 1);
        let holds = if shared { Holds::Leases(BTreeMap::new()) } else { Holds::All };
        let mut topology: BTreeMap<HypervisorId, Vec<TopologyEntry>> = BTreeMap::new();
        for e in &config.topology {
            topology.entry(e.hypervisor.clone()).or_default().push(e.clone());
        }
        let disagreed: BTreeMap<HypervisorId, Vec<Disagreement>> = state.read(|s| {
            s.hypervisors().map(|(id, _)| (id.clone(), s.disagreements_of(id))).filter(|(_, d)| !d.is_empty()).collect()
        });
        metrics.tie_disagreements.store(disagreed.values().map(|d| d.len() as u64).sum(), Ordering::Relaxed);
        Self {
            topology,
            unported: BTreeMap::new(),
            discoveries: BTreeMap::new(),
            disagreed,
            refused: BTreeMap::new(),
            wanted: Arc::default(),
            follow,
            holds,
            followed: Followed::default(),
            log,
            config,
            clock,
            state,
            desired,
            metrics,
            timers: BTreeMap::new(),
            attached: BTreeMap::new(),
            asked: BTreeSet::new(),
            releases: BTreeSet::new(),
            published_version,
            snapshot_seq,
            stop: None,
        }
    }

    /// At start-up: every hypervisor the log shows as lost either expires now (its grace ran
    /// out while netfold was down) or gets its timer back at `Lost` time + grace.
    /// (Sharing a store: only the hypervisors this instance holds, which at start-up is none.)
    pub(super) async fn expire_or_rearm(&mut self) -> Result<()> {
        for id in self.held_hypervisors() {
            self.expire_or_rearm_one(&id).await?;
        }
        self.publish();
        Ok(())
    }

    /// `id`, if the log shows it lost: expired now when its grace ran out, else its timer
    /// re-armed at `Lost` time + grace.
    async fn expire_or_rearm_one(&mut self, id: &HypervisorId) -> Result<()> {
        let lost = self.state.read(|s| match s.status(id) {
            Some(st) => match st.status {
                Status::Lost { since } => Some((st.kind, since)),
                _ => None,
            },
            None => None,
        });
        let Some((kind, since)) = lost else { return Ok(()) };
        let deadline = since.saturating_add(self.grace_ms(id));
        if self.clock.now() >= deadline {
            self.handle(id, kind, Input::GraceElapsed).await?;
        } else {
            tracing::info!(hypervisor = %id, lost_at = since, expires_at = deadline, "grace timer re-armed from the log");
            self.timers.insert(id.clone(), deadline);
        }
        Ok(())
    }

    /// The hypervisors the log knows that this instance works for.
    fn held_hypervisors(&self) -> Vec<HypervisorId> {
        self.state.read(|s| s.hypervisors().map(|(id, _)| id.clone()).filter(|id| self.holds.hypervisor(id)).collect())
    }

    /// This instance took `work`'s lease: everything the previous holder appended is in the
    /// store by now (its appends are fenced), so the log is folded to the store's head before
    /// anything is done for it; a hypervisor's grace then continues from the log.
    async fn hold(&mut self, work: Work, fence: store::Fence) -> Result<()> {
        let Holds::Leases(held) = &mut self.holds else { return Ok(()) };
        held.insert(work.clone(), fence);
        let head = self.log.current_head().await.map_err(Error::log("reading the log's head for a new lease"))?;
        self.fold_to(head, None).await?;
        if let Work::Hypervisor(id) = &work {
            let disagreed = self.state.read(|s| s.disagreements_of(id));
            if disagreed.is_empty() {
                self.disagreed.remove(id);
            } else {
                self.disagreed.insert(id.clone(), disagreed);
            }
            self.expire_or_rearm_one(id).await?;
        }
        tracing::info!(work = %work, seq = self.state.read(|s| s.seq()), "holding the lease {}", work.lease());
        Ok(())
    }

    /// This instance no longer holds `work`: nothing more is appended for it.
    fn unhold(&mut self, work: &Work) {
        if let Holds::Leases(held) = &mut self.holds {
            held.remove(work);
        }
        match work {
            Work::Hypervisor(id) => {
                self.timers.remove(id);
                self.attached.remove(id);
                self.asked.remove(id);
                self.releases.remove(id);
                self.refused.remove(id);
                self.unported.remove(id);
            }
            Work::Switch(name) => {
                self.discoveries.remove(name);
            }
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>, mut stop: watch::Receiver<bool>) {
        self.stop = Some(stop.clone());
        let mut unpublished = 0u32;
        // Sharing a store, other instances' appends move the head; the one writer of its log
        // applies its own appends where it makes them, and needs no wake-up for them.
        let mut heads = self.follow.heads();
        let mut following = matches!(self.holds, Holds::Leases(_));
        loop {
            let next = self.timers.values().min().copied();
            let wait = next.map(|at| Duration::from_millis(at.saturating_sub(self.clock.now())));
            tokio::select! {
                biased;
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                    continue;
                }
                cmd = commands.recv() => match cmd {
                    None => break,
                    Some(Command::Attach { hypervisor, attached }) => {
                        self.attached.insert(hypervisor, attached);
                    }
                    Some(Command::Release { hypervisor, reply }) => {
                        let _ = reply.send(self.release(&hypervisor));
                    }
                    Some(Command::Hold { work, fence, reply }) => {
                        let out = self.hold(work.clone(), fence).await;
                        if out.is_err() {
                            self.unhold(&work);
                        }
                        let _ = reply.send(out);
                    }
                    Some(Command::Unhold { work, reply }) => {
                        self.unhold(&work);
                        let _ = reply.send(());
                    }
                    Some(Command::Saw { reply, switch, .. }) if !self.holds.holds(&Work::Switch(switch.clone())) => {
                        if let Some(reply) = reply {
                            let _ = reply.send(Err(Error::NotHeld { lease: Work::Switch(switch).lease() }));
                        }
                    }
                    Some(Command::Saw { switch, discovery, policy, reply }) => {
                        self.discoveries.insert(switch.clone(), (discovery, policy));
                        let out = self.record_switch(&switch).await;
                        if let Err(e) = &out {
                            tracing::error!(switch = %switch, error = %e, "switch discovery not recorded");
                        }
                        if let Some(reply) = reply {
                            let _ = reply.send(out);
                        }
                    }
                    Some(Command::Observe { hypervisor, kind, observation, reply }) => {
                        let out = self.handle(&hypervisor, Some(kind), Input::Observed(observation)).await;
                        match (reply, out) {
                            (Some(reply), out) => {
                                let _ = reply.send(out);
                            }
                            (None, Err(e)) => {
                                tracing::error!(hypervisor = %hypervisor, error = %e, "observation not recorded");
                            }
                            (None, Ok(_)) => {}
                        }
                    }
                },
                _ = sleep_or_never(wait) => self.fire_due().await,
                moved = heads.changed(), if following => match moved {
                    Ok(()) => {
                        let head = *heads.borrow_and_update();
                        if let Err(e) = self.fold_to(head, None).await {
                            tracing::error!(error = %e, "cannot fold what other instances appended; retrying at the next append");
                        }
                    }
                    Err(_) => following = false,
                },
            }
            self.settle_followed().await;
            unpublished += 1;
            if commands.is_empty() || unpublished >= PUBLISH_EVERY {
                self.publish();
                unpublished = 0;
            }
        }
        self.publish();
        self.snapshot(true);
        tracing::info!(seq = self.state.read(|s| s.seq()), "engine core stopped");
    }

    async fn fire_due(&mut self) {
        let now = self.clock.now();
        let due: Vec<HypervisorId> =
            self.timers.iter().filter(|(_, at)| **at <= now).map(|(id, _)| id.clone()).collect();
        for id in due {
            self.timers.remove(&id);
            let kind = self.state.read(|s| s.status(&id).and_then(|st| st.kind));
            if let Err(e) = self.handle(&id, kind, Input::GraceElapsed).await {
                tracing::error!(hypervisor = %id, error = %e, "grace expiry not recorded; retrying in 1s");
                self.timers.insert(id, now.saturating_add(1_000));
            }
        }
    }

    /// An operator lets `id`'s held removal through: the adapter is asked for a fresh full
    /// read, which then bypasses the guard. Returns how many removals were held.
    fn release(&mut self, id: &HypervisorId) -> Result<u64> {
        self.holds.fence(&Work::Hypervisor(id.clone()))?;
        let held = self.state.read(|s| s.status(id).and_then(|st| st.held));
        let Some(held) = held else {
            return Err(Error::NothingHeld { hypervisor: id.clone() });
        };
        self.releases.insert(id.clone());
        tracing::warn!(hypervisor = %id, would_remove = held.would_remove, "held removal released by an operator; re-reading");
        self.ask(id, Ask::Reread { reason: "an operator released the held removal".into() });
        Ok(held.would_remove)
    }

    /// Sends `ask` to `id`'s adapter, if one is attached and listening.
    fn ask(&self, id: &HypervisorId, ask: Ask) {
        if let Some(a) = self.attached.get(id) {
            if a.asks.try_send(ask).is_err() {
                tracing::debug!(hypervisor = %id, "adapter not listening for asks");
            }
        }
    }

    fn grace_ms(&self, id: &HypervisorId) -> u64 {
        self.config.grace_for(id).as_millis() as u64
    }

    /// Steps one session, appends its events, applies them, logs its notices.
    async fn handle(&mut self, id: &HypervisorId, kind: Option<Kind>, input: Input) -> Result<Outcome> {
        let span = tracing::info_span!("session", hypervisor = %id);
        self.handle_inner(id, kind, input).instrument(span).await
    }

    async fn handle_inner(&mut self, id: &HypervisorId, kind: Option<Kind>, input: Input) -> Result<Outcome> {
        // Sharing a store: what an adapter sends after its lease was given up is not this
        // instance's to record.
        self.holds.fence(&Work::Hypervisor(id.clone()))?;
        let now = self.clock.now();
        let grace_ms = self.grace_ms(id);
        let last_attempt = match self.attached.get(id) {
            _ if self.asked.contains(id) => LastAttempt::Asked,
            Some(a) if !a.asks.is_closed() => LastAttempt::Due { window_ms: a.last_attempt_window_ms },
            _ => LastAttempt::Unavailable,
        };
        let release = self.releases.contains(id);
        let is_inventory = matches!(input, Input::Observed(crate::observe::Observation::Inventory { .. }));
        let (from, step, kind) = self.state.read(|s| {
            let known = s.status(id);
            let kind = kind.or(known.and_then(|k| k.kind));
            let from = Session::from_status(known);
            let ctx = Ctx {
                hypervisor: id,
                // Only grace expiry runs without a kind (a log without `Connected`); it does not
                // use it.
                kind: kind.unwrap_or(Kind::VMware),
                now,
                grace_ms,
                known: s.facts_of(id),
                guard: &self.config.mass_removal,
                held: known.and_then(|k| k.held),
                release,
                last_attempt,
                topology: self.topology.get(id).map_or(&[], Vec::as_slice),
            };
            (from, from.step(input, &ctx), kind)
        });
        for inv in &step.invalid {
            self.count_invalid(inv);
            tracing::warn!(hypervisor = %id, error = %inv, "observation refused in part");
        }
        let mut outcome = Outcome { appended: None, invalid: step.invalid.clone() };
        let mut events = step.events;
        let refused = match events.last() {
            Some(Event::Refused { refusals }) => Some(refusals.clone()),
            _ => None,
        };
        let known_refusals = is_inventory && self.refused.get(id) == Some(refused.as_ref().unwrap_or(&Vec::new()));
        if known_refusals && refused.is_some() {
            events.pop();
        }
        if !events.is_empty() {
            let records: Vec<Recorded> =
                events.into_iter().map(|event| Recorded { at: now, hypervisor: id.clone(), event }).collect();
            let moves = records.iter().any(|r| moves_host_ports(&r.event));
            let range = self.record(records, &Work::Hypervisor(id.clone())).await?;
            if moves {
                // New pNIC MACs may be in what the switches reported: re-filter their views.
                let switches: Vec<String> = self.discoveries.keys().cloned().collect();
                for switch in switches {
                    if let Err(e) = self.record_switch(&switch).await {
                        tracing::error!(switch = %switch, error = %e, "switch discovery not recorded");
                    }
                }
                self.warn_unported(id);
                self.record_disagreements(id).await?;
            }
            outcome.appended = Some(range);
        }
        match (step.next, is_inventory, refused) {
            (Session::Live, true, refused) => {
                self.refused.insert(id.clone(), refused.unwrap_or_default());
            }
            (Session::Live, false, None) => {}
            _ => {
                self.refused.remove(id);
            }
        }
        if from != step.next {
            tracing::debug!(hypervisor = %id, from = from.name(), to = step.next.name(), "session transition");
        }
        if !matches!(step.next, Session::Lost { .. }) {
            self.asked.remove(id);
        }
        if is_inventory && release && !matches!(step.ask, Some(Ask::Reread { .. })) {
            self.releases.remove(id);
        }
        if let Some(ask) = step.ask {
            if ask == Ask::LastAttempt {
                tracing::info!(hypervisor = %id, "grace period over: one last attempt before removing learnt information");
                self.asked.insert(id.clone());
            }
            self.ask(id, ask);
        }
        match step.timer {
            Timer::Unchanged => {}
            Timer::Arm { at } => {
                self.timers.insert(id.clone(), at);
            }
            Timer::Cancel => {
                self.timers.remove(id);
            }
        }
        let kind_name = kind.map_or_else(|| "Unknown".to_string(), |k| k.to_string());
        for notice in step.notices {
            let line = notice.line(&kind_name, id);
            match notice {
                Notice::Lost | Notice::Reestablished => tracing::info!(hypervisor = %id, "{line}"),
                Notice::Removing => tracing::warn!(hypervisor = %id, "{line}"),
            }
        }
        Ok(outcome)
    }

    /// Appends `records` for `work` (under its lease's fence when sharing a store), then
    /// applies the log up to them, as the log acknowledged them.
    async fn record(&mut self, records: Vec<Recorded>, work: &Work) -> Result<RangeInclusive<u64>> {
        let fence = self.holds.fence(work)?.cloned();
        let count = records.len() as u64;
        let range = self
            .append_held(records, fence.as_ref())
            .await
            .map_err(|source| Error::Log { context: "appending events", source })?;
        Metrics::bump(&self.metrics.events_appended, count);
        self.fold_to(*range.end(), Some(&range)).await?;
        Ok(range)
    }

    /// Applies the log up to `to` (whatever is already applied is not read again). Records
    /// outside `ours` were appended by other instances: what they call for is noted for
    /// [`Core::settle_followed`].
    async fn fold_to(&mut self, to: u64, ours: Option<&RangeInclusive<u64>>) -> Result<()> {
        let mut envelopes = Vec::new();
        while self.follow.position() <= to {
            match self.follow.next().await {
                Some(Ok(entry)) => envelopes.push(Envelope::from(entry)),
                Some(Err(e)) => {
                    self.apply(&envelopes, ours);
                    // A subscription ends at its error: the next fold starts a fresh one.
                    self.follow = self.log.subscribe(self.state.read(|s| s.seq()) + 1);
                    return Err(Error::Log { context: "reading the log", source: e });
                }
                None => {
                    self.apply(&envelopes, ours);
                    return Err(Error::Stopped("the log closed"));
                }
            }
        }
        self.apply(&envelopes, ours);
        Ok(())
    }

    fn apply(&mut self, envelopes: &[Envelope], ours: Option<&RangeInclusive<u64>>) {
        if envelopes.is_empty() {
            return;
        }
        for e in envelopes.iter().filter(|e| !ours.is_some_and(|r| r.contains(&e.seq))) {
            self.followed.saw |= matches!(e.event, Event::SwitchSaw { .. });
            self.followed.moves |= e.hypervisor.as_str() != SWITCH_RECORDER && moves_host_ports(&e.event);
        }
        self.state.write(|s| envelopes.iter().for_each(|e| s.apply(e)));
        self.snapshot(false);
    }

    /// After other instances' appends: when hosts moved, the switch views this instance keeps
    /// are filtered again; when hosts moved or a switch reported, the disagreements of the
    /// hypervisors it holds are judged again (its own appends do both where they happen).
    async fn settle_followed(&mut self) {
        let Followed { moves, saw } = std::mem::take(&mut self.followed);
        if moves {
            let switches: Vec<String> = self.discoveries.keys().cloned().collect();
            for switch in switches {
                if let Err(e) = self.record_switch(&switch).await {
                    tracing::error!(switch = %switch, error = %e, "switch discovery not recorded");
                }
            }
        }
        if moves || saw {
            for id in self.held_hypervisors() {
                self.warn_unported(&id);
                if let Err(e) = self.record_disagreements(&id).await {
                    tracing::error!(hypervisor = %id, error = %e, "disagreements not recorded");
                }
            }
        }
    }

    /// Records what `switch` saw (its last discovery, keeping the MACs of known pNICs) when it
    /// differs from what the log has; then records any change in the hypervisors'
    /// disagreements. Returns whether a `SwitchSaw` was appended.
    async fn record_switch(&mut self, switch: &str) -> Result<bool> {
        let Some((discovery, policy)) = self.discoveries.get(switch) else { return Ok(false) };
        let view = self.state.read(|s| {
            let macs = s.pnic_macs();
            let view = SwitchView::of(discovery, policy, |m| macs.contains(m), s.switch_view(switch));
            (s.switch_view(switch) != Some(&view)).then_some(view)
        });
        let Some(view) = view else { return Ok(false) };
        let (macs, lldp, bonds) = (view.macs.len(), view.lldp.len(), view.bonds.len());
        let event = Event::SwitchSaw { switch: switch.to_string(), view };
        let recorder = HypervisorId::new(SWITCH_RECORDER).map_err(|e| Error::Config(e.to_string()))?;
        let work = Work::Switch(switch.to_string());
        let range = self.record(vec![Recorded { at: self.clock.now(), hypervisor: recorder, event }], &work).await?;
        tracing::info!(switch, seq = range.start(), macs, lldp, bonds, "switch discovery recorded");
        for id in self.held_hypervisors() {
            self.warn_unported(&id);
            self.record_disagreements(&id).await?;
        }
        Ok(true)
    }

    /// Appends [`Event::TiesDisagreed`] for `id` when the uplinks whose sources disagree
    /// changed since the last one, and keeps the metric current.
    async fn record_disagreements(&mut self, id: &HypervisorId) -> Result<()> {
        if id.as_str() == SWITCH_RECORDER {
            return Ok(());
        }
        let now = self.state.read(|s| s.disagreements_of(id));
        if self.disagreed.get(id).map_or(&[][..], Vec::as_slice) == now.as_slice() {
            return Ok(());
        }
        for d in &now {
            let said: Vec<String> = d.opinions.iter().map(|(s, p)| format!("{s}: {p}")).collect();
            tracing::warn!(hypervisor = %id, host = %d.host, nic = %d.nic, sources = %said.join(", "), "port sources disagree");
        }
        let event = Event::TiesDisagreed { disagreements: now.clone() };
        let work = Work::Hypervisor(id.clone());
        self.record(vec![Recorded { at: self.clock.now(), hypervisor: id.clone(), event }], &work).await?;
        if now.is_empty() {
            self.disagreed.remove(id);
        } else {
            self.disagreed.insert(id.clone(), now);
        }
        let total: u64 = self.disagreed.values().map(|d| d.len() as u64).sum();
        self.metrics.tie_disagreements.store(total, Ordering::Relaxed);
        Ok(())
    }

    /// Appends `records`. While the log refuses them for a reason that can pass (disk full, IO
    /// error) they are held, and with them the core: further observations wait in their
    /// channels (backpressure on the adapters, nothing dropped) and the append is tried again
    /// every second until it is durable; [`Metrics::log_unavailable_since`] says so meanwhile.
    /// Gives up on an error that cannot pass, at start-up, or when the engine stops (then
    /// nothing of it was acknowledged).
    /// With a `fence`, each attempt is made under it: once the lease is another's, the append
    /// fails for good ([`store::Error::Fenced`] cannot pass).
    async fn append_held(
        &mut self,
        records: Vec<Recorded>,
        fence: Option<&store::Fence>,
    ) -> std::result::Result<RangeInclusive<u64>, store::Error> {
        loop {
            let started = std::time::Instant::now();
            // No timer here: a paused-time test's clock would jump to it while an append waits
            // on a thread. Health compares this with the time it asks at.
            self.metrics.append_sent_at.store(self.clock.now().max(1), Ordering::SeqCst);
            // A copy per attempt: a refused batch is not handed back. Once the engine stops, an
            // attempt still stuck in the log after STOP_WAIT gives way (it was not applied
            // here; if it did become durable, the next start folds it).
            let log = self.log.clone();
            let batch = records.clone();
            let attempt = async move {
                match fence {
                    Some(f) => log.append_fenced(batch, f).await,
                    None => log.append(batch).await,
                }
            };
            let result = match self.stop.as_mut() {
                Some(stop) => tokio::select! {
                    r = attempt => r,
                    _ = async {
                        let _ = stop.wait_for(|s| *s).await;
                        tokio::time::sleep(STOP_WAIT).await;
                    } => Err(store::Error::Closed("the engine stopped while the log was not answering".into())),
                },
                None => attempt.await,
            };
            self.metrics.append_sent_at.store(0, Ordering::SeqCst);
            if started.elapsed() >= super::UNANSWERED {
                tracing::warn!(took = ?started.elapsed(), ok = result.is_ok(), "the log answered an append only after a long wait");
            }
            let e = match result {
                Ok(range) => {
                    self.metrics.appended_in(started.elapsed());
                    if self.metrics.log_unavailable_since.swap(0, Ordering::SeqCst) != 0 {
                        tracing::info!(seq = range.start(), "the log accepts appends again; held-back events recorded");
                    }
                    return Ok(range);
                }
                Err(e) => e,
            };
            Metrics::bump(&self.metrics.append_failures, 1);
            let Some(stop) = self.stop.as_mut().filter(|_| e.is_retryable()) else { return Err(e) };
            let since = self.clock.now().max(1);
            if self.metrics.log_unavailable_since.compare_exchange(0, since, Ordering::SeqCst, Ordering::SeqCst).is_ok()
            {
                tracing::error!(error = %e, "the log cannot be appended: holding observations back, retrying every second");
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY_APPEND) => {}
                _ = stop.wait_for(|s| *s) => return Err(e),
            }
        }
    }

    /// Warns once about each host of `id` that now has uplinks but no known switch port.
    fn warn_unported(&mut self, id: &HypervisorId) {
        let now: BTreeSet<String> = self
            .state
            .read(|s| s.facts_of(id).map(|f| f.hosts_without_switch_port().into_iter().map(str::to_string).collect()))
            .unwrap_or_default();
        let before = self.unported.entry(id.clone()).or_default();
        if now.difference(before).next().is_some() {
            // Perhaps a switch has seen them: ask for a discovery now rather than in a minute.
            self.wanted.notify_waiters();
        }
        for host in now.difference(before) {
            let name = self.state.read(|s| s.facts_of(id).and_then(|f| f.host(host)).map(|h| h.name.clone()));
            tracing::warn!(
                hypervisor = %id,
                host = %host,
                name = name.as_deref().unwrap_or(""),
                "host has uplinks but no known switch port (no CDP/LLDP neighbour, no [[topology]] entry, \
                 no switch has seen its NICs): no VLAN is configured for it"
            );
        }
        *before = now;
    }

    fn count_invalid(&self, inv: &Invalid) {
        let m = &self.metrics;
        match inv {
            Invalid::MassRemovalHeldBack { .. } => Metrics::bump(&m.mass_removals_held_back, 1),
            Invalid::HollowInventory { .. } => Metrics::bump(&m.hollow_inventories, 1),
            _ => Metrics::bump(&m.invalid_observations, 1),
        }
    }

    fn publish(&mut self) {
        let (version, desired) = self.state.read(|s| {
            let v = s.desired_version();
            (v, (v != self.published_version).then(|| s.desired_shared()))
        });
        if let Some(d) = desired {
            self.desired.send_replace(d);
            self.published_version = version;
        }
    }

    /// Saves a snapshot when `snapshot_every` events were applied since the last one (or, when
    /// `force`, whenever anything was). A failed save is logged: the log still holds everything.
    fn snapshot(&mut self, force: bool) {
        let every = self.config.snapshot_every;
        let seq = self.state.read(|s| s.seq());
        let due = seq > self.snapshot_seq && (force || (every > 0 && seq - self.snapshot_seq >= every));
        if !due || every == 0 {
            return;
        }
        let bytes = self.state.read(State::encode);
        match self.log.save_snapshot(seq, bytes) {
            Ok(()) => {
                self.snapshot_seq = seq;
                Metrics::bump(&self.metrics.snapshots_saved, 1);
                tracing::debug!(seq, "projector snapshot saved");
            }
            Err(e) => tracing::warn!(seq, error = %e, "projector snapshot not saved"),
        }
    }
}

async fn sleep_or_never(wait: Option<Duration>) {
    match wait {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use store::{Log, MemoryLog, Record};

    use super::*;
    use crate::event::Event;
    use crate::fact::{Change, Fact, NetworkFact, UplinkFact, VlanSpec, VnicFact};
    use crate::ids::{SwitchPort, VlanId};

    /// A log of one hypervisor whose facts put VLAN 10 on `tor1 e1`, then a power toggle.
    async fn log() -> MemoryLog<Recorded> {
        let id = HypervisorId::new("vc").unwrap();
        let vnic = |powered_on| {
            Fact::Vnic(VnicFact {
                vm: "vm-1".into(),
                vm_name: "app".into(),
                nic: "4000".into(),
                mac: "m".into(),
                host: "h1".into(),
                network: "pg".into(),
                connected: true,
                powered_on,
            })
        };
        let facts = vec![
            Fact::Uplink(UplinkFact {
                host: "h1".into(),
                nic: "vmnic0".into(),
                mac: None,
                port: Some(SwitchPort::new("tor1", "e1").unwrap()),
                source: None,
            }),
            Fact::Network(NetworkFact {
                host: "h1".into(),
                network: "pg".into(),
                name: "pg".into(),
                vlan: VlanSpec::Access(VlanId::new(10).unwrap()),
                uplinks: vec!["vmnic0".into()],
            }),
            vnic(true),
        ];
        let events = vec![
            Event::Connected { kind: Kind::VMware, endpoint: "https://vc".into() },
            Event::Learnt { changes: facts.into_iter().map(Change::Upsert).collect() },
            Event::Learnt { changes: vec![Change::Upsert(vnic(false))] },
            Event::Learnt { changes: vec![Change::Upsert(vnic(true))] },
        ];
        let log = MemoryLog::new();
        let batch = events.into_iter().map(|event| Recorded { at: 1, hypervisor: id.clone(), event }).collect();
        log.append(batch).await.unwrap();
        log
    }

    fn full_fold(log: &MemoryLog<Recorded>, config: &Config) -> State {
        let mut s = State::new(&config.policy);
        for e in log.read(1) {
            s.apply(&Envelope::from(e.unwrap()));
        }
        s
    }

    #[tokio::test]
    async fn a_snapshot_that_cannot_be_read_is_ignored_and_the_whole_log_folded() {
        let config = Config::default();
        let log = log().await;
        let expected = full_fold(&log, &config);
        assert_eq!(expected.desired().ports.len(), 1);
        // Bytes that do not decode, then a snapshot of another format version.
        for bytes in [vec![0xff; 7], {
            let mut b = State::new(&config.policy).encode();
            b[0] = 9; // the format field leads the stored form
            b
        }] {
            assert!(State::decode(&bytes, &config.policy).is_err());
            log.save_snapshot(2, bytes).unwrap();
            let state = recover_state(&log, &config).unwrap();
            assert_eq!(state.seq(), 4);
            assert_eq!(state.state_hash(), expected.state_hash());
            assert_eq!(state.desired(), expected.desired());
        }
    }

    #[tokio::test]
    async fn a_readable_snapshot_is_loaded_and_only_the_tail_folded() {
        let config = Config::default();
        let log = log().await;
        let full = full_fold(&log, &config);
        // The snapshot at seq 3 (the vNIC powered off: no VLAN wanted) holds a hypervisor no
        // record in the log names: it shows in the recovered state only if the snapshot was
        // loaded, and VLAN 10 (seq 4 powers the vNIC on) only if the tail was folded on top.
        let mut at_three = State::new(&config.policy);
        for e in log.read(1).take(3) {
            at_three.apply(&Envelope::from(e.unwrap()));
        }
        assert!(at_three.desired().ports.is_empty());
        let marker = HypervisorId::new("only-in-the-snapshot").unwrap();
        at_three.apply(&Envelope {
            seq: 3,
            at: 1,
            hypervisor: marker.clone(),
            schema: Recorded::SCHEMA,
            prev: [0; 32],
            event: Event::Connected { kind: Kind::VMware, endpoint: "https://marker".into() },
        });
        log.save_snapshot(3, at_three.encode()).unwrap();
        let state = recover_state(&log, &config).unwrap();
        assert_eq!(state.seq(), 4);
        assert_eq!(state.endpoint(&marker), Some("https://marker"), "the snapshot was not loaded");
        assert_ne!(state.state_hash(), full.state_hash());
        assert_eq!(state.desired(), full.desired(), "the tail after the snapshot was not folded");
    }
}
