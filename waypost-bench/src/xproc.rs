//! Server and client in separate processes, as they run in production.
//!
//! Every case starts a fresh server process (`waypost-bench echo-server`, N tokio workers) and a
//! fresh client process (`waypost-bench echo-client`, one worker), so no case inherits another's
//! heap, threads or recorder. The client loads the server, reads both processes' CPU time from
//! `/proc/<pid>/stat` when the measured window opens and closes, and prints its
//! [`Measurement`] as one JSON line.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::echo::{self, Measurement, Payload, PayloadKind, Shape, Timing};
use crate::BoxError;

/// One case of the matrix.
#[derive(Debug, Clone)]
pub struct Case {
    /// Framework name (see [`echo::framework`]).
    pub framework: String,
    /// What is echoed.
    pub payload: Payload,
    /// How the load is spread.
    pub shape: Shape,
    /// Worker threads of the server's runtime.
    pub server_workers: usize,
}

/// The server process of a case: serves `framework` on 127.0.0.1 with `workers` tokio
/// workers, prints `listening HOST:PORT`, and serves until its stdin closes.
pub fn serve(framework: &str, workers: usize) -> Result<(), BoxError> {
    let framework = echo::framework(framework).ok_or_else(|| format!("unknown framework {framework:?}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let _guard = framework.serve(listener).await;
        println!("listening {addr}");
        until_stdin_closes().await
    })
}

/// Waits until the parent closes this process's stdin, its signal to stop.
pub async fn until_stdin_closes() -> Result<(), BoxError> {
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {}
    })
    .await?;
    Ok(())
}

/// The client process of a case: loads the server at `addr` from one tokio worker and returns
/// what it measured.
pub fn drive(case: &Case, addr: &str, timing: Timing) -> Result<Measurement, BoxError> {
    let framework =
        echo::framework(&case.framework).ok_or_else(|| format!("unknown framework {:?}", case.framework))?;
    let addr = addr.parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let sample = runtime.block_on(framework.load(addr, case.payload, case.shape, timing));
    Ok(Measurement::of(
        framework.name(),
        &case.payload,
        case.shape,
        case.server_workers,
        sample,
    ))
}

/// A server child process (this program with a server subcommand, which prints
/// `listening HOST:PORT` and serves until its stdin closes); stopped when dropped.
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: String,
}

impl ServerProcess {
    fn start(framework: &str, workers: usize, certs: Option<&TlsDir>) -> Result<Self, BoxError> {
        Self::spawn(command(certs)?.args([
            "echo-server",
            "--framework",
            framework,
            "--workers",
            &workers.to_string(),
        ]))
    }

    /// Runs this program with `args`, and waits for it to listen.
    pub fn run(args: &[&str]) -> Result<Self, BoxError> {
        Self::spawn(command(None)?.args(args))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn spawn(command: &mut Command) -> Result<Self, BoxError> {
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout of the server process")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .strip_prefix("listening ")
            .map(|a| a.trim().to_owned())
            .ok_or_else(|| format!("the server process said {line:?}"))?;
        Ok(Self { child, addr })
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one case: a fresh server process and a fresh client process.
pub fn run_case(case: &Case, timing: Timing) -> Result<Measurement, BoxError> {
    let certs = case.framework.ends_with("+tls").then(TlsDir::new);
    let server = ServerProcess::start(&case.framework, case.server_workers, certs.as_ref())?;
    let output = command(certs.as_ref())?
        .arg("echo-client")
        .args(["--framework", &case.framework, "--addr", &server.addr])
        .args(["--server-pid", &server.pid().to_string()])
        .args(["--server-workers", &case.server_workers.to_string()])
        .args([
            "--kind",
            case.payload.kind.as_str(),
            "--size",
            &case.payload.size.to_string(),
        ])
        .args(["--connections", &case.shape.connections.to_string()])
        .args(["--concurrency", &case.shape.concurrency.to_string()])
        .args(["--warmup-ms", &timing.warmup.as_millis().to_string()])
        .args(["--window-ms", &timing.window.as_millis().to_string()])
        .stderr(Stdio::inherit())
        .output()?;
    drop(server);
    if !output.status.success() {
        return Err(format!("the client process of {case:?} failed: {}", output.status).into());
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// A command running this program, with the certificates of a TLS case.
fn command(certs: Option<&TlsDir>) -> Result<Command, BoxError> {
    let mut command = Command::new(std::env::current_exe()?);
    if let Some(certs) = certs {
        command.env(echo::TLS_DIR_VAR, &certs.0);
    }
    Ok(command)
}

/// A throw-away CA and server certificate for `localhost`, for one case; removed after it.
struct TlsDir(std::path::PathBuf);

impl TlsDir {
    fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "waypost-bench-certs-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        waypost_testkit::pki::TestPki::in_dir(&dir);
        Self(dir)
    }
}

impl Drop for TlsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Prints a measurement as a JSON line or a table row.
pub fn report(m: &Measurement, json: bool) -> Result<(), BoxError> {
    if json {
        println!("{}", serde_json::to_string(m)?);
    } else {
        println!(
            "{:<36} {:<6} {:>8} B {:>2}x{:<4} w{} {:>9.0} calls/s  p50 {:>7} us  p99 {:>7} us  server {:>7.2} us/call  client {:>7.2} us/call",
            m.framework,
            m.kind.map_or("bytes", PayloadKind::as_str),
            m.payload,
            m.connections,
            m.concurrency,
            m.server_workers,
            m.qps,
            m.p50_us,
            m.p99_us,
            m.server_cpu_us_per_call,
            m.client_cpu_us_per_call.unwrap_or_default()
        );
    }
    Ok(())
}

/// The echo matrix of BENCHMARKS.md: every framework on plain `Vec<u8>` payloads from 64 B to
/// 1 MiB at 1, 32 and 256 calls outstanding, and 4 connections x 256 at 64 B and 4 KiB;
/// `String` and record payloads at 256 outstanding; the other serializers (`Vec<u8>` and the
/// record, 256 outstanding); waypost's server
/// on 1, 2 and 4 workers; waypost with `Bytes` payloads from 4 KiB up; and waypost and tonic
/// over TLS at 64 B and 4 KiB, 256 outstanding; streams against tonic's (see
/// `echo::streams`). `only` keeps the frameworks whose name contains it.
pub fn matrix(only: Option<&str>) -> Vec<Case> {
    let mut frameworks = vec!["waypost/bincode".to_owned()];
    frameworks.extend(echo::peers().into_iter().map(str::to_owned));
    let case = |framework: &str, kind, size, connections, concurrency| Case {
        framework: framework.to_owned(),
        payload: Payload { kind, size },
        shape: Shape {
            connections,
            concurrency,
        },
        server_workers: 1,
    };
    let mut cases = Vec::new();
    for size in [64, 512, 4096, 65_536, 1_048_576] {
        for concurrency in [1, 32, 256] {
            for f in &frameworks {
                cases.push(case(f, PayloadKind::Bytes, size, 1, concurrency));
            }
        }
    }
    for size in [64, 4096] {
        for f in &frameworks {
            cases.push(case(f, PayloadKind::Bytes, size, 4, 256));
        }
    }
    for (kind, size) in [
        (PayloadKind::Text, 64),
        (PayloadKind::Text, 4096),
        (PayloadKind::Text, 65_536),
        (PayloadKind::Record, 1024),
    ] {
        let serves = |f: &&String| echo::framework(f).is_some_and(|f| f.supports(kind));
        for f in frameworks.iter().filter(serves) {
            cases.push(case(f, kind, size, 1, 256));
        }
    }
    for serializer in ["waypost/msgpack", "waypost/postcard", "waypost/json"] {
        for size in [64, 4096] {
            cases.push(case(serializer, PayloadKind::Bytes, size, 1, 256));
        }
        cases.push(case(serializer, PayloadKind::Record, 1024, 1, 256));
    }
    // HTTP/JSON: this framework's ingress and an axum handler, the record, 256 outstanding.
    for framework in ["waypost/http+http1.1", "waypost/http+h2", "axum+http1.1", "axum+h2"] {
        cases.push(case(framework, PayloadKind::Record, 1024, 1, 256));
    }
    for workers in [2, 4] {
        for size in [64, 4096] {
            cases.push(case("waypost/bincode", PayloadKind::Bytes, size, 4, 256).with_workers(workers));
        }
    }
    // The same echo with `Bytes` payloads (volo-thrift's and tonic's type for binary), where the
    // large ones are shared with the frames instead of copied.
    for size in [4096, 65_536, 1_048_576] {
        for concurrency in [32, 256] {
            cases.push(case("waypost/bincode+Bytes", PayloadKind::Bytes, size, 1, concurrency));
        }
    }
    for framework in ["waypost/bincode+tls", "tonic/protobuf+tls"] {
        for size in [64, 4096] {
            cases.push(case(framework, PayloadKind::Bytes, size, 1, 256));
        }
    }
    // Streams against tonic's: a server stream of 64 B and 64 KiB items, and a bidirectional
    // ping-pong of 64 B, on one stream and on 32 at once.
    for framework in ["waypost/stream+server", "tonic/stream+server"] {
        for size in [64, 65_536] {
            cases.push(case(framework, PayloadKind::Bytes, size, 1, 1));
        }
    }
    for framework in ["waypost/stream+bidi", "tonic/stream+bidi"] {
        for concurrency in [1, 32] {
            cases.push(case(framework, PayloadKind::Bytes, 64, 1, concurrency));
        }
    }
    // Compression: a record of about 1 MiB (msgpack, field names included, as JSON-like
    // data is), without and with zstd at level 1.
    for framework in ["waypost/msgpack", "waypost/msgpack+zstd"] {
        for concurrency in [1, 8] {
            cases.push(case(framework, PayloadKind::Record, 1_048_576, 1, concurrency));
        }
    }
    cases.retain(|c| only.is_none_or(|o| c.framework.contains(o)));
    cases
}

impl Case {
    fn with_workers(mut self, workers: usize) -> Self {
        self.server_workers = workers;
        self
    }
}

/// Runs the matrix, printing each case as it ends.
pub fn echo(only: Option<&str>, timing: Timing, json: bool) -> Result<(), BoxError> {
    for case in matrix(only) {
        let m = run_case(&case, timing)?;
        report(&m, json)?;
    }
    Ok(())
}

/// The load of a cost comparison.
#[derive(Debug, Clone, Copy)]
pub struct CostOptions {
    /// What is echoed.
    pub payload: Payload,
    /// Calls outstanding (one connection).
    pub concurrency: usize,
    /// Alternating rounds.
    pub rounds: usize,
}

/// A cost comparison: `rounds` alternating runs of `base` and `with` (waypost framework
/// names), so drift on a shared machine hits both alike; prints every run and the medians as
/// a JSON line tagged `bench`.
pub fn cost(
    bench: &str,
    base: &str,
    with: &str,
    options: CostOptions,
    timing: Timing,
    json: bool,
) -> Result<(), BoxError> {
    let CostOptions {
        payload,
        concurrency,
        rounds,
    } = options;
    let mut runs: [Vec<Measurement>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (slot, framework) in [(0, base), (1, with)] {
            let case = Case {
                framework: framework.to_owned(),
                payload,
                shape: Shape {
                    connections: 1,
                    concurrency,
                },
                server_workers: 1,
            };
            let m = run_case(&case, timing)?;
            report(&m, json)?;
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
    let (without, with_it) = (summary(&runs[0]), summary(&runs[1]));
    let round2 = |x: f64| (x * 100.0).round() / 100.0;
    let report = serde_json::json!({
        "bench": bench, "base": base, "with": with, "payload": payload.size, "concurrency": concurrency, "rounds": rounds,
        "qps_without": without.0.round(), "qps_with": with_it.0.round(),
        "qps_change_percent": ((with_it.0 / without.0 - 1.0) * 1000.0).round() / 10.0,
        "server_cpu_us_without": round2(without.1), "server_cpu_us_with": round2(with_it.1),
        "client_cpu_us_without": round2(without.2), "client_cpu_us_with": round2(with_it.2),
    });
    println!("{report}");
    Ok(())
}
