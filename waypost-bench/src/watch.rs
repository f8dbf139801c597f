//! Watch propagation: how long a registration or deregistration takes to reach a consumer's
//! discovery cache through a real registry.

use std::time::{Duration, Instant};

use waypost_core::config::{RegistryConfig, RegistryKind};
use waypost_core::registry::{DiscoveryCache, DiscoveryOptions, ServiceInstance};

use crate::{percentiles, BoxError};

/// Measures `events` register/deregister events on etcd, and on ZooKeeper when given.
pub async fn run(etcd: String, zookeeper: Option<String>, events: usize, json: bool) -> Result<(), BoxError> {
    let mut backends = vec![(RegistryKind::Etcd, etcd)];
    if let Some(zk) = zookeeper {
        backends.push((RegistryKind::Zookeeper, zk));
    }
    for (kind, endpoint) in backends {
        let config = RegistryConfig {
            kind,
            endpoints: vec![endpoint],
            root: format!("/bench-watch-{}", std::process::id()),
            ..RegistryConfig::default()
        };
        let provider = waypost_registry::connect(&config).await?;
        let consumer_registry = waypost_registry::connect(&config).await?;
        let cache = DiscoveryCache::new(consumer_registry.clone(), DiscoveryOptions::default()).await?;
        cache.instances("Watched:1.0").await?;
        let mut rx = cache.subscribe("Watched:1.0");
        let mut delays = Vec::with_capacity(events);
        for i in 0..events {
            let instance = ServiceInstance::new("Watched", "1.0", "127.0.0.1", 20_000 + (i / 2) as u16);
            let register = i % 2 == 0;
            rx.borrow_and_update();
            let started = Instant::now();
            if register {
                provider.register(&instance).await?;
            } else {
                provider.deregister(&instance).await?;
            }
            let want = if register { 1 } else { 0 };
            loop {
                let n = rx.borrow_and_update().as_ref().map_or(0, |l| l.len());
                if n == want {
                    break;
                }
                tokio::time::timeout(Duration::from_secs(10), rx.changed()).await??;
            }
            delays.push(started.elapsed());
        }
        let (p50, p99) = percentiles(delays);
        let name = kind.name();
        if json {
            println!(
                "{}",
                serde_json::json!({"bench": "watch_propagation", "registry": name, "events": events,
                    "p50_us": p50.as_micros() as u64, "p99_us": p99.as_micros() as u64})
            );
        } else {
            println!(
                "| {name} | {events} | {:.2} | {:.2} |",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            );
        }
        cache.close().await;
        provider.close().await?;
        consumer_registry.close().await?;
    }
    Ok(())
}
