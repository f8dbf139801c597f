//! The scale run: 5,000 instances of 500 services (10 each), registered through ten registry
//! clients (as ten provider processes would); 200 consumer registry clients, each with its own
//! connection and discovery cache (as 200 consumer processes would have), run in four
//! `scale-consumers` processes of 50, each watching 20 services (so every service has eight
//! watchers); then 1,000 changes a second.
//!
//! Each change sets a unique weight and stamps the instance with its sequence number and the
//! wall-clock time it was sent. A consumer client that sees a change records how long after
//! the send it arrived; the consumer processes report, for every change, how many clients saw
//! it and the latest arrival. A change's fan-out time is that latest arrival, among the eight
//! clients that watch its service. Registry figures come from the registry process itself:
//! its resident memory and CPU time (`/proc/<pid>`), the client connections it holds (its
//! listening port's established sockets), and its watches (etcd's `/metrics`, ZooKeeper's
//! `mntr`).

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use waypost_core::config::{RegistryConfig, RegistryKind};
use waypost_core::registry::{DiscoveryCache, DiscoveryOptions, Registry, ServiceInstance};

use crate::echo::process_cpu;
use crate::{percentiles, BoxError};

const SERVICES: usize = 500;
const INSTANCES_PER_SERVICE: usize = 10;
const PROVIDER_CLIENTS: usize = 10;
const CONSUMER_PROCESSES: usize = 4;
const CLIENTS_PER_PROCESS: usize = 50;
const SERVICES_PER_CLIENT: usize = 20;
const CHANGES_PER_SEC: u64 = 1000;
/// Instance metadata: the change's sequence number and when it was sent (µs since the epoch).
const SEQ: &str = "bench_seq";
const SENT_US: &str = "bench_sent_us";

/// The services consumer client `client` (0-based, over every process) watches.
fn watched_by(client: usize) -> impl Iterator<Item = usize> {
    (0..SERVICES_PER_CLIENT).map(move |j| (client * SERVICES_PER_CLIENT + j) % SERVICES)
}

fn service_key(service: usize) -> String {
    format!("Scale{service}:1.0")
}

fn instance(service: usize, index: usize) -> ServiceInstance {
    ServiceInstance::new(format!("Scale{service}"), "1.0", "10.1.0.1", 10_000 + index as u16)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn resident_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn config(kind: RegistryKind, endpoint: &str, root: &str) -> RegistryConfig {
    RegistryConfig {
        kind,
        endpoints: vec![endpoint.to_owned()],
        root: root.to_owned(),
        ttl_secs: 60,
        timeout_ms: 10_000,
        ..RegistryConfig::default()
    }
}

/// What one consumer process reports when it has loaded every service of its clients.
#[derive(Debug, Serialize, Deserialize)]
struct Ready {
    rss_before_kib: u64,
    rss_after_kib: u64,
    services_watched: usize,
    instances_held: usize,
}

/// What one consumer process reports at the end: per change, clients that saw it and the
/// latest arrival (µs after the send).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Seen {
    changes: BTreeMap<u32, (u32, u64)>,
}

/// The hidden `scale-consumers` subcommand: `clients` consumer clients numbered from `first`,
/// each on its own registry connection; prints a [`Ready`] line once loaded, then a [`Seen`]
/// line when its stdin closes.
pub async fn consumers(
    kind: RegistryKind,
    endpoint: String,
    root: String,
    first: usize,
    clients: usize,
) -> Result<(), BoxError> {
    let me = std::process::id().to_string();
    let rss_before_kib = resident_kib(&me);
    let config = config(kind, &endpoint, &root);
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let mut caches = Vec::new();
    let mut followers = Vec::new();
    let (mut services_watched, mut instances_held) = (0, 0);
    for client in first..first + clients {
        let registry = waypost_registry::connect(&config).await?;
        let cache = DiscoveryCache::new(registry.clone(), DiscoveryOptions::default()).await?;
        for service in watched_by(client) {
            let key = service_key(service);
            instances_held += cache.instances(&key).await?.len();
            services_watched += 1;
            let mut updates = cache.subscribe(&key);
            let seen = seen.clone();
            followers.push(tokio::spawn(async move {
                let mut known: HashSet<u32> = HashSet::new();
                while updates.changed().await.is_ok() {
                    let arrived = now_us();
                    let stamped: Vec<(u32, u64)> = updates
                        .borrow_and_update()
                        .iter()
                        .flat_map(|list| list.iter())
                        .filter_map(|i| {
                            Some((
                                i.metadata.get(SEQ)?.parse().ok()?,
                                i.metadata.get(SENT_US)?.parse().ok()?,
                            ))
                        })
                        .collect();
                    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                    for (seq, sent) in stamped {
                        if known.insert(seq) {
                            let entry = seen.changes.entry(seq).or_insert((0, 0));
                            entry.0 += 1;
                            entry.1 = entry.1.max(arrived.saturating_sub(sent));
                        }
                    }
                }
            }));
        }
        caches.push((registry, cache));
    }
    let ready = Ready {
        rss_before_kib,
        rss_after_kib: resident_kib(&me),
        services_watched,
        instances_held,
    };
    println!("{}", serde_json::to_string(&ready)?);
    std::io::stdout().flush()?;
    crate::xproc::until_stdin_closes().await?;
    for follower in &followers {
        follower.abort();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(PoisonError::into_inner));
    println!("{}", serde_json::to_string(&seen)?);
    for (registry, cache) in caches {
        cache.close().await;
        let _ = registry.close().await;
    }
    Ok(())
}

/// A `scale-consumers` child process.
struct ConsumerProcess {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl ConsumerProcess {
    fn start(kind: &str, endpoint: &str, root: &str, first: usize) -> Result<Self, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "scale-consumers",
                "--registry",
                kind,
                "--endpoint",
                endpoint,
                "--root",
                root,
            ])
            .args([
                "--first",
                &first.to_string(),
                "--clients",
                &CLIENTS_PER_PROCESS.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout of a consumer process")?;
        Ok(Self {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    fn line<T: for<'de> Deserialize<'de>>(&mut self) -> Result<T, BoxError> {
        let line = self.lines.next().ok_or("a consumer process ended early")??;
        Ok(serde_json::from_str(&line)?)
    }

    /// Closes its stdin (its signal to report and stop) and reads the report.
    fn finish(mut self) -> Result<Seen, BoxError> {
        drop(self.child.stdin.take());
        let seen = self.line()?;
        self.child.wait()?;
        Ok(seen)
    }
}

/// What the registry process holds and uses.
#[derive(Debug, Clone, Copy, Default)]
struct RegistryLoad {
    connections: usize,
    watches: u64,
    rss_kib: u64,
    cpu: Duration,
}

/// Reads the registry's figures: `pid` is its process, `endpoint` where it serves clients.
async fn registry_load(kind: RegistryKind, endpoint: &str, pid: &str) -> RegistryLoad {
    let port: u16 = endpoint.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
    RegistryLoad {
        connections: established_on(port),
        watches: match kind {
            RegistryKind::Etcd => etcd_watchers(endpoint).await,
            _ => zookeeper_watches(endpoint).await,
        },
        rss_kib: resident_kib(pid),
        cpu: process_cpu(pid),
    }
}

/// Established TCP connections whose local port is `port` (the server's side of its clients;
/// a Java server's sockets are in the IPv6 table).
fn established_on(port: u16) -> usize {
    let table = ["/proc/net/tcp", "/proc/net/tcp6"]
        .map(|t| std::fs::read_to_string(t).unwrap_or_default())
        .join("\n");
    table
        .lines()
        .filter(|line| !line.trim_start().starts_with("sl"))
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields
                .get(1)
                .and_then(|l| l.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            local == Some(port) && fields.get(3) == Some(&"01")
        })
        .count()
}

/// etcd's watcher count, from its metrics.
async fn etcd_watchers(endpoint: &str) -> u64 {
    let body = http_get(endpoint, "/metrics").await.unwrap_or_default();
    body.lines()
        .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// ZooKeeper's watch count, from `mntr`.
async fn zookeeper_watches(endpoint: &str) -> u64 {
    let body = four_letter(endpoint, "mntr").await.unwrap_or_default();
    body.lines()
        .find_map(|l| l.strip_prefix("zk_watch_count"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn http_get(endpoint: &str, path: &str) -> Option<String> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: {endpoint}\r\n\r\n");
    let body = exchange(endpoint, request.as_bytes()).await?;
    body.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

async fn four_letter(endpoint: &str, command: &str) -> Option<String> {
    exchange(endpoint, command.as_bytes()).await
}

/// Sends `request` and reads until the server closes.
async fn exchange(endpoint: &str, request: &[u8]) -> Option<String> {
    use tokio::io::AsyncWriteExt;
    let run = async {
        let mut stream = tokio::net::TcpStream::connect(endpoint).await.ok()?;
        stream.write_all(request).await.ok()?;
        let mut body = Vec::new();
        stream.read_to_end(&mut body).await.ok()?;
        Some(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), run).await.ok().flatten()
}

/// The registry kind named on the command line.
pub fn kind(name: &str) -> Result<RegistryKind, BoxError> {
    match name {
        "etcd" => Ok(RegistryKind::Etcd),
        "zookeeper" => Ok(RegistryKind::Zookeeper),
        other => Err(format!("--registry {other}: use etcd or zookeeper").into()),
    }
}

/// The scale run against the registry `kind_name` at `endpoint`, whose process is `pid`.
pub async fn run(kind_name: String, endpoint: String, pid: u32, churn_secs: u64, json: bool) -> Result<(), BoxError> {
    let kind = kind(&kind_name)?;
    let pid = pid.to_string();
    let root = format!("/bench-scale-{}", std::process::id());
    let config = config(kind, &endpoint, &root);
    let idle = registry_load(kind, &endpoint, &pid).await;

    // Providers.
    let mut providers: Vec<Arc<dyn Registry>> = Vec::new();
    for _ in 0..PROVIDER_CLIENTS {
        providers.push(waypost_registry::connect(&config).await?);
    }
    let total = SERVICES * INSTANCES_PER_SERVICE;
    let started = Instant::now();
    let registered: Vec<Result<(), _>> = stream::iter(0..total)
        .map(|n| {
            let registry = providers[n % PROVIDER_CLIENTS].clone();
            async move {
                registry
                    .register(&instance(n / INSTANCES_PER_SERVICE, n % INSTANCES_PER_SERVICE))
                    .await
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    registered.into_iter().collect::<Result<Vec<()>, _>>()?;
    let register_time = started.elapsed();
    let registered_load = registry_load(kind, &endpoint, &pid).await;

    // Consumers.
    let started = Instant::now();
    let mut consumers = Vec::new();
    for p in 0..CONSUMER_PROCESSES {
        consumers.push(ConsumerProcess::start(
            &kind_name,
            &endpoint,
            &root,
            p * CLIENTS_PER_PROCESS,
        )?);
    }
    let mut ready = Vec::new();
    for consumer in &mut consumers {
        ready.push(consumer.line::<Ready>()?);
    }
    let load_time = started.elapsed();
    let watched = registry_load(kind, &endpoint, &pid).await;

    // Churn: change one instance a millisecond; every change's weight is unique.
    let changes = (churn_secs * CHANGES_PER_SEC) as u32;
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / CHANGES_PER_SEC));
    let mut puts = Vec::with_capacity(changes as usize);
    let churn_started = Instant::now();
    for seq in 0..changes {
        ticker.tick().await;
        let service = (seq as usize * 7919) % SERVICES;
        let index = seq as usize % INSTANCES_PER_SERVICE;
        let mut changed = instance(service, index);
        changed.weight = seq + 2;
        changed.metadata.insert(SEQ.into(), seq.to_string());
        changed.metadata.insert(SENT_US.into(), now_us().to_string());
        let registry = providers[(service * INSTANCES_PER_SERVICE + index) % PROVIDER_CLIENTS].clone();
        puts.push(tokio::spawn(async move { registry.register(&changed).await }));
    }
    let churn_time = churn_started.elapsed();
    for p in puts {
        p.await??;
    }
    let churned = registry_load(kind, &endpoint, &pid).await;
    // Let the last changes arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut seen: BTreeMap<u32, (u32, u64)> = BTreeMap::new();
    for consumer in consumers {
        for (seq, (count, latest)) in consumer.finish()?.changes {
            let entry = seen.entry(seq).or_insert((0, 0));
            entry.0 += count;
            entry.1 = entry.1.max(latest);
        }
    }
    let watchers_per_service = CONSUMER_PROCESSES * CLIENTS_PER_PROCESS * SERVICES_PER_CLIENT / SERVICES;
    let mut fan_out = Vec::with_capacity(changes as usize);
    let mut incomplete = 0;
    for seq in 0..changes {
        match seen.get(&seq) {
            Some((count, latest)) if *count as usize >= watchers_per_service => {
                fan_out.push(Duration::from_micros(*latest));
            }
            _ => incomplete += 1,
        }
    }
    let (p50, p99) = percentiles(fan_out);
    let clients = CONSUMER_PROCESSES * CLIENTS_PER_PROCESS;
    let consumer_growth_kib: u64 = ready
        .iter()
        .map(|r| r.rss_after_kib.saturating_sub(r.rss_before_kib))
        .sum();
    let services_watched: usize = ready.iter().map(|r| r.services_watched).sum();
    let instances_held: usize = ready.iter().map(|r| r.instances_held).sum();
    let churn_cpu = churned.cpu.saturating_sub(watched.cpu);
    let figures = serde_json::json!({
        "bench": "scale", "registry": kind_name, "services": SERVICES, "instances": total,
        "provider_clients": PROVIDER_CLIENTS, "consumer_clients": clients,
        "consumer_processes": CONSUMER_PROCESSES, "services_per_consumer_client": SERVICES_PER_CLIENT,
        "register_ms": register_time.as_millis() as u64,
        "consumers_loaded_ms": load_time.as_millis() as u64,
        "registry_connections": watched.connections,
        "registry_watches": watched.watches,
        "registry_rss_idle_mib": idle.rss_kib / 1024,
        "registry_rss_registered_mib": registered_load.rss_kib / 1024,
        "registry_rss_watched_mib": watched.rss_kib / 1024,
        "registry_rss_after_churn_mib": churned.rss_kib / 1024,
        "registry_cpu_during_churn_pct": (100.0 * churn_cpu.as_secs_f64() / churn_time.as_secs_f64()).round(),
        "changes": changes, "changes_per_sec": (f64::from(changes) / churn_time.as_secs_f64()).round(),
        "fan_out_p50_ms": (p50.as_secs_f64() * 1e4).round() / 10.0,
        "fan_out_p99_ms": (p99.as_secs_f64() * 1e4).round() / 10.0,
        "changes_not_seen_by_every_watcher": incomplete,
        "consumer_rss_kib_per_watched_service": consumer_growth_kib as f64 / services_watched.max(1) as f64,
        "consumer_rss_bytes_per_instance_held": (consumer_growth_kib * 1024) / instances_held.max(1) as u64,
        "consumer_rss_mib_per_process": consumer_growth_kib / 1024 / CONSUMER_PROCESSES as u64,
    });
    if json {
        println!("{figures}");
    } else {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    }
    for p in providers {
        p.close().await?;
    }
    Ok(())
}
