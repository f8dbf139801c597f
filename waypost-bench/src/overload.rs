//! Overload: a provider offered three times what it can serve, with and without adaptive
//! load shedding, server and client in separate processes.
//!
//! The provider (`waypost-bench overload-server`, one tokio worker) serves a method whose calls
//! each hold one of `pool` "database connections" for `hold_ms`, so its capacity is about
//! `pool / hold_ms` calls a millisecond whatever the CPU. This process is the consumer (default
//! settings, a 1 s deadline): it measures the capacity with a closed loop of 32 callers, then,
//! for each mode on a fresh provider, offers half the capacity (the unloaded latency, which
//! also teaches the shedder its baseline) and then three times the capacity for the overload
//! window, as an open loop of independent calls. Reported per mode: goodput (successful calls
//! a second) against the capacity, p50/p99 of the successful calls against the unloaded p99,
//! and the provider's CPU per offered call.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;
use waypost_core::config::{ConsumerConfig, SheddingConfig};
use waypost_core::fault::PolicySet;
use waypost_core::server::ServerBuilder;
use waypost_core::Channel;
use waypost_testkit::load::{closed_loop, open_loop, OpenLoopRun};

use crate::echo::process_cpu;
use crate::xproc::{until_stdin_closes, ServerProcess};
use crate::BoxError;

/// The provider's one method.
#[waypost_core::service(name = "Pooled", version = "1.0")]
pub trait Pooled {
    /// Holds a pooled connection for the configured time, then answers `id`.
    async fn find(&self, id: u64) -> u64;
}

#[derive(Clone)]
struct Pool {
    connections: Arc<Semaphore>,
    hold: Duration,
}

impl Pooled for Pool {
    async fn find(&self, id: u64) -> u64 {
        // The semaphore is never closed; a call that cannot get it answers at once.
        if let Ok(_connection) = self.connections.acquire().await {
            tokio::time::sleep(self.hold).await;
        }
        id
    }
}

/// The provider process: serves `Pooled` on 127.0.0.1, prints `listening HOST:PORT`, serves
/// until its stdin closes.
pub fn serve(shedding: bool, pool: usize, hold_ms: u64) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = ServerBuilder::new()
            .shedding(SheddingConfig {
                enabled: shedding,
                ..SheddingConfig::default()
            })
            .add_service(PooledServer::new(Pool {
                connections: Arc::new(Semaphore::new(pool)),
                hold: Duration::from_millis(hold_ms),
            }))
            .bind("127.0.0.1:0")
            .await?;
        println!("listening {}", server.local_addr()?);
        until_stdin_closes().await
    })
}

/// One mode's figures.
#[derive(Debug, Serialize)]
pub struct OverloadRow {
    /// `shedding` or `none`.
    pub protection: &'static str,
    /// Calls a second the provider serves under a closed loop.
    pub capacity: f64,
    /// p99 latency at half the capacity, µs.
    pub unloaded_p99_us: u64,
    /// Calls offered a second in the overload window.
    pub offered_per_sec: f64,
    /// Successful calls a second in the overload window.
    pub goodput: f64,
    /// Goodput over capacity.
    pub goodput_share: f64,
    /// Latency of the successful calls, µs.
    pub p50_us: u64,
    /// Latency of the successful calls, µs.
    pub p99_us: u64,
    /// p99 over the unloaded p99.
    pub p99_ratio: f64,
    /// The provider's CPU per offered call, µs.
    pub server_cpu_us_per_offered: f64,
}

/// Settings of a run.
#[derive(Debug, Clone, Copy)]
pub struct OverloadRun {
    /// Pooled connections of the provider.
    pub pool: usize,
    /// How long a call holds one.
    pub hold_ms: u64,
    /// The overload window.
    pub window: Duration,
}

fn client(addr: &str) -> Result<PooledClient, BoxError> {
    let config = ConsumerConfig {
        timeout_ms: 1000,
        ..ConsumerConfig::default()
    };
    let channel = Channel::direct(addr)?.with_policies(Arc::new(PolicySet::new(config)));
    Ok(PooledClient::new(channel)?)
}

fn provider(run: OverloadRun, shedding: bool) -> Result<ServerProcess, BoxError> {
    let pool = run.pool.to_string();
    let hold = run.hold_ms.to_string();
    let mut args = vec!["overload-server", "--pool", &pool, "--hold-ms", &hold];
    if shedding {
        args.push("--shedding");
    }
    ServerProcess::run(&args)
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

/// Measures the capacity, then each mode; answers one row per mode.
pub fn run(run: OverloadRun) -> Result<Vec<OverloadRow>, BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let capacity = {
            let server = provider(run, false)?;
            let client = client(&server.addr)?;
            closed_loop(32, Duration::from_secs(3), |n| {
                let client = client.clone();
                async move { client.find(n).await.is_ok() }
            })
            .await
        };
        let mut rows = Vec::new();
        for (protection, shedding) in [("none", false), ("shedding", true)] {
            let server = provider(run, shedding)?;
            let client = client(&server.addr)?;
            let offer = |rate: f64, length: Duration| {
                let client = client.clone();
                open_loop(rate, length, move |n| {
                    let client = client.clone();
                    async move { client.find(n).await.is_ok() }
                })
            };
            let unloaded = offer(capacity / 2.0, Duration::from_secs(3)).await;
            let cpu_before = process_cpu(&server.pid().to_string());
            let loaded: OpenLoopRun = offer(capacity * 3.0, run.window).await;
            let cpu = process_cpu(&server.pid().to_string()).saturating_sub(cpu_before);
            let unloaded_p99 = unloaded.percentile(99);
            let p99 = loaded.percentile(99);
            rows.push(OverloadRow {
                protection,
                capacity,
                unloaded_p99_us: micros(unloaded_p99),
                offered_per_sec: loaded.offered as f64 / run.window.as_secs_f64(),
                goodput: loaded.goodput,
                goodput_share: loaded.goodput / capacity,
                p50_us: micros(loaded.percentile(50)),
                p99_us: micros(p99),
                p99_ratio: p99.as_secs_f64() / unloaded_p99.as_secs_f64(),
                server_cpu_us_per_offered: cpu.as_secs_f64() * 1e6 / loaded.offered.max(1) as f64,
            });
        }
        Ok(rows)
    })
}

/// Prints the rows as JSON lines or a table.
pub fn report(rows: &[OverloadRow], json: bool) -> Result<(), BoxError> {
    for r in rows {
        if json {
            println!("{}", serde_json::to_string(r)?);
        } else {
            println!(
                "{:<9} capacity {:>6.0}/s  offered {:>6.0}/s  goodput {:>6.0}/s ({:>3.0}%)  p50 {:>7} us  p99 {:>7} us ({:.1}x unloaded {} us)  server {:.1} us/offered call",
                r.protection,
                r.capacity,
                r.offered_per_sec,
                r.goodput,
                r.goodput_share * 100.0,
                r.p50_us,
                r.p99_us,
                r.p99_ratio,
                r.unloaded_p99_us,
                r.server_cpu_us_per_offered
            );
        }
    }
    Ok(())
}
