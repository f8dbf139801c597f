//! Capped exponential backoff: the one delay function behind the discovery cache's re-watch,
//! retry pauses, etcd request retries and outlier ejection periods.
//!
//! [`exponential`] gives the deterministic delay of an attempt (`base * 2^(attempt-1)`, capped);
//! [`jittered`] draws from its upper half so that many clients backing off together spread
//! out. Ejection uses the deterministic form (an operator can predict it); everything that
//! retries against a shared resource uses the jittered one. [`Backoff`] is the stateful
//! iterator over jittered delays; [`spread`] is the one-off pause that spreads many
//! processes' reactions to one event.

use std::time::Duration;

/// The delay before attempt `attempt + 1` after `attempt` (1-based) failures:
/// `base * 2^(attempt-1)`, never more than `cap` (and `base` for `attempt` 0 or 1).
pub fn exponential(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(cap).min(cap.max(base))
}

/// [`exponential`], drawn uniformly from its upper half.
pub fn jittered(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let full = exponential(base, cap, attempt);
    full / 2 + full.mul_f64(fastrand::f64() * 0.5)
}

/// A delay drawn uniformly from `[0, window)`: many processes that react to one event (a
/// registry that comes back empty) each wait one before acting, so they do not act together.
pub fn spread(window: Duration) -> Duration {
    window.mul_f64(fastrand::f64())
}

/// Successive jittered delays that double from `base` up to `cap`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `base`, never exceeds `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        jittered(self.base, self.cap, self.attempt)
    }

    /// Starts over from `base`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn exponential_doubles_and_caps() {
        let d: Vec<Duration> = (0..7).map(|a| exponential(100 * MS, 1000 * MS, a)).collect();
        assert_eq!(d, [100, 100, 200, 400, 800, 1000, 1000].map(|m| m * MS));
        assert_eq!(exponential(100 * MS, 1000 * MS, u32::MAX), 1000 * MS, "no overflow");
        assert_eq!(exponential(100 * MS, 10 * MS, 3), 100 * MS, "a cap below base is base");
    }

    #[test]
    fn backoff_grows_with_jitter_and_stays_capped() {
        let mut b = Backoff::new(100 * MS, Duration::from_secs(2));
        let first = b.next_delay();
        assert!(first >= 50 * MS && first <= 100 * MS, "{first:?}");
        let second = b.next_delay();
        assert!(second >= 100 * MS && second <= 200 * MS, "{second:?}");
        // 400 ms, 800 ms, 1.6 s, then capped at 2 s.
        for _ in 0..3 {
            b.next_delay();
        }
        for _ in 0..100 {
            let d = b.next_delay();
            assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(2), "{d:?}");
        }
        b.reset();
        assert!(b.next_delay() <= 100 * MS);
    }
}
