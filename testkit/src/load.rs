//! Load drivers: an open loop offers calls at a fixed rate whatever the answers (as
//! independent callers arrive: what overload looks like), a closed loop keeps a fixed number of
//! callers each waiting for its answer (what a provider can serve). Both take the call as a
//! closure from its sequence number to a future answering whether the call succeeded, so they
//! drive any client, waypost's or another framework's.

use std::time::Duration;

use tokio::time::Instant;

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
