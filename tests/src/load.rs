//! Steady load for the reliability scenarios, and the figures they report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::TestServiceClient;

/// What a load run saw.
#[derive(Debug, Default, Clone)]
pub struct LoadStats {
    /// Calls that succeeded.
    pub ok: u64,
    /// Successful calls by the instance (its `owner` label) that answered.
    pub by_instance: BTreeMap<String, u64>,
    /// When each failed call failed, and why.
    pub failures: Vec<(Instant, String)>,
}

impl LoadStats {
    /// Calls made.
    pub fn calls(&self) -> u64 {
        self.ok + self.failures.len() as u64
    }

    /// Failed calls.
    pub fn failed(&self) -> u64 {
        self.failures.len() as u64
    }

    /// Fails the test, showing the first failures, if any call failed.
    #[track_caller]
    pub fn assert_none_failed(&self) {
        assert_eq!(self.failed(), 0, "{:?}", &self.failures[..self.failures.len().min(3)]);
    }

    /// Failures at or after `since`.
    pub fn failed_since(&self, since: Instant) -> usize {
        self.failures.iter().filter(|(at, _)| *at >= since).count()
    }
}

/// Workers that call `owner` in a loop until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<LoadStats>>,
    workers: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `workers` loops, each pausing `pause` between calls.
    pub fn start(client: &TestServiceClient, workers: u64, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(LoadStats::default()));
        let workers = (0..workers)
            .map(|w| {
                let (client, stop, stats) = (client.clone(), stop.clone(), stats.clone());
                tokio::spawn(async move {
                    let mut key = w;
                    while !stop.load(Ordering::Relaxed) {
                        let outcome = client.owner(key).await;
                        {
                            let mut s = stats.lock().unwrap_or_else(PoisonError::into_inner);
                            match outcome {
                                Ok(owner) => {
                                    s.ok += 1;
                                    *s.by_instance.entry(owner).or_default() += 1;
                                }
                                Err(e) => s.failures.push((Instant::now(), e.to_string())),
                            }
                        }
                        key += 1000;
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                })
            })
            .collect();
        Self { stop, stats, workers }
    }

    /// The figures so far.
    pub fn snapshot(&self) -> LoadStats {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Stops every worker and returns the figures.
    pub async fn stop(mut self) -> LoadStats {
        self.stop.store(true, Ordering::Relaxed);
        for w in std::mem::take(&mut self.workers) {
            let _ = w.await;
        }
        self.snapshot()
    }
}

/// Prints one scenario's figures as `RELIABILITY {json}` (collected by `scripts/reliability`).
pub fn report(scenario: &str, figures: serde_json::Value) {
    let line = serde_json::json!({ "scenario": scenario, "figures": figures });
    eprintln!("RELIABILITY {line}");
}

/// This process's resident memory in bytes (Linux).
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

/// Milliseconds of a duration, for reports.
pub fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// What an open-loop run saw: answered calls a second, and their latencies sorted.
#[derive(Debug, Clone)]
pub struct OpenLoopRun {
    /// Calls offered.
    pub offered: u64,
    /// Calls answered successfully a second.
    pub goodput: f64,
    /// The latencies of the successful calls, sorted.
    pub latencies: Vec<Duration>,
}

impl OpenLoopRun {
    /// The latency under which `percent` of the successful calls were answered
    /// (`Duration::MAX` when none was).
    pub fn percentile(&self, percent: usize) -> Duration {
        let l = &self.latencies;
        match l.len() {
            0 => Duration::MAX,
            n => l[(n * percent / 100).min(n - 1)],
        }
    }
}

/// Offers `rate` calls a second for `length` whatever the answers (an open loop, as
/// independent callers do): call `n` is `call(n)`, which answers whether it succeeded.
pub async fn open_loop<F, Fut>(rate: f64, length: Duration, call: F) -> OpenLoopRun
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let started = Instant::now();
    let mut calls = Vec::new();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while started.elapsed() < length {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let answered = call(sent);
            calls.push(tokio::spawn(async move {
                let at = Instant::now();
                answered.await.then(|| at.elapsed())
            }));
            sent += 1;
        }
    }
    let mut latencies = Vec::new();
    for call in calls {
        latencies.extend(call.await.ok().flatten());
    }
    latencies.sort();
    OpenLoopRun {
        offered: sent,
        goodput: latencies.len() as f64 / length.as_secs_f64(),
        latencies,
    }
}

/// Successful calls a second of `workers` callers each making `call(n)` one after another
/// for `length` (a closed loop: what a service can serve).
pub async fn closed_loop<F, Fut>(workers: usize, length: Duration, call: F) -> f64
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let started = Instant::now();
    let mut done = 0u64;
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..workers {
        running.spawn(call(0));
    }
    let mut n = 0;
    while let Some(ok) = running.join_next().await {
        done += u64::from(ok.unwrap_or(false));
        if started.elapsed() < length {
            n += 1;
            running.spawn(call(n));
        }
    }
    done as f64 / started.elapsed().as_secs_f64()
}
