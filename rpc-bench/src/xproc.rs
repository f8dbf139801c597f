//! Echo with server and client in separate processes, as they run in production.
//!
//! `rpc-bench xecho` starts the server as a child process (`rpc-bench echo-server`, one tokio
//! worker) and drives it from its own process (one tokio worker), with a plain `Vec<u8>`
//! payload. CPU time of both processes is read from `/proc/<pid>/stat` at the start and the end
//! of the measured window, so CPU per call counts only calls in the window. A [`Setup`] adds to
//! both sides N no-op layers around every call (the cost of the middleware seam) or the
//! metrics layer recording into a Prometheus recorder (the cost of metrics).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rpc_core::layer::{Layer, Layers};
use rpc_core::metrics::MetricsLayer;
use rpc_core::server::ServerBuilder;
use rpc_core::Channel;
use rpc_registry::metrics_endpoint::MetricsEndpoint;

use crate::echo::{payload, Measurement, Phase, Timing};
use crate::BoxError;

/// The echo service of the cross-process runs: plain bytes, as users write them.
#[rpc_core::service(name = "EchoBytes")]
pub trait EchoBytes {
    /// Returns its argument.
    async fn echo(&self, payload: Vec<u8>) -> Vec<u8>;
}

struct EchoBytesImpl;

impl EchoBytes for EchoBytesImpl {
    async fn echo(&self, payload: Vec<u8>) -> Vec<u8> {
        payload
    }
}

/// A layer that does nothing: what the seam itself costs.
struct Noop;
impl Layer for Noop {}

/// What both sides of a case run around every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    /// No-op layers.
    pub layers: usize,
    /// The metrics layer, recording into a Prometheus recorder with its `/metrics` endpoint.
    pub metrics: bool,
}

impl Setup {
    /// Nothing around the calls.
    pub const PLAIN: Setup = Setup {
        layers: 0,
        metrics: false,
    };

    fn name(self) -> String {
        let mut name = "rpc-core/bincode".to_owned();
        if self.layers > 0 {
            name += &format!("+{} no-op layers", self.layers);
        }
        if self.metrics {
            name += "+metrics";
        }
        name
    }

    /// The layers of one side, outermost first; starts the metrics endpoint (installing the
    /// recorder) when metrics are on.
    async fn layers(self) -> Result<(Vec<Arc<dyn Layer>>, Option<MetricsEndpoint>), BoxError> {
        let mut layers: Vec<Arc<dyn Layer>> = Vec::new();
        let endpoint = match self.metrics {
            true => {
                layers.push(Arc::new(MetricsLayer::new()));
                Some(MetricsEndpoint::start("127.0.0.1:0").await?)
            }
            false => None,
        };
        layers.extend((0..self.layers).map(|_| Arc::new(Noop) as Arc<dyn Layer>));
        Ok((layers, endpoint))
    }

    fn args(self) -> Vec<String> {
        let mut args = vec!["--layers".to_owned(), self.layers.to_string()];
        if self.metrics {
            args.push("--metrics".to_owned());
        }
        args
    }
}

/// With `RPC_BENCH_LOG` set (an `EnvFilter`, e.g. `info`), installs a log subscriber that
/// formats every enabled event and span into a sink: what logging costs an application that
/// logs at that level.
pub fn install_logging() {
    if let Ok(filter) = std::env::var("RPC_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::sink)
            .init();
    }
}

/// Serves EchoBytes on 127.0.0.1 (one worker thread) with `setup` around every call; prints
/// `listening HOST:PORT` and serves until stdin closes.
pub fn serve(setup: Setup) -> Result<(), BoxError> {
    install_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (layers, _endpoint) = setup.layers().await?;
        let mut builder = ServerBuilder::new().add_service(EchoBytesServer::new(EchoBytesImpl));
        for layer in layers {
            builder = builder.layer(layer);
        }
        let server = builder.bind("127.0.0.1:0").await?;
        println!("listening {}", server.local_addr()?);
        // The parent closes our stdin to stop us.
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {}
        })
        .await?;
        server.shutdown().await;
        Ok(())
    })
}

/// The server child process; killed when dropped.
struct ServerProcess {
    child: Child,
    addr: String,
}

impl ServerProcess {
    fn start(setup: Setup) -> Result<Self, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("echo-server")
            .args(setup.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout of the server process")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .strip_prefix("listening ")
            .map(|a| a.trim().to_owned())
            .ok_or_else(|| format!("the server process said {line:?}"))?;
        Ok(Self { child, addr })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        if !matches!(self.child.wait_timeout(Duration::from_secs(5)), Ok(true)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

trait WaitTimeout {
    fn wait_timeout(&mut self, limit: Duration) -> std::io::Result<bool>;
}

impl WaitTimeout for Child {
    fn wait_timeout(&mut self, limit: Duration) -> std::io::Result<bool> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.try_wait()?.is_some() {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(false)
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

/// Runs one case: a fresh server process and a fresh client process (`rpc-bench echo-client`),
/// both with `setup`, so no case inherits another's heap or threads.
pub fn run_case(setup: Setup, size: usize, concurrency: usize, timing: Timing) -> Result<Measurement, BoxError> {
    let server = ServerProcess::start(setup)?;
    let output = Command::new(std::env::current_exe()?)
        .arg("echo-client")
        .args(setup.args())
        .args(["--addr", &server.addr, "--server-pid", &server.pid().to_string()])
        .args([
            "--payload",
            &size.to_string(),
            "--concurrency",
            &concurrency.to_string(),
        ])
        .args(["--warmup-ms", &timing.warmup.as_millis().to_string()])
        .args(["--window-ms", &timing.window.as_millis().to_string()])
        .stderr(Stdio::inherit())
        .output()?;
    drop(server);
    if !output.status.success() {
        return Err(format!("the client process failed: {}", output.status).into());
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// The client process of a case: loads the server at `addr` (process `server_pid`) with
/// `concurrency` callers for the warm-up and the window, from one tokio worker; returns what
/// it measured.
pub fn drive(
    setup: Setup,
    addr: &str,
    server_pid: u32,
    size: usize,
    concurrency: usize,
    timing: Timing,
) -> Result<Measurement, BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let server_pid = server_pid.to_string();
    let result = runtime.block_on(async {
        let (layers, _endpoint) = setup.layers().await?;
        let channel = Channel::direct(addr)?
            .with_timeout(Duration::from_secs(30))
            .with_layers(Layers::new(layers));
        let client = EchoBytesClient::new(channel)?;
        let body = payload(size);
        let phase = Phase::default();
        let callers: Vec<_> = (0..concurrency)
            .map(|_| {
                let (client, body, phase) = (client.clone(), body.clone(), phase.clone());
                tokio::spawn(async move {
                    let mut latencies: Vec<u32> = Vec::with_capacity(1 << 14);
                    while !phase.stopped() {
                        let started = Instant::now();
                        if client.echo(body.clone()).await.is_err() {
                            return Err("a call failed");
                        }
                        if phase.measuring() {
                            latencies.push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                        }
                    }
                    Ok(latencies)
                })
            })
            .collect();
        tokio::time::sleep(timing.warmup).await;
        let cpu_start = (process_cpu(&server_pid), process_cpu("self"));
        phase.set(1);
        let started = Instant::now();
        tokio::time::sleep(timing.window).await;
        phase.set(2);
        let elapsed = started.elapsed();
        let cpu_end = (process_cpu(&server_pid), process_cpu("self"));
        let mut all = Vec::new();
        for caller in callers {
            all.extend(caller.await??);
        }
        Ok::<_, BoxError>((all, elapsed, cpu_start, cpu_end))
    });
    let (mut latencies, elapsed, cpu_start, cpu_end) = result?;
    latencies.sort_unstable();
    let calls = latencies.len() as u64;
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .map_or(0, u64::from)
    };
    let per_call = |d: Duration| d.as_secs_f64() * 1e6 / (calls.max(1) as f64);
    Ok(Measurement {
        framework: setup.name(),
        payload: size,
        concurrency,
        qps: calls as f64 / elapsed.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        server_cpu_us_per_call: per_call(cpu_end.0.saturating_sub(cpu_start.0)),
        client_cpu_us_per_call: Some(per_call(cpu_end.1.saturating_sub(cpu_start.1))),
        calls,
    })
}

/// A cost comparison: `rounds` alternating runs of the plain setup and of `with`, so drift on
/// a shared machine hits both alike; prints every run and the medians as a JSON line tagged
/// `bench`.
pub fn cost(
    bench: &str,
    with: Setup,
    size: usize,
    concurrency: usize,
    rounds: usize,
    timing: Timing,
    json: bool,
) -> Result<(), BoxError> {
    let mut runs: [Vec<Measurement>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (slot, setup) in [(0, Setup::PLAIN), (1, with)] {
            let m = run_case(setup, size, concurrency, timing)?;
            if json {
                println!("{}", serde_json::to_string(&m)?);
            } else {
                println!(
                    "{:<42} {:>6} B c={:<4} {:>10.0} calls/s  p50 {:>6} us  p99 {:>6} us  server {:>5.2} us/call  client {:>5.2} us/call",
                    m.framework,
                    m.payload,
                    m.concurrency,
                    m.qps,
                    m.p50_us,
                    m.p99_us,
                    m.server_cpu_us_per_call,
                    m.client_cpu_us_per_call.unwrap_or_default()
                );
            }
            runs[slot].push(m);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let summary = |runs: &[Measurement]| {
        let mut qps: Vec<f64> = runs.iter().map(|m| m.qps).collect();
        let mut server: Vec<f64> = runs.iter().map(|m| m.server_cpu_us_per_call).collect();
        let mut client: Vec<f64> = runs.iter().filter_map(|m| m.client_cpu_us_per_call).collect();
        (median(&mut qps), median(&mut server), median(&mut client))
    };
    let (setup, base, with) = (with, summary(&runs[0]), summary(&runs[1]));
    let report = serde_json::json!({
        "bench": bench, "layers": setup.layers, "metrics": setup.metrics, "payload": size, "concurrency": concurrency, "rounds": rounds,
        "qps_without": base.0.round(), "qps_with": with.0.round(),
        "qps_change_percent": ((with.0 / base.0 - 1.0) * 100.0 * 10.0).round() / 10.0,
        "server_cpu_us_without": (base.1 * 100.0).round() / 100.0, "server_cpu_us_with": (with.1 * 100.0).round() / 100.0,
        "client_cpu_us_without": (base.2 * 100.0).round() / 100.0, "client_cpu_us_with": (with.2 * 100.0).round() / 100.0,
    });
    println!("{report}");
    Ok(())
}
