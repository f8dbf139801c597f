//! The echo scenario: the same load against every framework, on the same runtimes.
//!
//! Server and client each get a tokio runtime of one worker thread (named `bench-server` and
//! `bench-client`), so every framework runs on the same configuration and the server's CPU time
//! can be read per thread from `/proc`. A closed-loop load of `concurrency` callers runs for a
//! warm-up, then for the measured window; each caller records the latency of every call that
//! completes inside the window.

pub mod raw;
pub mod rpc;
pub mod tarpc_peer;
pub mod tonic_peer;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Warm-up and measured window of one case.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Load before measuring.
    pub warmup: Duration,
    /// Measured window.
    pub window: Duration,
}

/// One measured case.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    /// Framework and serializer, e.g. `rpc-core/bincode`.
    pub framework: String,
    /// Payload bytes per call (each way).
    pub payload: usize,
    /// Calls outstanding at any time.
    pub concurrency: usize,
    /// Completed calls per second in the window.
    pub qps: f64,
    /// Median latency, microseconds.
    pub p50_us: u64,
    /// 99th percentile latency, microseconds.
    pub p99_us: u64,
    /// Server CPU time per call, microseconds.
    pub server_cpu_us_per_call: f64,
    /// Client CPU time per call, microseconds (measured when the client has a process of its
    /// own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cpu_us_per_call: Option<f64>,
    /// Calls measured.
    pub calls: u64,
}

/// Latencies of the calls completed in the measured window, and the window's length.
pub struct Sample {
    /// Per-call latencies in microseconds.
    pub latencies_us: Vec<u32>,
    /// How long the window really was.
    pub elapsed: Duration,
}

/// Phase shared by the load's callers: 0 warm-up, 1 measuring, 2 stop.
#[derive(Clone, Default)]
pub struct Phase(Arc<AtomicU8>);

impl Phase {
    /// Whether calls completing now are measured.
    pub fn measuring(&self) -> bool {
        self.0.load(Ordering::Relaxed) == 1
    }

    /// Whether callers should stop.
    pub fn stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed) == 2
    }

    /// Moves to phase `v` (0 warm-up, 1 measuring, 2 stop).
    pub(crate) fn set(&self, v: u8) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// Runs `concurrency` callers of `call` through warm-up and window; returns the sample.
pub async fn closed_loop<F, Fut>(concurrency: usize, timing: Timing, call: F) -> Sample
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let phase = Phase::default();
    let failed = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (call, phase, failed) = (call.clone(), phase.clone(), failed.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(4096);
                while !phase.stopped() {
                    let started = Instant::now();
                    if !call().await {
                        failed.store(true, Ordering::Relaxed);
                        break;
                    }
                    if phase.measuring() {
                        latencies.push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    }
                }
                latencies
            })
        })
        .collect();
    let (latencies_us, elapsed) = measure_window(&phase, timing, async move {
        let mut all = Vec::new();
        for c in callers {
            all.extend(c.await.unwrap_or_default());
        }
        all
    })
    .await;
    assert!(!failed.load(Ordering::Relaxed), "a benchmark call failed");
    Sample { latencies_us, elapsed }
}

/// Drives `phase` through warm-up and window, then awaits `finish` for the results.
pub async fn measure_window<T>(phase: &Phase, timing: Timing, finish: impl Future<Output = T>) -> (T, Duration) {
    tokio::time::sleep(timing.warmup).await;
    phase.set(1);
    let started = Instant::now();
    tokio::time::sleep(timing.window).await;
    phase.set(2);
    let elapsed = started.elapsed();
    (finish.await, elapsed)
}

/// A framework under test: how to serve, and how to run the load.
pub trait Framework: Send + Sync {
    /// Name in reports.
    fn name(&self) -> String;
    /// Starts the server on `listener` (on the server runtime); the returned guard stops it.
    fn serve(&self, listener: std::net::TcpListener) -> Box<dyn std::any::Any + Send>;
    /// Runs the load against `addr` (on the client runtime).
    fn load(
        &self,
        addr: SocketAddr,
        payload: usize,
        concurrency: usize,
        timing: Timing,
    ) -> std::pin::Pin<Box<dyn Future<Output = Sample> + Send>>;
}

/// The two runtimes every case runs on.
pub struct Runtimes {
    server: tokio::runtime::Runtime,
    client: tokio::runtime::Runtime,
}

impl Runtimes {
    /// One worker thread each.
    pub fn new() -> std::io::Result<Self> {
        let build = |name: &str| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name(name)
                .enable_all()
                .build()
        };
        Ok(Self {
            server: build("bench-server")?,
            client: build("bench-client")?,
        })
    }

    /// Measures one case.
    pub fn run(
        &self,
        framework: &dyn Framework,
        payload: usize,
        concurrency: usize,
        timing: Timing,
    ) -> std::io::Result<Measurement> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let guard = {
            let _enter = self.server.enter();
            framework.serve(listener)
        };
        // Server CPU is read around the whole run; warm-up calls are counted by rate.
        let cpu_before = thread_cpu("bench-server");
        let run_started = Instant::now();
        let sample = self.client.block_on(framework.load(addr, payload, concurrency, timing));
        let run_elapsed = run_started.elapsed();
        let cpu = thread_cpu("bench-server").saturating_sub(cpu_before);
        drop(guard);
        let calls = sample.latencies_us.len() as u64;
        let qps = calls as f64 / sample.elapsed.as_secs_f64();
        // Calls over the whole run, estimated from the measured rate.
        let run_calls = (qps * run_elapsed.as_secs_f64()).max(1.0);
        let mut sorted = sample.latencies_us;
        sorted.sort_unstable();
        let pct = |p: f64| {
            sorted
                .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        Ok(Measurement {
            framework: framework.name(),
            payload,
            concurrency,
            qps,
            p50_us: u64::from(pct(0.50)),
            p99_us: u64::from(pct(0.99)),
            server_cpu_us_per_call: cpu.as_secs_f64() * 1e6 / run_calls,
            client_cpu_us_per_call: None,
            calls,
        })
    }
}

/// CPU time (user + system) of this process's threads whose name starts with `prefix`.
pub fn thread_cpu(prefix: &str) -> Duration {
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let mut ticks = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let path = task.path();
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if !name.trim_end().starts_with(prefix) {
                continue;
            }
            let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
            // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
                let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
                ticks += utime + stime;
            }
        }
    }
    Duration::from_secs_f64(ticks as f64 / ticks_per_sec)
}

/// Runs `serve` on `listener` (made a tokio listener) in a task that is aborted when the
/// returned guard drops, at the end of the case.
pub fn spawn_server<F, Fut>(listener: std::net::TcpListener, serve: F) -> Box<dyn std::any::Any + Send>
where
    F: FnOnce(tokio::net::TcpListener) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    Box::new(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(serve(listener))))
}

/// A payload of `len` bytes.
pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}
