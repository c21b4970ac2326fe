//! The async shell around the pure core: it only wires. One core task owns the sessions'
//! timers and is the log's only writer; for each observation or timer it steps the session
//! ([`crate::session::Session::step`]), appends the events, reads back what the log
//! acknowledged, folds it into the shared [`State`], publishes desired state, and logs the
//! operator notices.
//!
//! ```text
//! adapter ──Observation──> attach() forwarder ──┐
//!                      observe() ───────────────┤──> core task ── append ──> store::Log
//!                      grace timers ────────────┘        │ read back + State::apply
//!                                                       └──> watch<Arc<Desired>> ──> reconciler
//! ```
//!
//! Start-up ([`Engine::start`]) loads the latest snapshot, folds the tail, appends `Expired` for
//! hypervisors whose grace ran out while netfold was down and re-arms the other grace timers
//! from the `Lost` times in the log. Observations are handled one at a time, so a session
//! always diffs against facts that include all of its earlier events.
//!
//! Instances sharing one store (ADR 0014) start with [`Engine::start_shared`]: the core then
//! follows the log, folding every instance's appends, and appends only for the [`Work`] this
//! instance holds a lease on ([`Engine::hold`]), each append under that lease's fence. Taking
//! a hypervisor's lease folds the log to the store's head first, then expires it or re-arms its
//! grace timer from the `Lost` in the log, exactly as a start-up does.

mod core;
pub mod discover;

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::Config;
use crate::desired::Desired;
use crate::error::{Error, Invalid, Result};
use crate::event::Recorded;
use crate::ids::{HypervisorId, Kind};
use crate::observe::{Ask, Observation};
use crate::projector::State;

/// A piece of work instances sharing one store hold a lease on (ADR 0014): a hypervisor's
/// session, or a switch's reconciler (with its discovery).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Work {
    Hypervisor(HypervisorId),
    Switch(String),
}

impl Work {
    /// The lease's name: `hypervisor/<id>`, `switch/<name>`.
    pub fn lease(&self) -> String {
        match self {
            Work::Hypervisor(id) => format!("hypervisor/{id}"),
            Work::Switch(name) => format!("switch/{name}"),
        }
    }
}

impl std::fmt::Display for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Work::Hypervisor(id) => write!(f, "hypervisor {id}"),
            Work::Switch(name) => write!(f, "switch {name}"),
        }
    }
}

/// How many commands may wait for the core task (beyond it senders wait: backpressure).
const QUEUE: usize = 1024;

/// What became of one observation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The sequence numbers of the events appended (empty range: none).
    pub appended: Option<RangeInclusive<u64>>,
    /// What was refused (the rest was learnt).
    pub invalid: Vec<Invalid>,
}

/// How long an append may go unanswered before [`Metrics::log_unanswered_since`] says so.
pub const UNANSWERED: std::time::Duration = std::time::Duration::from_secs(5);

/// Counters for metrics.
#[derive(Default)]
pub struct Metrics {
    pub events_appended: AtomicU64,
    pub invalid_observations: AtomicU64,
    pub mass_removals_held_back: AtomicU64,
    pub hollow_inventories: AtomicU64,
    pub append_failures: AtomicU64,
    /// Unix ms since when the log has refused appends (disk full, IO error), 0 while appends
    /// work: read it with [`Metrics::log_unavailable_since`] (health reports it).
    pub log_unavailable_since: AtomicU64,
    /// Unix ms the append in flight was sent, 0 while none is: read it with
    /// [`Metrics::log_unanswered_since`] (health reports one that goes unanswered).
    pub append_sent_at: AtomicU64,
    pub snapshots_saved: AtomicU64,
    /// How many uplinks' port sources disagree now ([`crate::Event::TiesDisagreed`]).
    pub tie_disagreements: AtomicU64,
    /// Told how long every durable append took (the binary feeds a histogram with it).
    append_observer: std::sync::OnceLock<Box<dyn Fn(std::time::Duration) + Send + Sync>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("events_appended", &self.events_appended)
            .field("append_failures", &self.append_failures)
            .field("log_unavailable_since", &self.log_unavailable_since)
            .field("append_sent_at", &self.append_sent_at)
            .field("snapshots_saved", &self.snapshots_saved)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Has `f` told the wall-clock duration of every durable append from now on. Only the
    /// first observer is kept; returns whether this one was.
    pub fn observe_appends(&self, f: impl Fn(std::time::Duration) + Send + Sync + 'static) -> bool {
        self.append_observer.set(Box::new(f)).is_ok()
    }

    fn appended_in(&self, took: std::time::Duration) {
        if let Some(f) = self.append_observer.get() {
            f(took);
        }
    }

    fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }

    /// Since when (unix ms) the log has refused appends; `None` while appends work. Meanwhile
    /// the engine holds observations back and retries every second.
    pub fn log_unavailable_since(&self) -> Option<crate::event::UnixMs> {
        Some(self.log_unavailable_since.load(Ordering::SeqCst)).filter(|&t| t != 0)
    }

    /// When (unix ms) the append in flight was sent, if it has had no answer for
    /// [`UNANSWERED`] by `now` (a store that hangs: a stalled disk, a database behind a
    /// partition); `None` while the log answers. Meanwhile the engine holds observations back
    /// behind it, and still awaits it: it may yet become durable, so it is never given up and
    /// tried again.
    pub fn log_unanswered_since(&self, now: crate::event::UnixMs) -> Option<crate::event::UnixMs> {
        let sent = self.append_sent_at.load(Ordering::SeqCst);
        (sent != 0 && now.saturating_sub(sent) >= UNANSWERED.as_millis() as u64).then_some(sent)
    }

    /// A counter's current value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Read access to the live projected state (for `/state`, `why`, the CLI).
#[derive(Clone)]
pub struct SharedState(Arc<RwLock<State>>);

impl From<State> for SharedState {
    /// A shared view of a state no engine runs (tests, tools).
    fn from(state: State) -> Self {
        SharedState(Arc::new(RwLock::new(state)))
    }
}

impl SharedState {
    /// Runs `f` on the current state (a read lock held for its duration: keep it short).
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        // The core only writes through `State::apply`, which cannot panic half-way through a
        // change on valid data, so a poisoned lock still holds a consistent state.
        let guard = self.0.read().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    fn write<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut guard = self.0.write().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

enum Command {
    Observe {
        hypervisor: HypervisorId,
        kind: Kind,
        observation: Observation,
        reply: Option<oneshot::Sender<Result<Outcome>>>,
    },
    Attach {
        hypervisor: HypervisorId,
        attached: Attached,
    },
    Release {
        hypervisor: HypervisorId,
        reply: oneshot::Sender<Result<u64>>,
    },
    /// This instance took `work`'s lease: append for it under `fence` from now on.
    Hold {
        work: Work,
        fence: store::Fence,
        reply: oneshot::Sender<Result<()>>,
    },
    /// This instance gave `work`'s lease up or lost it: append nothing more for it.
    Unhold {
        work: Work,
        reply: oneshot::Sender<()>,
    },
    /// A switch's discovery, with the policy its sightings are judged by.
    Saw {
        switch: String,
        discovery: crate::discovery::Discovery,
        policy: crate::plan::Policy,
        reply: Option<oneshot::Sender<Result<bool>>>,
    },
}

/// Hands switch discoveries to the engine ([`Engine::switch_observer`]); cheap to clone.
#[derive(Clone)]
pub struct SwitchObserver(mpsc::Sender<Command>, Arc<tokio::sync::Notify>);

impl SwitchObserver {
    /// Records what `switch` saw (as [`crate::Event::SwitchSaw`], when it changed) and waits
    /// until it is durable and applied. Returns whether an event was appended.
    pub async fn saw(
        &self,
        switch: &str,
        discovery: crate::discovery::Discovery,
        policy: crate::plan::Policy,
    ) -> Result<bool> {
        let (reply, answer) = oneshot::channel();
        self.0
            .send(Command::Saw { switch: switch.to_string(), discovery, policy, reply: Some(reply) })
            .await
            .map_err(|_| Error::Stopped("the core task is not running"))?;
        answer.await.map_err(|_| Error::Stopped("the core task stopped before answering"))?
    }

    /// Notified when the engine learnt hosts whose NICs lead to no known port: the pollers read
    /// their switches at once (on demand) instead of at their next round.
    pub fn wanted(&self) -> Arc<tokio::sync::Notify> {
        self.1.clone()
    }
}

/// An attached adapter, as the core sees it.
struct Attached {
    asks: mpsc::Sender<Ask>,
    /// How long expiry waits for the adapter's last attempt, ms.
    last_attempt_window_ms: u64,
}

/// How many asks may wait for an adapter (it reads them between requests).
const ASKS: usize = 8;

/// An adapter's two channels to the engine: observations in, asks out.
pub struct Link {
    /// Where the adapter sends its observations.
    pub observations: mpsc::Sender<Observation>,
    /// What the engine asks of the adapter ([`Ask`]); the adapter must keep reading it.
    pub asks: mpsc::Receiver<Ask>,
}

/// Releases held mass removals ([`Engine::release`]); cheap to clone.
#[derive(Clone)]
pub struct Releaser(mpsc::Sender<Command>);

impl Releaser {
    /// See [`Engine::release`].
    pub async fn release(&self, hypervisor: HypervisorId) -> Result<u64> {
        let (reply, answer) = oneshot::channel();
        self.0
            .send(Command::Release { hypervisor, reply })
            .await
            .map_err(|_| Error::Stopped("the core task is not running"))?;
        answer.await.map_err(|_| Error::Stopped("the core task stopped before answering"))?
    }
}

/// The running engine. Dropping it without [`Engine::shutdown`] stops the core task once its
/// senders are gone.
pub struct Engine {
    commands: mpsc::Sender<Command>,
    state: SharedState,
    desired: watch::Receiver<Arc<Desired>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    metrics: Arc<Metrics>,
    /// Discovery wanted now ([`SwitchObserver::wanted`]).
    wanted: Arc<tokio::sync::Notify>,
}

impl Engine {
    /// Recovers state from `log` (latest snapshot + tail), expires hypervisors whose grace ran
    /// out while netfold was down, re-arms the other grace timers and starts the core task.
    pub async fn start<L>(log: Arc<L>, config: Config, clock: Arc<dyn Clock>) -> Result<Engine>
    where
        L: store::Log<Recorded>,
    {
        Self::start_as(log, config, clock, false).await
    }

    /// Like [`Engine::start`], for one of several instances sharing `log` (ADR 0014): the core
    /// follows the log, folding what every instance appends, and appends nothing (arms no grace
    /// timer) until it is told it holds some work ([`Engine::hold`]).
    pub async fn start_shared<L>(log: Arc<L>, config: Config, clock: Arc<dyn Clock>) -> Result<Engine>
    where
        L: store::Log<Recorded>,
    {
        Self::start_as(log, config, clock, true).await
    }

    async fn start_as<L>(log: Arc<L>, config: Config, clock: Arc<dyn Clock>, shared: bool) -> Result<Engine>
    where
        L: store::Log<Recorded>,
    {
        config.validate()?;
        let metrics = Arc::new(Metrics::default());
        let state = SharedState(Arc::new(RwLock::new(core::recover_state(&*log, &config)?)));
        let initial = state.read(State::desired_shared);
        let (desired_tx, desired) = watch::channel(initial);
        let (commands, rx) = mpsc::channel(QUEUE);
        let (stop, stop_rx) = watch::channel(false);
        let mut core = core::Core::new(log, config, clock, state.clone(), desired_tx, metrics.clone(), shared);
        let wanted = core.wanted.clone();
        core.expire_or_rearm().await?;
        let task = tokio::spawn(core.run(rx, stop_rx));
        Ok(Engine { commands, state, desired, stop, task, metrics, wanted })
    }

    /// The channel an adapter sends `hypervisor`'s observations into. Must be called inside
    /// the tokio runtime (it spawns a small forwarding task). An adapter attached this way is
    /// never asked anything: expiry does not wait for a last attempt.
    pub fn attach(&self, hypervisor: HypervisorId, kind: Kind) -> mpsc::Sender<Observation> {
        self.forward(hypervisor, kind)
    }

    /// Attaches an adapter that also listens to the engine: it is asked to re-read when the
    /// engine judged its inventory a loss, and for a last attempt before the grace runs out
    /// (expiry then waits up to `last_attempt_window`).
    pub async fn link(&self, hypervisor: HypervisorId, kind: Kind, last_attempt_window: std::time::Duration) -> Link {
        let (asks_tx, asks) = mpsc::channel(ASKS);
        let attached = Attached { asks: asks_tx, last_attempt_window_ms: last_attempt_window.as_millis() as u64 };
        // A stopped core drops the command: the adapter then sees its asks channel closed.
        let _ = self.commands.send(Command::Attach { hypervisor: hypervisor.clone(), attached }).await;
        Link { observations: self.forward(hypervisor, kind), asks }
    }

    /// Lets `hypervisor`'s held mass removal through at its next full read (which the adapter
    /// is asked for now). Returns how many removals were held.
    pub async fn release(&self, hypervisor: HypervisorId) -> Result<u64> {
        self.releaser().release(hypervisor).await
    }

    /// This instance holds `work`'s lease (`fence`): from now on the core appends for it under
    /// that fence. Before it returns, the log is folded up to the store's current head (the
    /// previous holder's last appends included), and for a hypervisor its grace is expired or
    /// re-armed from the log. Start the work (its adapter, its reconciler) only after this.
    pub async fn hold(&self, work: Work, fence: store::Fence) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Hold { work, fence, reply })
            .await
            .map_err(|_| Error::Stopped("the core task is not running"))?;
        answer.await.map_err(|_| Error::Stopped("the core task stopped before answering"))?
    }

    /// This instance no longer holds `work`'s lease: nothing more is appended for it (what its
    /// adapter still sends is refused, its grace timer is dropped). Stop the work first. The
    /// future borrows nothing of the engine, so it can run on as a task of its own: the core
    /// takes the command in order, after what it is doing now.
    pub fn unhold(&self, work: Work) -> impl std::future::Future<Output = ()> + Send + 'static {
        let commands = self.commands.clone();
        async move {
            let (reply, answer) = oneshot::channel();
            if commands.send(Command::Unhold { work, reply }).await.is_ok() {
                let _ = answer.await;
            }
        }
    }

    /// A handle that records switch discoveries (for the discovery pollers).
    pub fn switch_observer(&self) -> SwitchObserver {
        SwitchObserver(self.commands.clone(), self.wanted.clone())
    }

    /// A handle that releases held removals (for the HTTP endpoint).
    pub fn releaser(&self) -> Releaser {
        Releaser(self.commands.clone())
    }

    fn forward(&self, hypervisor: HypervisorId, kind: Kind) -> mpsc::Sender<Observation> {
        let (tx, mut rx) = mpsc::channel::<Observation>(QUEUE);
        let commands = self.commands.clone();
        tokio::spawn(async move {
            while let Some(observation) = rx.recv().await {
                let cmd = Command::Observe { hypervisor: hypervisor.clone(), kind, observation, reply: None };
                if commands.send(cmd).await.is_err() {
                    break;
                }
            }
        });
        tx
    }

    /// Hands one observation to the engine and waits until its events are durable and applied.
    pub async fn observe(&self, hypervisor: HypervisorId, kind: Kind, observation: Observation) -> Result<Outcome> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Observe { hypervisor, kind, observation, reply: Some(reply) })
            .await
            .map_err(|_| Error::Stopped("the core task is not running"))?;
        answer.await.map_err(|_| Error::Stopped("the core task stopped before answering"))?
    }

    /// Desired state; changes whenever it does (the reconciler subscribes here).
    pub fn desired(&self) -> watch::Receiver<Arc<Desired>> {
        self.desired.clone()
    }

    /// Read access to the projected state.
    pub fn state(&self) -> SharedState {
        self.state.clone()
    }

    /// The engine's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops the core task after the command it is handling (its appends complete), saves a
    /// final snapshot and waits for it to end.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.stop.send(true);
        drop(self.commands);
        self.task.await.map_err(|_| Error::Stopped("the core task panicked"))
    }
}
