//! The hedging step: one round of an `#[idempotent]` call that does not wait for a slow
//! instance.
//!
//! The call goes to the first candidate; when no answer has come after the hedge delay, it
//! also goes to the next candidate (at most `max_extra` more times, each taking a token of
//! the service's retry budget). The first answer wins — a value or the method's own error —
//! and the attempts still running are dropped, which sends their servers a Cancel. A failure
//! waits for the other attempts; when none is left running, the round goes on as the
//! fail-over step would (another candidate at once for a call that never ran, or with
//! fail-over on).
//!
//! The delay is configured, or taken from the service's recent latency: the 95th percentile
//! of its last 256 answered calls (so about one call in twenty is hedged, as "The Tail at
//! Scale" suggests), at least 5 ms ([`Latencies`]).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;
use tracing::debug;

use super::route::{Candidates, Target};
use super::CallRequest;
use crate::error::RpcError;
use crate::fault::{is_retryable, HedgePolicy, RetryBudget};
use crate::metrics;
use crate::reply::Reply;

/// Answered calls kept for the adaptive delay.
const SAMPLES: usize = 256;
/// Calls answered before an adaptive delay is trusted (no hedging before).
const MIN_SAMPLES: u64 = 32;
/// The shortest adaptive delay.
const MIN_DELAY: Duration = Duration::from_millis(5);

/// A service's recent call latencies, and the hedge delay they give.
#[derive(Default)]
pub(crate) struct Latencies {
    ring: Mutex<Vec<u32>>,
    seen: AtomicU64,
    /// The adaptive delay in microseconds (0: not known yet), refreshed every 32 samples.
    delay_us: AtomicU64,
}

impl Latencies {
    /// An answered call took `took`.
    pub(crate) fn record(&self, took: Duration) {
        let us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        let seen = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.len() < SAMPLES {
            ring.push(us);
        } else {
            ring[(seen as usize) % SAMPLES] = us;
        }
        if seen >= MIN_SAMPLES && seen.is_multiple_of(32) {
            let mut sorted = ring.clone();
            drop(ring);
            sorted.sort_unstable();
            let p95 = sorted[(sorted.len() * 95 / 100).min(sorted.len() - 1)];
            let delay = u64::from(p95).max(MIN_DELAY.as_micros() as u64);
            self.delay_us.store(delay, Ordering::Relaxed);
        }
    }

    /// The adaptive delay, once enough calls were seen.
    pub(crate) fn delay(&self) -> Option<Duration> {
        match self.delay_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}

/// Runs one round of `call` with hedging: see the module docs. `delay` is the hedge delay in
/// force.
pub async fn run<'r, T, F, Fut>(
    mut candidates: Candidates<'r>,
    call: &CallRequest<'_>,
    budget: &RetryBudget,
    hedge: HedgePolicy,
    delay: Duration,
    mut attempt: F,
) -> Result<T, RpcError<Reply>>
where
    F: FnMut(&'r Target) -> Fut,
    Fut: Future<Output = Result<T, RpcError<Reply>>>,
{
    let Some(first) = candidates.next() else {
        return Err(candidates.none_left());
    };
    let mut running = FuturesUnordered::new();
    running.push(attempt(first));
    let mut extra = 0u32;
    let next_hedge = tokio::time::sleep(delay);
    tokio::pin!(next_hedge);
    loop {
        tokio::select! {
            biased;
            Some(outcome) = running.next() => {
                let error = match outcome {
                    // An answer: the method's own error is one too.
                    Ok(reply) => return Ok(reply),
                    Err(error @ RpcError::Application(_)) => return Err(error),
                    Err(error) => error,
                };
                if !running.is_empty() {
                    continue;
                }
                let policy = call.policy;
                let moves_on = error.never_ran() || (policy.fail_over && is_retryable(&error, policy.idempotent));
                if !moves_on || candidates.exhausted() || !budget.try_withdraw(call.service) {
                    return Err(error);
                }
                let Some(target) = candidates.next() else { return Err(error) };
                debug!(instance = %target.addr, error = %error.kind(), "attempt failed; trying another instance");
                metrics::client_failover(call.service);
                running.push(attempt(target));
                next_hedge.as_mut().reset(Instant::now() + delay);
            }
            _ = &mut next_hedge, if extra < hedge.max_extra && !candidates.exhausted() => {
                extra += 1;
                if budget.try_withdraw(call.service) {
                    if let Some(target) = candidates.next() {
                        debug!(instance = %target.addr, ?delay, "no answer yet; hedging to another instance");
                        metrics::client_hedge(call.service);
                        running.push(attempt(target));
                    }
                }
                next_hedge.as_mut().reset(Instant::now() + delay);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_adaptive_delay_is_the_recent_p95_and_at_least_5_ms() {
        let latencies = Latencies::default();
        for _ in 0..31 {
            latencies.record(Duration::from_millis(20));
        }
        assert_eq!(latencies.delay(), None, "too few calls yet");
        latencies.record(Duration::from_millis(20));
        assert_eq!(latencies.delay(), Some(Duration::from_millis(20)));
        for _ in 0..SAMPLES {
            latencies.record(Duration::from_micros(100));
        }
        assert_eq!(latencies.delay(), Some(MIN_DELAY));
    }
}
