//! `waypost-bench`: reproducible figures for BENCHMARKS.md.
//!
//! * `waypost-bench echo [--quick] [--json] [--only NAME]`: calls per second, p50/p99 latency and
//!   server and client CPU per call for this framework, tarpc, tonic, volo-thrift (feature
//!   `volo`) and a raw TCP floor, server and client in separate processes.
//! * `waypost-bench layer-cost` / `metrics-cost`: what tower layers / metrics add to a call.
//! * `waypost-bench watch --etcd HOST:PORT [--zookeeper HOST:PORT]`: how long a registration or a
//!   deregistration takes to reach a consumer's discovery cache.
//! * `waypost-bench scale --registry etcd|zookeeper --endpoint HOST:PORT --registry-pid PID`:
//!   5,000 instances of 500 services, 200 consumer clients in four processes each watching
//!   20 services, 1,000 changes per second: fan-out time, registry and consumer cost.
//!
//! * `waypost-bench compression-ratio`: how much zstd shrinks the record of the compression rows.
//! * `waypost-bench overload [--window-secs 30]`: a provider offered three times its capacity,
//!   with and without adaptive load shedding.
//!
//! `scripts/bench` starts the registries and runs everything.

mod echo;
mod overload;
mod scale;
mod watch;
mod xproc;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use echo::{Payload, PayloadKind, Shape, Timing};

#[derive(Parser)]
#[command(about = "Benchmarks of the RPC framework")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The echo matrix: every framework, server and client in separate processes.
    Echo {
        /// Short warm-up and window (0.3 s + 1 s a case instead of 1 s + 3 s).
        #[arg(long)]
        quick: bool,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Only frameworks whose name contains this.
        #[arg(long)]
        only: Option<String>,
    },
    /// The cost of the middleware seam: echo without and with three tower layers (timeout,
    /// concurrency limit, pass-through) on both sides, alternating.
    LayerCost {
        #[command(flatten)]
        cost: CostArgs,
    },
    /// The cost of metrics: echo without and with the metrics layer and a Prometheus recorder
    /// on both sides, alternating.
    MetricsCost {
        #[command(flatten)]
        cost: CostArgs,
    },
    /// The server process of a case (started by the others).
    #[command(hide = true)]
    EchoServer {
        /// Framework name.
        #[arg(long)]
        framework: String,
        /// Worker threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
    /// The client process of a case (started by the others): prints its measurement as JSON.
    #[command(hide = true)]
    EchoClient {
        /// Framework name.
        #[arg(long)]
        framework: String,
        /// Server address.
        #[arg(long)]
        addr: String,
        /// Server process id (its CPU time is read from /proc).
        #[arg(long)]
        server_pid: u32,
        /// The server's worker threads (reported).
        #[arg(long, default_value_t = 1)]
        server_workers: usize,
        /// What is echoed.
        #[arg(long, value_enum)]
        kind: PayloadKind,
        /// Payload bytes.
        #[arg(long)]
        size: usize,
        /// Connections.
        #[arg(long, default_value_t = 1)]
        connections: usize,
        /// Calls outstanding per connection.
        #[arg(long)]
        concurrency: usize,
        /// Warm-up, milliseconds.
        #[arg(long)]
        warmup_ms: u64,
        /// Measured window, milliseconds.
        #[arg(long)]
        window_ms: u64,
    },
    /// The compression ratio of the 1 MiB record the compression rows echo.
    CompressionRatio {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A provider offered three times its capacity, with and without load shedding.
    Overload {
        /// Length of the overload window.
        #[arg(long, default_value_t = 30)]
        window_secs: u64,
        /// The provider's pooled connections.
        #[arg(long, default_value_t = 4)]
        pool: usize,
        /// How long a call holds one.
        #[arg(long, default_value_t = 5)]
        hold_ms: u64,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The provider process of `overload`.
    #[command(hide = true)]
    OverloadServer {
        /// Adaptive load shedding on.
        #[arg(long)]
        shedding: bool,
        /// Pooled connections.
        #[arg(long)]
        pool: usize,
        /// How long a call holds one.
        #[arg(long)]
        hold_ms: u64,
    },
    /// Watch propagation delay through a real registry.
    Watch {
        /// etcd endpoint.
        #[arg(long)]
        etcd: String,
        /// ZooKeeper endpoint, to measure it too.
        #[arg(long)]
        zookeeper: Option<String>,
        /// Register/deregister events per backend.
        #[arg(long, default_value_t = 200)]
        events: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Thousands of instances, hundreds of consumer clients, 1,000 changes a second.
    Scale {
        /// etcd or zookeeper.
        #[arg(long)]
        registry: String,
        /// Where the registry serves clients (host:port).
        #[arg(long)]
        endpoint: String,
        /// The registry's process id (its memory and CPU time are read from /proc).
        #[arg(long)]
        registry_pid: u32,
        #[arg(long, default_value_t = 10)]
        churn_secs: u64,
        #[arg(long)]
        json: bool,
    },
    /// One process of the scale run's consumer clients.
    #[command(hide = true)]
    ScaleConsumers {
        #[arg(long)]
        registry: String,
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        root: String,
        #[arg(long)]
        first: usize,
        #[arg(long)]
        clients: usize,
    },
}

fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Echo { quick, json, only } => {
            let (warmup, window) = match quick {
                true => (Duration::from_millis(300), Duration::from_secs(1)),
                false => (Duration::from_secs(1), Duration::from_secs(3)),
            };
            xproc::echo(only.as_deref(), timing(warmup, window), json)
        }
        Command::LayerCost { cost } => cost.run("layer_cost", "waypost/bincode+tower layers"),
        Command::MetricsCost { cost } => cost.run("metrics_cost", "waypost/bincode+metrics"),
        Command::EchoServer { framework, workers } => xproc::serve(&framework, workers),
        Command::EchoClient {
            framework,
            addr,
            server_pid,
            server_workers,
            kind,
            size,
            connections,
            concurrency,
            warmup_ms,
            window_ms,
        } => {
            let case = xproc::Case {
                framework,
                payload: Payload { kind, size },
                shape: Shape {
                    connections,
                    concurrency,
                },
                server_workers,
            };
            let timing = Timing {
                server_pid: Some(server_pid),
                ..timing(Duration::from_millis(warmup_ms), Duration::from_millis(window_ms))
            };
            xproc::drive(&case, &addr, timing).and_then(|m| xproc::report(&m, true))
        }
        Command::CompressionRatio { json } => echo::compression_ratio(json),
        Command::Overload {
            window_secs,
            pool,
            hold_ms,
            json,
        } => overload::run(overload::OverloadRun {
            pool,
            hold_ms,
            window: Duration::from_secs(window_secs),
        })
        .and_then(|rows| overload::report(&rows, json)),
        Command::OverloadServer {
            shedding,
            pool,
            hold_ms,
        } => overload::serve(shedding, pool, hold_ms),
        Command::Watch {
            etcd,
            zookeeper,
            events,
            json,
        } => tokio_main(watch::run(etcd, zookeeper, events, json)),
        Command::Scale {
            registry,
            endpoint,
            registry_pid,
            churn_secs,
            json,
        } => tokio_main(scale::run(registry, endpoint, registry_pid, churn_secs, json)),
        Command::ScaleConsumers {
            registry,
            endpoint,
            root,
            first,
            clients,
        } => scale::kind(&registry).and_then(|kind| tokio_main(scale::consumers(kind, endpoint, root, first, clients))),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("waypost-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn timing(warmup: Duration, window: Duration) -> Timing {
    Timing {
        warmup,
        window,
        server_pid: None,
    }
}

/// The options of a cost comparison (`layer-cost`, `metrics-cost`).
#[derive(clap::Args)]
struct CostArgs {
    /// Payload bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Calls outstanding.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Alternating rounds (each: one run without, one with).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds of each measured window.
    #[arg(long, default_value_t = 3)]
    window_secs: u64,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

impl CostArgs {
    /// Compares plain waypost/bincode with the framework `with` under these options.
    fn run(self, bench: &str, with: &str) -> Result<(), BoxError> {
        let options = xproc::CostOptions {
            payload: Payload {
                kind: PayloadKind::Bytes,
                size: self.payload,
            },
            concurrency: self.concurrency,
            rounds: self.rounds,
        };
        let timing = timing(Duration::from_millis(500), Duration::from_secs(self.window_secs));
        xproc::cost(bench, "waypost/bincode", with, options, timing, self.json)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn tokio_main(fut: impl std::future::Future<Output = Result<(), BoxError>>) -> Result<(), BoxError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

/// Percentiles (p50, p99) of durations.
pub fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |p: f64| {
        samples
            .get(((samples.len() as f64 * p) as usize).min(samples.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    (at(0.5), at(0.99))
}
