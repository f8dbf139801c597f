//! Adaptive load shedding: a concurrency limit the server finds by itself from its calls'
//! latency, so that past its capacity it answers the excess `overloaded` at once and the calls
//! it admits keep their latency.
//!
//! # The controller
//!
//! Calls (not streams, whose length says nothing about load) are timed from admission to
//! their answer. Every window (100 ms, or longer until 10 calls have ended) the controller
//! compares the window's mean latency `short` with the `baseline`, the lowest window mean of
//! the last minute (the latency of the server when it is not queueing), and moves the limit:
//!
//! ```text
//! gradient = clamp(tolerance * baseline / short, 0.5, 1)
//! limit    = clamp(limit * gradient + queue, min_limit, max_limit)     queue = 2
//! ```
//!
//! While calls take no longer than `tolerance` times the baseline the limit grows by a tenth
//! (at least `queue`) a window, only while the calls in flight reach half of it (an idle
//! server does not raise its limit); when calls queue somewhere (a pool, a lock, the CPU), latency rises and the
//! limit falls towards the concurrency at which latency is `tolerance` times the baseline.
//! A call that finds `limit` calls in flight is refused `overloaded` before its arguments are
//! decoded, which costs the server next to nothing, and counted in `rpc_server_shed_total`.
//!
//! The baseline is what a server measured when it was not overloaded; a server that starts
//! under overload first takes its overloaded latency for the baseline, and a baseline older
//! than a minute is forgotten (a service whose latency really changed is followed within a
//! minute).
//!
//! On the call path: one atomic increment at admission, a clock read at admission and at the
//! end, and three atomic additions at the end; the window's arithmetic runs once per window
//! under a lock only the first caller past the window's end takes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use crate::config::SheddingConfig;

/// Shortest window.
const WINDOW: Duration = Duration::from_millis(100);
/// Calls a window needs before it moves the limit (else it runs on, up to [`MAX_WINDOW`]).
const MIN_SAMPLES: u64 = 10;
/// Longest window.
const MAX_WINDOW: Duration = Duration::from_secs(1);
/// How long a baseline lasts.
const BASELINE_SPAN: Duration = Duration::from_secs(60);
/// Calls allowed beyond the limit's estimate of the capacity, to keep finding more.
const QUEUE: f64 = 2.0;

/// The adaptive concurrency limit of a server.
pub(crate) struct Shedder {
    tolerance: f64,
    min_limit: f64,
    max_limit: f64,
    started: Instant,
    /// The current limit (rounded down).
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    /// The window so far: calls ended, their latency in µs, the most calls in flight.
    ended: AtomicU64,
    latency_us: AtomicU64,
    peak: AtomicUsize,
    /// When the window ends, in ns since `started`.
    window_end_ns: AtomicU64,
    control: Mutex<Control>,
}

/// What the controller remembers between windows.
struct Control {
    limit: f64,
    window_start: Instant,
    /// The lowest window mean in the current and the previous half of the baseline's span.
    floor: [Option<f64>; 2],
    floor_since: Instant,
}

/// A call admitted by the shedder; ends its sample when dropped.
pub(crate) struct ShedPermit {
    shedder: Arc<Shedder>,
    admitted: Instant,
}

impl Drop for ShedPermit {
    fn drop(&mut self) {
        let shedder = &self.shedder;
        shedder.in_flight.fetch_sub(1, Ordering::Relaxed);
        let now = Instant::now();
        let took = now.saturating_duration_since(self.admitted);
        shedder.ended.fetch_add(1, Ordering::Relaxed);
        shedder
            .latency_us
            .fetch_add(took.as_micros().min(u128::from(u32::MAX)) as u64, Ordering::Relaxed);
        let at = now.saturating_duration_since(shedder.started).as_nanos() as u64;
        if at >= shedder.window_end_ns.load(Ordering::Relaxed) {
            shedder.close_window(now);
        }
    }
}

impl Shedder {
    /// A shedder with these settings, its limit at the minimum.
    pub(crate) fn new(config: &SheddingConfig) -> Self {
        let now = Instant::now();
        Self {
            tolerance: config.tolerance,
            min_limit: config.min_limit as f64,
            max_limit: config.max_limit as f64,
            started: now,
            limit: AtomicUsize::new(config.min_limit),
            in_flight: AtomicUsize::new(0),
            ended: AtomicU64::new(0),
            latency_us: AtomicU64::new(0),
            peak: AtomicUsize::new(0),
            window_end_ns: AtomicU64::new(WINDOW.as_nanos() as u64),
            control: Mutex::new(Control {
                limit: config.min_limit as f64,
                window_start: now,
                floor: [None, None],
                floor_since: now,
            }),
        }
    }

    /// Admits a call if fewer than the limit are in flight.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<ShedPermit> {
        let before = self.in_flight.fetch_add(1, Ordering::Relaxed);
        if before >= self.limit.load(Ordering::Relaxed) {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        self.peak.fetch_max(before + 1, Ordering::Relaxed);
        Some(ShedPermit {
            shedder: self.clone(),
            admitted: Instant::now(),
        })
    }

    /// The current limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Ends the window if it has enough calls (or has run its longest), and moves the limit.
    fn close_window(&self, now: Instant) {
        let Ok(mut control) = self.control.try_lock() else {
            return;
        };
        let length = now.saturating_duration_since(control.window_start);
        let ended = self.ended.load(Ordering::Relaxed);
        if ended < MIN_SAMPLES && length < MAX_WINDOW {
            return;
        }
        let ended = self.ended.swap(0, Ordering::Relaxed);
        let latency_us = self.latency_us.swap(0, Ordering::Relaxed);
        let peak = self
            .peak
            .swap(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
        control.window_start = now;
        let next_end = now.saturating_duration_since(self.started) + WINDOW;
        self.window_end_ns.store(next_end.as_nanos() as u64, Ordering::Relaxed);
        if ended == 0 {
            return;
        }
        let short = latency_us as f64 / ended as f64;
        let baseline = control.baseline(short, now);
        let limit = control.limit;
        let gradient = (self.tolerance * baseline / short.max(1.0)).clamp(0.5, 1.0);
        let next = match gradient >= 1.0 {
            // Not queueing: grow by a tenth while the demand reaches half of the limit.
            true if (peak as f64) < limit / 2.0 => limit,
            true => limit + (limit / 10.0).max(QUEUE),
            false => limit * gradient + QUEUE,
        };
        control.limit = next.clamp(self.min_limit, self.max_limit);
        self.limit.store(control.limit as usize, Ordering::Relaxed);
        debug!(
            limit = control.limit,
            short_us = short,
            baseline_us = baseline,
            peak,
            "load shedding limit"
        );
    }
}

impl Control {
    /// Takes in a window's mean, and answers the baseline: the lowest mean of the last
    /// minute (between half a minute and a minute of windows).
    fn baseline(&mut self, mean: f64, now: Instant) -> f64 {
        if now.saturating_duration_since(self.floor_since) >= BASELINE_SPAN / 2 {
            self.floor = [None, self.floor[0]];
            self.floor_since = now;
        }
        self.floor[0] = Some(self.floor[0].map_or(mean, |f| f.min(mean)));
        self.floor.iter().flatten().fold(mean, |a, &b| a.min(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SheddingConfig {
        SheddingConfig {
            enabled: true,
            tolerance: 1.5,
            min_limit: 2,
            max_limit: 1000,
        }
    }

    /// Runs `windows` windows of a service that serves `capacity` calls at once in `service`
    /// each, offered `offered` calls at once: answers the limit after them.
    async fn drive(shedder: &Arc<Shedder>, capacity: usize, offered: usize, windows: usize) -> usize {
        let service = Duration::from_millis(10);
        for _ in 0..windows {
            for _ in 0..(WINDOW.as_millis() / service.as_millis()) {
                let permits: Vec<_> = (0..offered).filter_map(|_| shedder.admit()).collect();
                let admitted = permits.len();
                // Past its capacity, the calls queue: each takes longer in proportion.
                let took = service.mul_f64((admitted as f64 / capacity as f64).max(1.0));
                tokio::time::advance(took).await;
                drop(permits);
            }
        }
        shedder.limit()
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_settles_near_the_capacity_under_overload_and_grows_with_demand() {
        let shedder = Arc::new(Shedder::new(&config()));
        // Light load: the baseline is learned; the limit grows only as far as demand needs.
        let light = drive(&shedder, 8, 3, 20).await;
        assert!(light <= 8, "an under-used limit does not run away: {light}");
        // Three times the capacity: the limit stays near the concurrency where latency is
        // 1.5x the baseline (12 here), so admitted calls keep their latency.
        let overloaded = drive(&shedder, 8, 24, 50).await;
        assert!((8..=16).contains(&overloaded), "limit under overload: {overloaded}");
        // More capacity (a scaled-out dependency): the limit follows.
        let grown = drive(&shedder, 32, 96, 80).await;
        assert!(grown >= 32, "limit with more capacity: {grown}");
    }

    #[tokio::test(start_paused = true)]
    async fn calls_past_the_limit_are_refused_and_the_in_flight_count_follows_the_permits() {
        let shedder = Arc::new(Shedder::new(&config()));
        let a = shedder.admit().expect("first");
        let _b = shedder.admit().expect("second");
        assert!(shedder.admit().is_none(), "the starting limit is the minimum");
        drop(a);
        assert!(shedder.admit().is_some());
    }
}
