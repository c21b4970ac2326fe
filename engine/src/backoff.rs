//! Capped exponential backoff with "equal jitter", shared by every retry loop (hypervisor
//! adapters, switch reconcilers). Pure: the caller supplies the attempt number and the random
//! draw, so the schedule is testable without a clock or an RNG.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait (before jitter).
    pub initial: Duration,
    /// The longest wait (before jitter).
    pub max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    /// The wait before retry `attempt` (0-based): `initial · 2^attempt`, capped at `max`, then
    /// scaled into `[½, 1]` of itself by `jitter ∈ [0, 1]`.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let base = self.initial.saturating_mul(2u32.saturating_pow(attempt.min(30))).min(self.max);
        base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_jitters_within_half() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(800));
        assert_eq!(b.delay(10, 1.0), Duration::from_secs(2));
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::from_secs(1));
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(50));
        assert_eq!(b.delay(0, 7.0), Duration::from_millis(100), "jitter is clamped");
    }
}
