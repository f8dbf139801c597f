//! The echo scenario: the same load against every framework, server and client in separate
//! processes (see `xproc`).
//!
//! A [`Framework`] knows how to serve the three echo methods (a `Vec<u8>`, a `String`, a
//! [`Record`](payload::Record)) on a listener, and how to load a server with `connections`
//! connections of `concurrency` callers each, in a closed loop. Each caller records the latency
//! of every call that completes inside the measured window; the CPU time of both processes is
//! read from `/proc` when the window opens and closes, so CPU per call counts only calls in
//! the window.

pub mod http_peer;
pub mod payload;
pub mod raw;
pub mod streams;
pub mod tarpc_peer;
pub mod tonic_peer;
#[cfg(feature = "volo")]
pub mod volo_peer;
pub mod waypost;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use payload::{Payload, PayloadKind};

/// tonic's messages and services, from proto/echo.proto.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("echo");
}

/// Warm-up and measured window of one case, and whose CPU to read.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Load before measuring.
    pub warmup: Duration,
    /// Measured window.
    pub window: Duration,
    /// The server process, whose CPU time is read with this one's.
    pub server_pid: Option<u32>,
}

/// How the load is spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// Connections (each its own client).
    pub connections: usize,
    /// Callers per connection.
    pub concurrency: usize,
}

/// What one case measured, in the client process.
pub struct Sample {
    /// Per-call latencies in microseconds.
    pub latencies_us: Vec<u32>,
    /// How long the window really was.
    pub elapsed: Duration,
    /// CPU time of the server process over the window.
    pub server_cpu: Duration,
    /// CPU time of the client process over the window.
    pub client_cpu: Duration,
}

/// One measured case.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    /// Framework and serializer, e.g. `waypost/bincode`.
    pub framework: String,
    /// What was echoed.
    #[serde(default)]
    pub kind: Option<PayloadKind>,
    /// Payload bytes per call (each way; for a record, its nominal size).
    pub payload: usize,
    /// Connections.
    #[serde(default = "one")]
    pub connections: usize,
    /// Calls outstanding per connection.
    pub concurrency: usize,
    /// Worker threads of the server's runtime.
    #[serde(default = "one")]
    pub server_workers: usize,
    /// Completed calls per second in the window.
    pub qps: f64,
    /// Median latency, microseconds.
    pub p50_us: u64,
    /// 99th percentile latency, microseconds.
    pub p99_us: u64,
    /// Server CPU time per call, microseconds.
    pub server_cpu_us_per_call: f64,
    /// Client CPU time per call, microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cpu_us_per_call: Option<f64>,
    /// Calls measured.
    pub calls: u64,
}

fn one() -> usize {
    1
}

impl Measurement {
    /// The measurement of `sample`.
    pub fn of(framework: String, payload: &Payload, shape: Shape, server_workers: usize, sample: Sample) -> Self {
        let mut latencies = sample.latencies_us;
        latencies.sort_unstable();
        let calls = latencies.len() as u64;
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .map_or(0, u64::from)
        };
        let per_call = |d: Duration| d.as_secs_f64() * 1e6 / (calls.max(1) as f64);
        Self {
            framework,
            kind: Some(payload.kind),
            payload: payload.size,
            connections: shape.connections,
            concurrency: shape.concurrency,
            server_workers,
            qps: calls as f64 / sample.elapsed.as_secs_f64(),
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            server_cpu_us_per_call: per_call(sample.server_cpu),
            client_cpu_us_per_call: Some(per_call(sample.client_cpu)),
            calls,
        }
    }
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

    fn set(&self, v: u8) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// A future the load runs on the client's runtime.
pub type LoadFuture = Pin<Box<dyn Future<Output = Sample> + Send>>;

/// A future that starts a server (on the server's runtime) and yields the guard that stops it.
pub type ServeFuture = Pin<Box<dyn Future<Output = Box<dyn std::any::Any + Send>> + Send>>;

/// A framework under test: how to serve, and how to load a server.
pub trait Framework: Send + Sync {
    /// Name in reports.
    fn name(&self) -> String;
    /// Whether it echoes this kind of payload.
    fn supports(&self, kind: PayloadKind) -> bool {
        let _ = kind;
        true
    }
    /// Starts the server on `listener` (on the server's runtime); the guard it yields stops it.
    fn serve(&self, listener: std::net::TcpListener) -> ServeFuture;
    /// Loads the server at `addr` (called on the client's runtime).
    fn load(&self, addr: SocketAddr, payload: Payload, shape: Shape, timing: Timing) -> LoadFuture;
}

/// Runs `shape.concurrency` callers on each of `clients` (one per connection) through
/// warm-up and window, in a closed loop: the echo of one payload.
///
/// Each caller starts with its own clone of `body` and sends back what each call returned
/// (`None`: the call failed), so the payload moves through the calls as a caller's own data
/// does: the harness copies nothing, and every framework gets an owned value to send.
pub async fn echo_loop<C, T, F, Fut>(clients: Vec<C>, shape: Shape, timing: Timing, body: T, call: F) -> Sample
where
    C: Clone + Send + 'static,
    T: Clone + Send + 'static,
    F: Fn(C, T) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Option<T>> + Send,
{
    let phase = Phase::default();
    let failed = Arc::new(AtomicBool::new(false));
    let mut callers = Vec::new();
    for client in clients {
        for _ in 0..shape.concurrency {
            let (client, call, phase, failed) = (client.clone(), call.clone(), phase.clone(), failed.clone());
            let mut body = body.clone();
            callers.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(4096);
                while !phase.stopped() {
                    let started = Instant::now();
                    match call(client.clone(), body).await {
                        Some(echoed) => body = echoed,
                        None => {
                            failed.store(true, Ordering::Relaxed);
                            break;
                        }
                    }
                    if phase.measuring() {
                        latencies.push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    }
                }
                latencies
            }));
        }
    }
    let sample = measure_window(&phase, timing, async move {
        let mut all = Vec::new();
        for c in callers {
            all.extend(c.await.unwrap_or_default());
        }
        all
    })
    .await;
    assert!(!failed.load(Ordering::Relaxed), "a benchmark call failed");
    sample
}

/// Drives `phase` through warm-up and window, reading both processes' CPU time when the window
/// opens and closes, then awaits `finish` for the latencies.
pub async fn measure_window(phase: &Phase, timing: Timing, finish: impl Future<Output = Vec<u32>>) -> Sample {
    let server = timing.server_pid.map(|pid| pid.to_string());
    let server_cpu = || server.as_deref().map(process_cpu).unwrap_or_default();
    tokio::time::sleep(timing.warmup).await;
    let cpu_start = (server_cpu(), process_cpu("self"));
    phase.set(1);
    let started = Instant::now();
    tokio::time::sleep(timing.window).await;
    phase.set(2);
    let elapsed = started.elapsed();
    let cpu_end = (server_cpu(), process_cpu("self"));
    Sample {
        latencies_us: finish.await,
        elapsed,
        server_cpu: cpu_end.0.saturating_sub(cpu_start.0),
        client_cpu: cpu_end.1.saturating_sub(cpu_start.1),
    }
}

/// CPU time (user + system) of process `pid` ("self" for this one).
pub fn process_cpu(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // After the name: state is field 3; utime 14 and stime 15 are at 11 and 12 here.
            [11, 12]
                .iter()
                .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
                .sum()
        })
        .unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / 100.0) // USER_HZ
}

/// The environment variable naming the directory of the TLS cases' certificates
/// (`ca.pem`, `server.pem`, `server.key`, as `waypost_testkit::pki::TestPki` writes them); the
/// parent process makes them and passes the variable to the server and client processes.
pub const TLS_DIR_VAR: &str = "RPC_BENCH_TLS_DIR";

/// The file `name` of the TLS cases' certificate directory.
pub fn tls_file(name: &str) -> std::path::PathBuf {
    let dir = std::env::var_os(TLS_DIR_VAR).expect("RPC_BENCH_TLS_DIR names the certificate directory");
    std::path::Path::new(&dir).join(name)
}

/// Runs `serve` on `listener` (made a tokio listener) in a task that is aborted when the
/// guard drops.
pub fn spawn_server<F, Fut>(listener: std::net::TcpListener, serve: F) -> ServeFuture
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Box::pin(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        Box::new(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(serve(listener))))
            as Box<dyn std::any::Any + Send>
    })
}

/// Every framework, by the name reports use; waypost names may add `+tower layers`,
/// `+metrics` or `+tls`, tonic's `+tls`.
pub fn framework(name: &str) -> Option<Box<dyn Framework>> {
    use http_peer::{Http, Server};
    let http = |server, h2| Some(Box::new(Http { server, h2 }) as Box<dyn Framework>);
    match name {
        "waypost/http+http1.1" => return http(Server::RpcCore, false),
        "waypost/http+h2" => return http(Server::RpcCore, true),
        "axum+http1.1" => return http(Server::Axum, false),
        "axum+h2" => return http(Server::Axum, true),
        _ => {}
    }
    if let Some(streams) = streams::framework(name) {
        return Some(streams);
    }
    if let Some(rest) = name.strip_prefix("waypost/") {
        return waypost::RpcCore::parse(rest).map(|f| Box::new(f) as Box<dyn Framework>);
    }
    Some(match name {
        "raw-tcp-floor" => Box::new(raw::RawTcp),
        "tarpc/bincode" => Box::new(tarpc_peer::Tarpc),
        "tonic/protobuf" => Box::new(tonic_peer::Tonic { tls: false }),
        "tonic/protobuf+tls" => Box::new(tonic_peer::Tonic { tls: true }),
        #[cfg(feature = "volo")]
        "volo-thrift" => Box::new(volo_peer::Volo),
        _ => return None,
    })
}

/// The peers measured against this framework, in report order.
pub fn peers() -> Vec<&'static str> {
    let mut peers = vec!["tarpc/bincode", "tonic/protobuf"];
    if cfg!(feature = "volo") {
        peers.push("volo-thrift");
    }
    peers.push("raw-tcp-floor");
    peers
}

/// Prints how much zstd (level 1, as the `+zstd` rows) shrinks the arguments of the
/// compression rows: the record of about 1 MiB in msgpack.
pub fn compression_ratio(json: bool) -> Result<(), crate::BoxError> {
    let record = Payload {
        kind: PayloadKind::Record,
        size: 1_048_576,
    }
    .record();
    let encoded = waypost_core::SerializerKind::MsgPack
        .encode_body(&(record,))?
        .into_one();
    let started = std::time::Instant::now();
    let compressed = zstd::bulk::compress(&encoded[..], 1)?;
    let compress_us = started.elapsed().as_secs_f64() * 1e6;
    let started = std::time::Instant::now();
    let restored = zstd::bulk::decompress(&compressed, encoded.len())?;
    let decompress_us = started.elapsed().as_secs_f64() * 1e6;
    assert_eq!(restored.len(), encoded.len());
    let ratio = encoded.len() as f64 / compressed.len() as f64;
    if json {
        println!(
            "{}",
            serde_json::json!({"bench": "compression_ratio", "encoded_bytes": encoded.len(), "compressed_bytes": compressed.len(), "ratio": ratio, "compress_us": compress_us, "decompress_us": decompress_us})
        );
    } else {
        println!(
            "record {} B -> {} B with zstd level 1: {ratio:.1}x; compress {compress_us:.0} us, decompress {decompress_us:.0} us",
            encoded.len(),
            compressed.len()
        );
    }
    Ok(())
}
