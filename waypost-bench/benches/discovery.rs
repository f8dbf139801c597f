//! Discovery micro-benchmarks: a discovery cache hit, and a pick with each load balancer on
//! 1, 10 and 1,000 instances.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use waypost_core::balance::{self, PickContext};
use waypost_core::config::LoadBalancerKind;
use waypost_core::registry::{DiscoveryCache, DiscoveryOptions, Registry, ServiceInstance};
use waypost_registry::memory::MemoryRegistry;

fn instances(n: usize) -> Arc<[ServiceInstance]> {
    (0..n)
        .map(|i| {
            let mut inst = ServiceInstance::new("Bench", "1.0", format!("10.0.{}.{}", i / 250, i % 250), 9000);
            inst.weight = 1 + (i % 5) as u32;
            inst
        })
        .collect()
}

fn cache_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cache = rt.block_on(async {
        let registry = Arc::new(MemoryRegistry::isolated());
        for i in instances(10).iter() {
            registry.register(i).await.expect("register");
        }
        let cache = DiscoveryCache::new(registry, DiscoveryOptions::default())
            .await
            .expect("cache");
        cache.instances("Bench:1.0").await.expect("load");
        cache
    });
    c.bench_function("discovery cache hit", |b| {
        b.iter(|| std::hint::black_box(cache.cached(std::hint::black_box("Bench:1.0"))))
    });
}

fn balancer_picks(c: &mut Criterion) {
    let mut group = c.benchmark_group("balancer pick");
    for kind in LoadBalancerKind::ALL {
        for n in [1usize, 10, 1000] {
            let list = instances(n);
            let balancer = balance::for_kind(*kind);
            let mut key = 0u64;
            group.bench_with_input(BenchmarkId::new(kind.name(), n), &n, |b, _| {
                b.iter(|| {
                    key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let ctx = PickContext {
                        hash_key: Some(key),
                        ..PickContext::default()
                    };
                    std::hint::black_box(balancer.pick(&list, &ctx))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, cache_hit, balancer_picks);
criterion_main!(benches);
