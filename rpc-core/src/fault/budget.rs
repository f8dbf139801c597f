//! The retry budget: retries and fail-overs together add at most a share of the calls.
//!
//! Every call deposits `percent / 100` of a token; every retry round and every move to
//! another instance withdraws one. On top of that a floor of `min_per_sec` tokens a second
//! keeps a trickle of retries possible when calls are few. The bucket holds at most what ten
//! seconds of floor and of deposits from [`MAX_BURST_CALLS`] calls add up to, so a long quiet
//! spell does not bank an unbounded burst. When the bucket is empty, the failed call returns
//! its error at once: under a wide outage, retries stop multiplying the load (a "retry
//! storm") instead of hiding it.
//!
//! Lock-free: one atomic add per call, one compare-and-swap per retry. Exhaustion is counted
//! and logged at most once a second.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use tokio::time::Instant;
use tracing::warn;

use crate::metrics;

/// Tokens are kept in thousandths.
const MILLI: i64 = 1000;
/// Calls whose deposits the bucket may bank at most.
pub const MAX_BURST_CALLS: i64 = 1000;

/// Settings of a [`RetryBudget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetOptions {
    /// Retries and fail-overs may add at most this share of the calls, in percent.
    pub percent: u32,
    /// Tokens a second on top, so a few retries are possible when calls are few.
    pub min_per_sec: u32,
}

impl Default for BudgetOptions {
    fn default() -> Self {
        Self {
            percent: 20,
            min_per_sec: 10,
        }
    }
}

/// A retry budget (see the module docs).
#[derive(Debug)]
pub struct RetryBudget {
    options: BudgetOptions,
    /// Thousandths of a token.
    tokens: AtomicI64,
    /// Milliseconds since `epoch` when the floor was last added.
    floor_at_ms: AtomicU64,
    exhausted: AtomicU64,
    warned_at_ms: AtomicU64,
    epoch: Instant,
}

impl RetryBudget {
    /// A full budget.
    pub fn new(options: BudgetOptions) -> Self {
        let budget = Self {
            options,
            tokens: AtomicI64::new(0),
            floor_at_ms: AtomicU64::new(0),
            exhausted: AtomicU64::new(0),
            warned_at_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        };
        budget.tokens.store(budget.cap(), Ordering::Relaxed);
        budget
    }

    fn cap(&self) -> i64 {
        let floor = i64::from(self.options.min_per_sec) * 10 * MILLI;
        let deposits = MAX_BURST_CALLS * i64::from(self.options.percent) * MILLI / 100;
        (floor + deposits).max(MILLI)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A call was made: deposits its share.
    pub fn deposit(&self) {
        let share = i64::from(self.options.percent) * MILLI / 100;
        if share > 0 {
            let before = self.tokens.fetch_add(share, Ordering::Relaxed);
            if before + share > self.cap() {
                self.tokens.fetch_min(self.cap(), Ordering::Relaxed);
            }
        }
    }

    /// Adds the floor for the time since it was last added.
    fn add_floor(&self) {
        let now = self.now_ms();
        let last = self.floor_at_ms.load(Ordering::Relaxed);
        if now <= last || self.options.min_per_sec == 0 {
            return;
        }
        if self
            .floor_at_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let earned = (now - last) as i64 * i64::from(self.options.min_per_sec); // thousandths
            let before = self.tokens.fetch_add(earned, Ordering::Relaxed);
            if before + earned > self.cap() {
                self.tokens.fetch_min(self.cap(), Ordering::Relaxed);
            }
        }
    }

    /// Takes one token for a retry or a fail-over; `false` (counted, and logged at most once a
    /// second) when the budget is spent.
    pub fn try_withdraw(&self, service: &str) -> bool {
        self.add_floor();
        let mut tokens = self.tokens.load(Ordering::Relaxed);
        loop {
            if tokens < MILLI {
                self.exhausted.fetch_add(1, Ordering::Relaxed);
                metrics::client_budget_exhausted(service);
                let now = self.now_ms();
                let warned = self.warned_at_ms.load(Ordering::Relaxed);
                if (warned == 0 || now.saturating_sub(warned) >= 1000)
                    && self
                        .warned_at_ms
                        .compare_exchange(warned, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    warn!(
                        service,
                        percent = self.options.percent,
                        exhausted = self.exhausted(),
                        "retry budget spent: failing calls at once instead of retrying"
                    );
                }
                return false;
            }
            match self
                .tokens
                .compare_exchange_weak(tokens, tokens - MILLI, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(current) => tokens = current,
            }
        }
    }

    /// Retries refused so far because the budget was spent.
    pub fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }

    /// Whole tokens available now.
    pub fn available(&self) -> i64 {
        self.tokens.load(Ordering::Relaxed) / MILLI
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new(BudgetOptions::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn retries_stay_within_the_share_of_calls_plus_the_floor() {
        let options = BudgetOptions {
            percent: 20,
            min_per_sec: 0,
        };
        let budget = RetryBudget::new(options);
        // Spend the initial bucket.
        while budget.try_withdraw("s") {}
        let mut allowed = 0;
        for _ in 0..10_000 {
            budget.deposit();
            if budget.try_withdraw("s") {
                allowed += 1;
            }
            // a second attempt for the same call
            if budget.try_withdraw("s") {
                allowed += 1;
            }
        }
        assert!(
            (1_990..=2_000).contains(&allowed),
            "{allowed} retries for 10,000 calls at 20%"
        );
        assert!(budget.exhausted() >= 18_000);
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_refills_with_time_and_the_cap_holds() {
        let options = BudgetOptions {
            percent: 0,
            min_per_sec: 10,
        };
        let budget = RetryBudget::new(options);
        assert_eq!(budget.available(), 100, "ten seconds of floor");
        while budget.try_withdraw("s") {}
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut allowed = 0;
        while budget.try_withdraw("s") {
            allowed += 1;
        }
        assert_eq!(allowed, 10);
        tokio::time::advance(Duration::from_secs(3600)).await;
        budget.add_floor();
        assert_eq!(budget.available(), 100, "a quiet hour banks no more than the cap");
    }
}
