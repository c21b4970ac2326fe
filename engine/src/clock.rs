//! The injected clock. The pure core never reads time: the runtime asks a [`Clock`] for "now"
//! (stamped on every event) and waits with tokio timers.
//!
//! [`TokioClock`] derives wall-clock milliseconds from tokio's `Instant`, so under
//! `tokio::time::pause()` time only moves when the test advances it; [`SystemClock`] is the
//! production clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::event::UnixMs;

/// A source of the current time in unix milliseconds.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> UnixMs;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMs {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as UnixMs).unwrap_or(0)
    }
}

/// Unix time that follows tokio's clock: `start` at creation, plus whatever tokio time has
/// elapsed since (paused time moves only when advanced).
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    start: UnixMs,
    base: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `start` now.
    pub fn starting_at(start: UnixMs) -> Self {
        Self { start, base: tokio::time::Instant::now() }
    }

    /// A clock reading the system time now, advancing with tokio's clock.
    pub fn from_system() -> Self {
        Self::starting_at(SystemClock.now())
    }
}

impl Clock for TokioClock {
    fn now(&self) -> UnixMs {
        let elapsed: Duration = tokio::time::Instant::now().saturating_duration_since(self.base);
        self.start + elapsed.as_millis() as UnixMs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_moves_only_with_tokio_time() {
        let c = TokioClock::starting_at(1_000);
        assert_eq!(c.now(), 1_000);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(c.now(), 4_000);
    }
}
