//! The scale run: 10 instances of each of 1,000 services, registered through four registry
//! clients (each with its own connection and lease, as four provider processes would have);
//! one consumer loads and watches every service, then follows 1,000 changes per second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt};
use rpc_core::config::{RegistryConfig, RegistryKind};
use rpc_core::registry::{DiscoveryCache, DiscoveryOptions, Registry, ServiceInstance};

use crate::{percentiles, BoxError};

const INSTANCES_PER_SERVICE: usize = 10;
const PROVIDER_CLIENTS: usize = 4;

fn instance(service: usize, index: usize, weight: u32) -> ServiceInstance {
    let mut i = ServiceInstance::new(format!("Scale{service}"), "1.0", "10.1.0.1", 10_000 + index as u16);
    i.weight = weight;
    i
}

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

/// Runs the scale scenario against etcd at `endpoint`.
pub async fn run(endpoint: String, services: usize, churn_secs: u64, json: bool) -> Result<(), BoxError> {
    let config = RegistryConfig {
        kind: RegistryKind::Etcd,
        endpoints: vec![endpoint],
        root: format!("/bench-scale-{}", std::process::id()),
        ttl_secs: 60,
        timeout_ms: 10_000,
        ..RegistryConfig::default()
    };
    let mut providers: Vec<Arc<dyn Registry>> = Vec::new();
    for _ in 0..PROVIDER_CLIENTS {
        providers.push(rpc_registry::connect(&config).await?);
    }
    let total = services * INSTANCES_PER_SERVICE;
    let started = Instant::now();
    let registered: Vec<Result<(), _>> = stream::iter(0..total)
        .map(|n| {
            let registry = providers[n % PROVIDER_CLIENTS].clone();
            async move {
                registry
                    .register(&instance(n / INSTANCES_PER_SERVICE, n % INSTANCES_PER_SERVICE, 1))
                    .await
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    registered.into_iter().collect::<Result<Vec<()>, _>>()?;
    let register_time = started.elapsed();

    let rss_before = resident_bytes();
    let consumer_registry = rpc_registry::connect(&config).await?;
    let cache = Arc::new(DiscoveryCache::new(consumer_registry.clone(), DiscoveryOptions::default()).await?);
    let started = Instant::now();
    let loaded: Vec<usize> = stream::iter(0..services)
        .map(|s| {
            let cache = cache.clone();
            async move {
                cache
                    .instances(&format!("Scale{s}:1.0"))
                    .await
                    .map(|l| l.len())
                    .unwrap_or(0)
            }
        })
        .buffer_unordered(100)
        .collect()
        .await;
    let load_time = started.elapsed();
    let complete = loaded.iter().filter(|&&n| n == INSTANCES_PER_SERVICE).count();
    let rss_after = resident_bytes();

    // Churn: change one instance's weight 1,000 times a second; every weight is unique, so
    // each watcher knows which change it sees.
    let sent: Arc<Mutex<HashMap<u32, Instant>>> = Arc::default();
    let lags: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut watchers = Vec::new();
    for s in 0..services {
        let mut rx = cache.subscribe(&format!("Scale{s}:1.0"));
        let (sent, lags) = (sent.clone(), lags.clone());
        watchers.push(tokio::spawn(async move {
            let mut seen: std::collections::HashSet<u32> = std::collections::HashSet::new();
            while rx.changed().await.is_ok() {
                let weights: Vec<u32> = rx
                    .borrow_and_update()
                    .as_ref()
                    .map(|l| l.iter().map(|i| i.weight).collect())
                    .unwrap_or_default();
                let now = Instant::now();
                for w in weights.into_iter().filter(|w| *w >= 2) {
                    if !seen.insert(w) {
                        continue;
                    }
                    if let Some(at) = sent.lock().expect("sent map").get(&w) {
                        lags.lock().expect("lags").push(now - *at);
                    }
                }
            }
        }));
    }
    let changes = (churn_secs * 1000) as u32;
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    let mut puts = Vec::with_capacity(changes as usize);
    let churn_started = Instant::now();
    for seq in 0..changes {
        ticker.tick().await;
        let service = (seq as usize * 7919) % services;
        let index = seq as usize % INSTANCES_PER_SERVICE;
        let weight = seq + 2;
        let registry = providers[(service * INSTANCES_PER_SERVICE + index) % PROVIDER_CLIENTS].clone();
        sent.lock().expect("sent map").insert(weight, Instant::now());
        puts.push(tokio::spawn(async move {
            registry.register(&instance(service, index, weight)).await
        }));
    }
    let churn_time = churn_started.elapsed();
    for p in puts {
        p.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while lags.lock().expect("lags").len() < changes as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let observed = lags.lock().expect("lags").clone();
    let missed = changes as usize - observed.len();
    let (p50, p99) = percentiles(observed);
    for w in watchers {
        w.abort();
    }
    let figures = serde_json::json!({
        "bench": "scale", "services": services, "instances": total,
        "register_ms": register_time.as_millis() as u64,
        "consumer_load_ms": load_time.as_millis() as u64,
        "services_fully_loaded": complete,
        "consumer_rss_growth_kib": rss_after.saturating_sub(rss_before) / 1024,
        "changes": changes, "changes_per_sec": (f64::from(changes) / churn_time.as_secs_f64()).round(),
        "lag_p50_ms": p50.as_secs_f64() * 1e3, "lag_p99_ms": p99.as_secs_f64() * 1e3,
        "changes_missed": missed,
    });
    if json {
        println!("{figures}");
    } else {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    }
    cache.close().await;
    consumer_registry.close().await?;
    for p in providers {
        p.close().await?;
    }
    Ok(())
}
