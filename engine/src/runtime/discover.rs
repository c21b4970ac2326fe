//! The discovery poller: one task per switch that asks the switch what it sees
//! ([`Switch::discover`]: MAC table, LLDP neighbours, bonds) every `every` (default 60 s),
//! whenever asked ([`Poller::demand`]) and whenever the engine learnt hosts that no source ties
//! yet ([`SwitchObserver::wanted`]), and hands it to the engine core, which records it as
//! [`crate::Event::SwitchSaw`] when it changed. Wiring only: what a sighting means is
//! [`crate::discovery`]'s, judged by the switch's own policy (managed and excluded ports).
//!
//! ```text
//! timer / demand ──> switch.discover() ──Discovery──> SwitchObserver ──> core ── SwitchSaw ──> log
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::SwitchObserver;
use crate::plan::Policy;
use crate::switch::Switch;

/// The default interval between two discovery rounds.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(60);

/// What a poller did, for `/metrics` and `/healthz`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Rounds that read the switch.
    pub rounds: AtomicU64,
    /// Rounds that appended a `SwitchSaw` (what the switch saw changed).
    pub recorded: AtomicU64,
    /// Rounds that failed (switch unreachable, bad answer, engine refused).
    pub failed: AtomicU64,
    /// Whether the last round failed.
    pub failing: AtomicBool,
    /// Whether the back end cannot discover at all (the poller then stopped).
    pub unsupported: AtomicBool,
    /// The last failure, in words.
    pub last_error: Mutex<Option<String>>,
}

impl Stats {
    /// The last failure, if the last round failed.
    pub fn failure(&self) -> Option<String> {
        if !self.failing.load(Ordering::Relaxed) {
            return None;
        }
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn failed(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.failing.store(true, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }
}

/// A discovery poller for one switch; [`Poller::run`] drives it.
pub struct Poller<S> {
    switch: Arc<S>,
    policy: Policy,
    every: Duration,
    observer: SwitchObserver,
    demand: Arc<Notify>,
    stats: Arc<Stats>,
}

impl<S: Switch> Poller<S> {
    /// A poller reading `switch` every `every`, judging sightings by `policy`.
    pub fn new(switch: Arc<S>, policy: Policy, every: Duration, observer: SwitchObserver) -> Self {
        Self { switch, policy, every, observer, demand: Arc::default(), stats: Arc::default() }
    }

    /// Notify it to read the switch now (on demand).
    pub fn demand(&self) -> Arc<Notify> {
        self.demand.clone()
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// One round: read the switch and hand the discovery to the engine. `Ok(None)`: the back end
    /// cannot discover; `Ok(Some(appended))` otherwise.
    pub async fn round(&self) -> Result<Option<bool>, String> {
        let name = self.switch.name().to_string();
        let d = match self.switch.discover().await {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        self.stats.rounds.fetch_add(1, Ordering::Relaxed);
        let appended = self.observer.saw(&name, d, self.policy.clone()).await.map_err(|e| e.to_string())?;
        if appended {
            self.stats.recorded.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.failing.store(false, Ordering::Relaxed);
        Ok(Some(appended))
    }

    /// Runs rounds until `stop` completes: at once, then every `every`, on each demand, and when
    /// the engine learnt hosts no source ties yet ([`SwitchObserver::wanted`]).
    pub async fn run(self, stop: impl std::future::Future<Output = ()> + Send) {
        tokio::pin!(stop);
        let wanted = self.observer.wanted();
        loop {
            match self.round().await {
                Ok(None) => {
                    tracing::info!(switch = %self.switch.name(), "switch back end does not discover; poller stopped");
                    self.stats.unsupported.store(true, Ordering::Relaxed);
                    return;
                }
                Ok(Some(_)) => {}
                Err(e) => {
                    tracing::warn!(switch = %self.switch.name(), error = %e, "switch discovery failed; retrying at the next round");
                    self.stats.failed(e);
                }
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(self.every) => {}
                _ = self.demand.notified() => {}
                _ = wanted.notified() => {}
            }
        }
    }
}
