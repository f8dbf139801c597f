//! The discovery cache's contract, on the memory backend wrapped by a registry that can fail
//! and lose events on demand; and config-driven providers and consumers.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use waypost_core::config::RpcConfig;
use waypost_core::registry::{
    BackendError, DiscoveryCache, DiscoveryOptions, Registry, RegistryError, ServiceInstance, WatchEvent, WatchStream,
};
use waypost_core::server::ServerBuilder;
use waypost_core::BoxFuture;
use waypost_core::RpcError;
use waypost_registry::memory::MemoryRegistry;
use waypost_tests::servers::unique_root;
use waypost_tests::{wait_until, TestServiceClient, TestServiceImpl, TestServiceServer};

/// A memory registry that can be taken down, can lose watch events, and counts calls.
struct Flaky {
    inner: MemoryRegistry,
    down: AtomicBool,
    lose_events: AtomicBool,
    /// Report every change as a full snapshot, as the ZooKeeper backend does.
    snapshots_only: AtomicBool,
    watches: AtomicUsize,
    discovers: AtomicUsize,
    kill: broadcast::Sender<()>,
}

impl Flaky {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryRegistry::isolated(),
            down: AtomicBool::new(false),
            lose_events: AtomicBool::new(false),
            snapshots_only: AtomicBool::new(false),
            watches: AtomicUsize::new(0),
            discovers: AtomicUsize::new(0),
            kill: broadcast::channel(4).0,
        })
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            let _ = self.kill.send(());
        }
    }

    fn check(&self) -> Result<(), RegistryError> {
        if self.down.load(Ordering::SeqCst) {
            Err(RegistryError::Unavailable {
                backend: "flaky",
                endpoints: "nowhere".to_owned(),
                operation: "any",
                source: BackendError::message("down"),
            })
        } else {
            Ok(())
        }
    }
}

impl Registry for Flaky {
    fn backend(&self) -> &'static str {
        "flaky"
    }
    fn register<'a>(&'a self, i: &'a ServiceInstance) -> BoxFuture<'a, Result<(), RegistryError>> {
        self.inner.register(i)
    }
    fn deregister<'a>(&'a self, i: &'a ServiceInstance) -> BoxFuture<'a, Result<(), RegistryError>> {
        self.inner.deregister(i)
    }
    fn discover<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Vec<ServiceInstance>, RegistryError>> {
        Box::pin(async move {
            self.discovers.fetch_add(1, Ordering::SeqCst);
            self.check()?;
            self.inner.discover(key).await
        })
    }
    fn services(&self) -> BoxFuture<'_, Result<Vec<String>, RegistryError>> {
        self.inner.services()
    }
    fn watch<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<WatchStream, RegistryError>> {
        Box::pin(async move {
            self.watches.fetch_add(1, Ordering::SeqCst);
            self.check()?;
            let mut upstream = self.inner.watch(key).await?;
            let mut kill = self.kill.subscribe();
            let (tx, rx) = mpsc::channel(64);
            let lose = self.lose_events.load(Ordering::SeqCst);
            let snapshots_only = self.snapshots_only.load(Ordering::SeqCst);
            let lister = self.inner.handle();
            let key = key.to_owned();
            let task = tokio::spawn(async move {
                let mut first = true;
                loop {
                    tokio::select! {
                        biased;
                        _ = kill.recv() => return,
                        event = upstream.next() => {
                            let Some(mut event) = event else { return };
                            if snapshots_only && !first {
                                event = WatchEvent::Snapshot(lister.discover(&key).await.unwrap_or_default());
                            }
                            // The opening snapshot always passes; later events only when not losing them.
                            let deliver = (first && matches!(event, WatchEvent::Snapshot(_))) || !lose;
                            first = false;
                            if deliver && tx.send(event).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            Ok(WatchStream::new(rx, Some(task)))
        })
    }
    fn close(&self) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.inner.close()
    }
}

/// Breaks every watch of `registry` (down and up again) and waits until the cache watches again.
async fn break_watches(registry: &Flaky) {
    let watches = registry.watches.load(Ordering::SeqCst);
    registry.set_down(true);
    registry.set_down(false);
    wait_until(Duration::from_secs(2), "the cache watches again", || {
        let n = registry.watches.load(Ordering::SeqCst);
        async move { n > watches }
    })
    .await;
}

fn options() -> DiscoveryOptions {
    DiscoveryOptions {
        load_timeout: Duration::from_secs(1),
        resync_interval: Duration::from_secs(30),
        retry_base: Duration::from_millis(20),
        retry_cap: Duration::from_millis(200),
        empty_list_grace: Duration::from_millis(600),
        ..DiscoveryOptions::default()
    }
}

fn instance(port: u16) -> ServiceInstance {
    ServiceInstance::new("S", "1", "127.0.0.1", port)
}

fn ports(list: &[ServiceInstance]) -> Vec<u16> {
    list.iter().map(|i| i.port).collect()
}

async fn await_ports(cache: &DiscoveryCache, key: &str, want: Vec<u16>) {
    wait_until(Duration::from_secs(3), &format!("the cache holds {want:?}"), || {
        let got = cache.cached(key).map(|l| ports(&l));
        let want = want.clone();
        async move { got == Some(want) }
    })
    .await;
}

#[tokio::test]
async fn the_first_lookup_starts_exactly_one_watch_and_hits_never_reach_the_registry() {
    let registry = Flaky::new();
    registry.register(&instance(1)).await.unwrap();
    let cache = Arc::new(DiscoveryCache::new(registry.clone(), options()).await.unwrap());
    let lookups: Vec<_> = (0..50)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.instances("S:1").await })
        })
        .collect();
    for l in lookups {
        assert_eq!(ports(&l.await.unwrap().unwrap()), vec![1]);
    }
    assert_eq!(registry.watches.load(Ordering::SeqCst), 1);
    let first = cache.instances("S:1").await.unwrap();
    for _ in 0..1000 {
        let hit = cache.instances("S:1").await.unwrap();
        assert!(Arc::ptr_eq(&first, &hit), "a hit must share the cached list");
    }
    assert_eq!(registry.watches.load(Ordering::SeqCst), 1);
    assert_eq!(registry.discovers.load(Ordering::SeqCst), 0);
    cache.close().await;
}

#[tokio::test]
async fn an_empty_answer_is_not_cached_forever() {
    let registry = Flaky::new();
    let cache = DiscoveryCache::new(registry.clone(), options()).await.unwrap();
    assert!(cache.instances("S:1").await.unwrap().is_empty());
    registry.register(&instance(7)).await.unwrap();
    await_ports(&cache, "S:1", vec![7]).await;
    cache.close().await;
}

#[tokio::test]
async fn an_unreachable_registry_keeps_the_last_known_list_and_relists_when_back() {
    let registry = Flaky::new();
    registry.register(&instance(1)).await.unwrap();
    let cache = DiscoveryCache::new(registry.clone(), options()).await.unwrap();
    cache.instances("S:1").await.unwrap();

    registry.set_down(true);
    registry.register(&instance(2)).await.unwrap(); // unseen while down
    let watches_before = registry.watches.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ports(&cache.instances("S:1").await.unwrap()),
        vec![1],
        "last-known list kept"
    );
    let retries = registry.watches.load(Ordering::SeqCst) - watches_before;
    assert!(
        (2..=20).contains(&retries),
        "{retries} re-watch attempts in 500 ms: backoff not applied"
    );

    registry.set_down(false);
    await_ports(&cache, "S:1", vec![1, 2]).await;
    cache.close().await;
}

#[tokio::test]
async fn an_empty_relisting_keeps_the_last_known_instances_for_the_grace_period() {
    let registry = Flaky::new();
    registry.register(&instance(1)).await.unwrap();
    let cache = DiscoveryCache::new(registry.clone(), options()).await.unwrap();
    cache.instances("S:1").await.unwrap();

    // The registry loses everything (no events), and the watch breaks and re-lists: empty.
    registry.lose_events.store(true, Ordering::SeqCst);
    registry.deregister(&instance(1)).await.unwrap();
    registry.lose_events.store(false, Ordering::SeqCst);
    break_watches(&registry).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        ports(&cache.cached("S:1").unwrap()),
        vec![1],
        "the last-known instance is kept"
    );

    // The first instance that registers again replaces the kept one.
    registry.register(&instance(2)).await.unwrap();
    await_ports(&cache, "S:1", vec![2]).await;

    // Without any instance reappearing, the grace runs out and the list empties.
    registry.lose_events.store(true, Ordering::SeqCst);
    registry.deregister(&instance(2)).await.unwrap();
    registry.lose_events.store(false, Ordering::SeqCst);
    break_watches(&registry).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ports(&cache.cached("S:1").unwrap()), vec![2], "kept during the grace");
    await_ports(&cache, "S:1", vec![]).await;
    cache.close().await;
}

#[tokio::test]
async fn removing_the_last_instance_on_a_live_watch_applies_at_once() {
    let registry = Flaky::new();
    registry.snapshots_only.store(true, Ordering::SeqCst);
    registry.register(&instance(1)).await.unwrap();
    let cache = DiscoveryCache::new(registry.clone(), options()).await.unwrap();
    cache.instances("S:1").await.unwrap();
    registry.deregister(&instance(1)).await.unwrap();
    // A live watch's empty snapshot is a change, not a registry that lost its data: no grace.
    let started = std::time::Instant::now();
    await_ports(&cache, "S:1", vec![]).await;
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "took {:?}",
        started.elapsed()
    );
    cache.close().await;
}

#[tokio::test]
async fn a_removal_that_empties_the_list_just_after_a_rewatch_waits_for_the_grace() {
    let registry = Flaky::new();
    registry.register(&instance(1)).await.unwrap();
    let cache = DiscoveryCache::new(registry.clone(), options()).await.unwrap();
    cache.instances("S:1").await.unwrap();

    // The watch breaks and is re-established (a registry that was frozen, say); then the
    // registry expires every lease at once: a live removal that empties the list.
    break_watches(&registry).await;
    registry.deregister(&instance(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ports(&cache.cached("S:1").unwrap()), vec![1], "kept during the grace");
    await_ports(&cache, "S:1", vec![]).await;

    // Long after the re-watch, the last instance leaving empties the list at once.
    registry.register(&instance(2)).await.unwrap();
    await_ports(&cache, "S:1", vec![2]).await;
    let started = std::time::Instant::now();
    registry.deregister(&instance(2)).await.unwrap();
    await_ports(&cache, "S:1", vec![]).await;
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "took {:?}",
        started.elapsed()
    );
    cache.close().await;
}

#[tokio::test]
async fn the_resync_job_repairs_missed_events() {
    let registry = Flaky::new();
    registry.lose_events.store(true, Ordering::SeqCst);
    registry.register(&instance(1)).await.unwrap();
    let cache = DiscoveryCache::new(
        registry.clone(),
        DiscoveryOptions {
            resync_interval: Duration::from_secs(1),
            ..options()
        },
    )
    .await
    .unwrap();
    cache.instances("S:1").await.unwrap();
    registry.register(&instance(2)).await.unwrap();
    registry.deregister(&instance(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        ports(&cache.cached("S:1").unwrap()),
        vec![1],
        "events were meant to be lost"
    );
    // The scheduled job (every second) re-lists and corrects the entry.
    await_ports(&cache, "S:1", vec![2]).await;
    assert!(registry.discovers.load(Ordering::SeqCst) >= 1);
    cache.close().await;
}

fn memory_config(root: &str) -> RpcConfig {
    RpcConfig::from_yaml(&format!(
        "rpc:\n  server: {{ host: 127.0.0.1, port: 0 }}\n  registry: {{ type: memory, root: \"{root}\" }}\n  serializer: postcard\n"
    ))
    .unwrap()
}

#[tokio::test]
async fn config_built_providers_and_consumer_round_robin_and_deregister_on_shutdown() {
    let config = memory_config(&unique_root("mem"));
    let builder =
        || ServerBuilder::from_config(&config.server).add_service(TestServiceServer::new(TestServiceImpl::default()));
    let first = waypost::serve(&config, builder()).await.unwrap();
    let second = waypost::serve(&config, builder()).await.unwrap();
    let consumer = waypost::consumer(&config).await.unwrap();
    let client = TestServiceClient::new(consumer.channel()).unwrap();
    for i in 0..20 {
        assert_eq!(client.echo(i).await.unwrap(), i);
    }
    let listed = consumer.cache().cached("TestService:1.0").unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(consumer.pool().live_connections(), 2, "calls went to both providers");

    // No instances: fails at once, naming the key.
    #[waypost_core::service(name = "Nobody")]
    trait Nobody {
        async fn call(&self) -> u8;
    }
    let started = std::time::Instant::now();
    match NobodyClient::new(consumer.channel()).unwrap().call().await {
        Err(RpcError::NoInstances(key)) => assert_eq!(key, "Nobody:1.0"),
        other => panic!("expected no instances, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(500));

    let gone = first.local_addr().unwrap().port();
    first.shutdown().await;
    wait_until(Duration::from_secs(2), "the stopped provider leaves the cache", || {
        let list = consumer.cache().cached("TestService:1.0").unwrap();
        async move { list.len() == 1 && list[0].port != gone }
    })
    .await;
    for i in 0..5 {
        assert_eq!(client.echo(i).await.unwrap(), i);
    }
    second.shutdown().await;
    consumer.close().await;
}

/// A user's balancer: always the instance with the highest port.
struct HighestPort {
    picks: Arc<AtomicUsize>,
}

impl waypost_core::balance::LoadBalancer for HighestPort {
    fn pick(&self, instances: &Arc<[ServiceInstance]>, ctx: &waypost_core::balance::PickContext<'_>) -> Option<usize> {
        self.picks.fetch_add(1, Ordering::SeqCst);
        (0..instances.len())
            .filter(|&i| (ctx.available)(i))
            .max_by_key(|&i| instances[i].port)
    }
}

/// A user's layer: counts calls and tags them.
struct Tagging {
    calls: Arc<AtomicUsize>,
}

impl waypost_core::Interceptor for Tagging {
    fn on_request(&self, ctx: &mut waypost_core::context::CallContext) -> Result<(), waypost_core::RpcError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        ctx.metadata_mut().insert("tagged", "yes");
        Ok(())
    }
}

#[tokio::test]
async fn the_consumer_builder_takes_a_users_balancer_layer_and_connection_options() {
    let root = unique_root("builder");
    let config = RpcConfig::from_yaml(&format!(
        "rpc:\n  server: {{ host: 127.0.0.1, port: 0 }}\n  registry: {{ type: memory, root: \"{root}\" }}\n  consumer: {{ connect_timeout_ms: 250, keepalive_interval_ms: 1000 }}\n"
    ))
    .unwrap();
    let options = waypost_core::client::ClientOptions::from(&config.consumer);
    assert_eq!(options.connect_timeout, Duration::from_millis(250));
    assert_eq!(options.keepalive_interval, Duration::from_secs(1));
    let builder =
        || ServerBuilder::from_config(&config.server).add_service(TestServiceServer::new(TestServiceImpl::default()));
    let a = waypost::serve(&config, builder()).await.unwrap();
    let b = waypost::serve(&config, builder()).await.unwrap();
    let highest = a.local_addr().unwrap().port().max(b.local_addr().unwrap().port());

    let picks = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let registry = waypost_registry::connect(&config.registry).await.unwrap();
    let consumer = waypost_core::client::Consumer::builder(&config)
        .load_balancer_for("TestService:1.0", {
            let picks = picks.clone();
            move || Arc::new(HighestPort { picks: picks.clone() }) as Arc<dyn waypost_core::balance::LoadBalancer>
        })
        .interceptor(Tagging { calls: calls.clone() })
        .build(registry)
        .await
        .unwrap();
    let client = TestServiceClient::new(consumer.channel()).unwrap();
    for i in 0..10 {
        assert_eq!(client.echo(i).await.unwrap(), i);
    }
    assert_eq!(
        picks.load(Ordering::SeqCst),
        10,
        "every call was picked by the user's balancer"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        10,
        "every call went through the user's layer"
    );
    assert_eq!(
        consumer.pool().live_connections(),
        1,
        "one instance only: the highest port"
    );
    let only = consumer.pool().endpoint(&format!("127.0.0.1:{highest}"));
    assert_eq!(only.addr(), format!("127.0.0.1:{highest}"));
    a.shutdown().await;
    b.shutdown().await;
    consumer.close().await;
}
