//! The client's circuit breaker of one instance: adaptive throttling from recent requests and
//! accepts (the scheme of Google's SRE book, chapter "Handling Overload").
//!
//! Over a sliding window (ten buckets), the breaker counts the attempts sent to the instance
//! and those it *accepted* (answered in any way that does not blame the instance: a reply, an
//! application error, a decode error; a timeout, a lost connection, an internal error or an
//! overloaded answer is not an accept). A new attempt is refused locally, without being sent,
//! with probability
//!
//! ```text
//! p = max(0, (requests - protection - k * accepts) / (requests + 1))
//! ```
//!
//! so a healthy instance (accepts ≈ requests) is never throttled, an instance failing every
//! call gets fewer and fewer of them as the window fills (refusals count as requests), and
//! one failing half of its calls loses a quarter of its traffic at `k = 1.5`. Refusals count
//! as requests, so the throttle holds while the instance keeps failing, and lifts by itself as
//! its accepts return: no half-open state to tune. `protection` requests in a window are
//! never refused, so a quiet instance is not cut off by a failure or two.
//!
//! Counting is lock-free: each bucket is three atomics, reset by the first writer of a new
//! period. The window is read only when the instance has failed within it, so a healthy
//! instance's calls pay two atomic increments and a clock read.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::BreakerConfig;

/// Buckets in the window.
const BUCKETS: usize = 10;

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerOptions {
    /// Whether the breaker refuses anything.
    pub enabled: bool,
    /// How many times the accepts may fall short of the requests before refusals start.
    pub k: f64,
    /// The window the counts cover.
    pub window: Duration,
    /// Requests in a window never refused.
    pub protection: u32,
}

impl Default for BreakerOptions {
    fn default() -> Self {
        Self::from(&BreakerConfig::default())
    }
}

impl From<&BreakerConfig> for BreakerOptions {
    fn from(c: &BreakerConfig) -> Self {
        Self {
            enabled: c.enabled,
            k: c.k,
            window: Duration::from_millis(c.window_ms.max(BUCKETS as u64)),
            protection: c.protection,
        }
    }
}

#[derive(Debug, Default)]
struct Bucket {
    /// The period this bucket counts (its index since the breaker started, plus one; 0:
    /// never used).
    period: AtomicU64,
    requests: AtomicU32,
    accepts: AtomicU32,
}

/// Requests and accepts of one instance over a sliding window, and the decision to refuse.
#[derive(Debug)]
pub struct Breaker {
    options: BreakerOptions,
    started: Instant,
    bucket_len: Duration,
    buckets: [Bucket; BUCKETS],
    /// Whether an attempt failed within the window (else nothing is refused and the window
    /// is not read).
    failed_lately: AtomicU64,
    /// Whether the last decision refused (for the transition log and metric).
    open: AtomicBool,
}

/// What the breaker decided for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send it.
    Allow,
    /// Refuse it locally; `tripped` when this is the first refusal since the instance last
    /// accepted enough (the breaker opened).
    Refuse {
        /// Whether the breaker opened with this refusal.
        tripped: bool,
    },
}

impl Breaker {
    /// A breaker with nothing counted.
    pub fn new(options: BreakerOptions) -> Self {
        Self {
            options,
            started: Instant::now(),
            bucket_len: options.window / BUCKETS as u32,
            buckets: Default::default(),
            failed_lately: AtomicU64::new(0),
            open: AtomicBool::new(false),
        }
    }

    /// The current period (1-based).
    fn period(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.started);
        (elapsed.as_nanos() / self.bucket_len.as_nanos().max(1)) as u64 + 1
    }

    /// The bucket of `period`, reset first if it still holds an older period.
    fn bucket(&self, period: u64) -> &Bucket {
        let bucket = &self.buckets[(period % BUCKETS as u64) as usize];
        let seen = bucket.period.load(Ordering::Acquire);
        if seen != period
            && bucket
                .period
                .compare_exchange(seen, period, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            bucket.requests.store(0, Ordering::Relaxed);
            bucket.accepts.store(0, Ordering::Relaxed);
        }
        bucket
    }

    /// Requests and accepts within the window ending at `period`.
    fn totals(&self, period: u64) -> (u32, u32) {
        let oldest = period.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| (oldest..=period).contains(&b.period.load(Ordering::Acquire)))
            .fold((0, 0), |(r, a), b| {
                (
                    r + b.requests.load(Ordering::Relaxed),
                    a + b.accepts.load(Ordering::Relaxed),
                )
            })
    }

    /// The chance that an attempt is refused now.
    pub fn refusal_chance(&self) -> f64 {
        if !self.options.enabled {
            return 0.0;
        }
        let period = self.period();
        let failed = self.failed_lately.load(Ordering::Relaxed);
        if failed == 0 || period.saturating_sub(failed) >= BUCKETS as u64 {
            return 0.0;
        }
        let (requests, accepts) = self.totals(period);
        let short = f64::from(requests) - f64::from(self.options.protection) - self.options.k * f64::from(accepts);
        (short / (f64::from(requests) + 1.0)).max(0.0)
    }

    /// Decides whether one attempt may be sent; a refusal counts as a request that was not
    /// accepted.
    pub fn decide(&self) -> Decision {
        let chance = self.refusal_chance();
        if chance > 0.0 && fastrand::f64() < chance {
            let period = self.period();
            self.bucket(period).requests.fetch_add(1, Ordering::Relaxed);
            let tripped = !self.open.swap(true, Ordering::Relaxed);
            return Decision::Refuse { tripped };
        }
        Decision::Allow
    }

    /// Counts one attempt that was sent, and whether the instance accepted it. Answers
    /// whether this closed a breaker that had refused (the instance accepts again).
    pub fn record(&self, accepted: bool) -> bool {
        if !self.options.enabled {
            return false;
        }
        let period = self.period();
        let bucket = self.bucket(period);
        bucket.requests.fetch_add(1, Ordering::Relaxed);
        if accepted {
            bucket.accepts.fetch_add(1, Ordering::Relaxed);
            self.open.load(Ordering::Relaxed)
                && self.refusal_chance() == 0.0
                && self.open.swap(false, Ordering::Relaxed)
        } else {
            self.failed_lately.store(period, Ordering::Relaxed);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> BreakerOptions {
        BreakerOptions {
            enabled: true,
            k: 1.5,
            window: Duration::from_secs(10),
            protection: 5,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_instance_is_never_refused() {
        let breaker = Breaker::new(options());
        for _ in 0..1000 {
            assert_eq!(breaker.decide(), Decision::Allow);
            breaker.record(true);
        }
        assert_eq!(breaker.refusal_chance(), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_instance_gets_few_calls_and_recovers_when_it_accepts_again() {
        let breaker = Breaker::new(options());
        let mut sent = 0;
        for _ in 0..1000 {
            if breaker.decide() == Decision::Allow {
                sent += 1;
                breaker.record(false);
            }
            tokio::time::advance(Duration::from_millis(5)).await;
        }
        assert!(sent < 50, "{sent} of 1000 attempts reached a failing instance");
        assert!(breaker.refusal_chance() > 0.9);
        // Failing half of the calls: refused about a quarter of the time at k = 1.5.
        let half = Breaker::new(options());
        for i in 0..400 {
            half.record(i % 2 == 0);
        }
        let chance = half.refusal_chance();
        assert!((0.2..0.3).contains(&chance), "{chance}");
        // The window moves on: once the failures are older than it, nothing is refused.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(breaker.refusal_chance(), 0.0);
        assert_eq!(breaker.decide(), Decision::Allow);
    }

    #[tokio::test(start_paused = true)]
    async fn a_few_failures_of_a_quiet_instance_are_protected_and_off_refuses_nothing() {
        let breaker = Breaker::new(options());
        for _ in 0..5 {
            breaker.record(false);
        }
        assert_eq!(breaker.refusal_chance(), 0.0, "within the protection");
        let off = Breaker::new(BreakerOptions {
            enabled: false,
            ..options()
        });
        for _ in 0..100 {
            off.record(false);
        }
        assert_eq!(off.refusal_chance(), 0.0);
    }
}
