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
