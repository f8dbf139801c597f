//! `rpc-bench`: reproducible figures for BENCHMARKS.md.
//!
//! * `rpc-bench echo [--quick] [--json]`: calls per second, p50/p99 latency and server CPU per
//!   call for this framework (each serializer), tarpc, tonic and a raw TCP floor.
//! * `rpc-bench watch --etcd HOST:PORT [--zookeeper HOST:PORT]`: how long a registration or a
//!   deregistration takes to reach a consumer's discovery cache.
//! * `rpc-bench scale --etcd HOST:PORT`: 10,000 instances of 1,000 services; one consumer
//!   loads and watches them all, then follows 1,000 changes per second.
//!
//! `scripts/bench` starts the registries and runs everything.

mod echo;
mod scale;
mod watch;
mod xproc;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rpc_core::SerializerKind;

use echo::{Framework, Measurement, Runtimes, Timing};
use xproc::Setup;

#[derive(Parser)]
#[command(about = "Benchmarks of the RPC framework")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Echo calls against every framework.
    Echo {
        /// Short warm-up and window: every case within 90 seconds.
        #[arg(long)]
        quick: bool,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Only frameworks whose name contains this.
        #[arg(long)]
        only: Option<String>,
    },
    /// The cost of the middleware seam: echo between two processes without and with N no-op
    /// layers on both sides, alternating.
    LayerCost {
        /// Layers on each side.
        #[arg(long, default_value_t = 3)]
        layers: usize,
        #[command(flatten)]
        cost: CostArgs,
    },
    /// The cost of metrics: echo between two processes without and with the metrics layer
    /// and a Prometheus recorder on both sides, alternating.
    MetricsCost {
        #[command(flatten)]
        cost: CostArgs,
    },
    /// The client process of the cross-process runs (started by them): prints its
    /// measurement as JSON.
    #[command(hide = true)]
    EchoClient {
        /// Server address.
        #[arg(long)]
        addr: String,
        /// Server process id (its CPU time is read from /proc).
        #[arg(long)]
        server_pid: u32,
        /// No-op layers around every call.
        #[arg(long, default_value_t = 0)]
        layers: usize,
        /// The metrics layer and a Prometheus recorder.
        #[arg(long)]
        metrics: bool,
        /// Payload bytes.
        #[arg(long)]
        payload: usize,
        /// Calls outstanding.
        #[arg(long)]
        concurrency: usize,
        /// Warm-up, milliseconds.
        #[arg(long)]
        warmup_ms: u64,
        /// Measured window, milliseconds.
        #[arg(long)]
        window_ms: u64,
    },
    /// The server process of the cross-process runs (started by them).
    #[command(hide = true)]
    EchoServer {
        /// No-op layers around every call.
        #[arg(long, default_value_t = 0)]
        layers: usize,
        /// The metrics layer and a Prometheus recorder.
        #[arg(long)]
        metrics: bool,
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
    /// Many services and instances through one consumer.
    Scale {
        /// etcd endpoint.
        #[arg(long)]
        etcd: String,
        /// Services (10 instances each).
        #[arg(long, default_value_t = 1000)]
        services: usize,
        /// Seconds of 1,000 changes per second.
        #[arg(long, default_value_t = 5)]
        churn_secs: u64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Echo { quick, json, only } => run_echo(quick, json, only.as_deref()),
        Command::LayerCost { layers, cost } => cost.run("layer_cost", Setup { layers, metrics: false }),
        Command::MetricsCost { cost } => cost.run(
            "metrics_cost",
            Setup {
                layers: 0,
                metrics: true,
            },
        ),
        Command::EchoServer { layers, metrics } => xproc::serve(Setup { layers, metrics }),
        Command::EchoClient {
            addr,
            server_pid,
            layers,
            metrics,
            payload,
            concurrency,
            warmup_ms,
            window_ms,
        } => {
            let timing = Timing {
                warmup: Duration::from_millis(warmup_ms),
                window: Duration::from_millis(window_ms),
            };
            let setup = Setup { layers, metrics };
            xproc::drive(setup, &addr, server_pid, payload, concurrency, timing).and_then(|m| {
                println!("{}", serde_json::to_string(&m)?);
                Ok(())
            })
        }
        Command::Watch {
            etcd,
            zookeeper,
            events,
            json,
        } => tokio_main(watch::run(etcd, zookeeper, events, json)),
        Command::Scale {
            etcd,
            services,
            churn_secs,
            json,
        } => tokio_main(scale::run(etcd, services, churn_secs, json)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rpc-bench: error: {e}");
            ExitCode::FAILURE
        }
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
    /// Compares the plain setup with `with` under these options.
    fn run(self, bench: &str, with: Setup) -> Result<(), BoxError> {
        let timing = Timing {
            warmup: Duration::from_millis(500),
            window: Duration::from_secs(self.window_secs),
        };
        xproc::cost(
            bench,
            with,
            self.payload,
            self.concurrency,
            self.rounds,
            timing,
            self.json,
        )
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn tokio_main(fut: impl std::future::Future<Output = Result<(), BoxError>>) -> Result<(), BoxError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

fn run_echo(quick: bool, json: bool, only: Option<&str>) -> Result<(), BoxError> {
    let timing = if quick {
        Timing {
            warmup: Duration::from_millis(200),
            window: Duration::from_millis(800),
        }
    } else {
        Timing {
            warmup: Duration::from_secs(1),
            window: Duration::from_secs(5),
        }
    };
    let frameworks: Vec<Box<dyn Framework>> = vec![
        Box::new(echo::raw::RawTcp),
        Box::new(echo::rpc::RpcCore(SerializerKind::Bincode)),
        Box::new(echo::rpc::RpcCore(SerializerKind::Postcard)),
        Box::new(echo::rpc::RpcCore(SerializerKind::Json)),
        Box::new(echo::tarpc_peer::Tarpc),
        Box::new(echo::tonic_peer::Tonic),
    ];
    let runtimes = Runtimes::new()?;
    let mut results: Vec<Measurement> = Vec::new();
    for payload in [64usize, 4096] {
        for concurrency in [1usize, 32, 256] {
            for framework in &frameworks {
                if only.is_some_and(|o| !framework.name().contains(o)) {
                    continue;
                }
                let m = runtimes.run(framework.as_ref(), payload, concurrency, timing)?;
                if json {
                    println!("{}", serde_json::to_string(&m)?);
                } else {
                    eprintln!(
                        "{:<18} {:>5} B  c={:<3}  {:>9.0} calls/s  p50 {:>6} us  p99 {:>6} us  server {:>5.1} us/call",
                        m.framework, m.payload, m.concurrency, m.qps, m.p50_us, m.p99_us, m.server_cpu_us_per_call
                    );
                }
                results.push(m);
            }
        }
    }
    if !json {
        print_table(&results);
    }
    Ok(())
}

fn print_table(results: &[Measurement]) {
    println!("| framework | payload | concurrency | calls/s | p50 µs | p99 µs | server CPU µs/call |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for m in results {
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {:.1} |",
            m.framework, m.payload, m.concurrency, m.qps, m.p50_us, m.p99_us, m.server_cpu_us_per_call
        );
    }
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
