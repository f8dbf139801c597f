//! Discovery against a real etcd: registration layout, leases, watches, the cache, outages
//! and data loss.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use waypost_core::client::{ClientOptions, ClusterInvoker, ConnectionPool, InstanceSource};
use waypost_core::fault::InstanceHealth;
use waypost_core::registry::{DiscoveryCache, DiscoveryOptions, Registry, ServiceInstance};
use waypost_core::server::{Registration, RunningServer, ServerBuilder};
use waypost_core::Channel;
use waypost_registry::etcd::{EtcdOptions, EtcdRegistry};
use waypost_tests::ports::free_port;
use waypost_tests::servers::{shared_etcd, unique_root};
use waypost_tests::{wait_until, TestServiceClient, TestServiceImpl, TestServiceServer};

fn options(endpoints: Vec<String>, root: &str, ttl_secs: u64) -> EtcdOptions {
    EtcdOptions {
        endpoints,
        root: root.to_owned(),
        ttl: Duration::from_secs(ttl_secs),
        timeout: Duration::from_secs(2),
        credentials: None,
        tls: None,
        reconcile_interval: Duration::from_secs(1),
        keepalive_interval: Duration::from_secs(30),
    }
}

async fn registry(endpoints: &[String], root: &str, ttl_secs: u64) -> Arc<EtcdRegistry> {
    Arc::new(
        EtcdRegistry::connect(options(endpoints.to_vec(), root, ttl_secs))
            .await
            .expect("connect to etcd"),
    )
}

async fn cache(registry: Arc<dyn Registry>) -> DiscoveryCache {
    DiscoveryCache::new(
        registry,
        DiscoveryOptions {
            load_timeout: Duration::from_secs(2),
            resync_interval: Duration::from_secs(30),
            retry_base: Duration::from_millis(50),
            retry_cap: Duration::from_millis(500),
            empty_list_grace: Duration::from_secs(10),
            ..DiscoveryOptions::default()
        },
    )
    .await
    .expect("cache")
}

async fn raw_client(endpoint: &str) -> Client {
    Client::connect([format!("http://{endpoint}")], None)
        .await
        .expect("raw etcd client")
}

fn instance(port: u16) -> ServiceInstance {
    ServiceInstance::new("UserService", "1.0", "127.0.0.1", port)
}

/// Waits until the cache holds exactly `ports` for `key`, woken by the cache's own change
/// notifications; returns the time since `since`.
async fn await_ports_since(
    cache: &DiscoveryCache,
    key: &str,
    ports: &[u16],
    timeout: Duration,
    since: Instant,
) -> Duration {
    let mut want: Vec<u16> = ports.to_vec();
    want.sort_unstable();
    let mut rx = cache.subscribe(key);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let got: Vec<u16> = rx
            .borrow_and_update()
            .as_ref()
            .map(|l| l.iter().map(|i| i.port).collect())
            .unwrap_or_default();
        if got == want {
            return since.elapsed();
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => panic!("timed out after {timeout:?}: the cache holds {got:?} for {key}, not {want:?}"),
        }
    }
}

async fn await_ports(cache: &DiscoveryCache, key: &str, ports: &[u16], timeout: Duration) -> Duration {
    await_ports_since(cache, key, ports, timeout, Instant::now()).await
}

async fn start_provider(registry: Arc<dyn Registry>) -> RunningServer {
    let mut server = ServerBuilder::new()
        .add_service(TestServiceServer::new(TestServiceImpl::default()))
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let registration = Registration {
        host: "127.0.0.1".into(),
        weight: 1,
        metadata: Default::default(),
    };
    server.register(registry, &registration).await.expect("register");
    server
}

fn discovery_client(cache: Arc<DiscoveryCache>) -> TestServiceClient {
    let pool = Arc::new(ConnectionPool::new(ClientOptions::default()));
    let invoker = ClusterInvoker::new(
        InstanceSource::Discovery(cache),
        pool,
        Arc::new(InstanceHealth::default()),
    );
    TestServiceClient::new(Channel::new(Arc::new(invoker)).with_timeout(Duration::from_secs(2))).unwrap()
}

#[tokio::test]
async fn registration_is_instance_json_on_a_lease_with_the_configured_ttl() {
    let Some(endpoints) = shared_etcd() else { return };
    let root = unique_root("rpc");
    let reg = registry(&endpoints, &root, 7).await;
    let inst = instance(9001);
    reg.register(&inst).await.unwrap();

    let mut raw = raw_client(&endpoints[0]).await;
    let key = format!("{root}/UserService:1.0/127.0.0.1:9001");
    let resp = raw.get(key.as_str(), None).await.unwrap();
    let kv = resp.kvs().first().expect("the key exists");
    assert_eq!(kv.value_str().unwrap(), inst.to_json());
    let json: serde_json::Value = serde_json::from_slice(kv.value()).unwrap();
    for field in [
        "name",
        "version",
        "host",
        "port",
        "weight",
        "metadata",
        "registered_at_ms",
    ] {
        assert!(json.get(field).is_some(), "missing {field} in {json}");
    }
    assert_ne!(kv.lease(), 0, "the key hangs on a lease");
    assert_eq!(Some(kv.lease()), reg.lease_id());
    let ttl = raw.lease_time_to_live(kv.lease(), None).await.unwrap();
    assert_eq!(ttl.granted_ttl(), 7);

    // A second instance of this process shares the lease.
    reg.register(&instance(9002)).await.unwrap();
    let resp = raw
        .get(format!("{root}/").as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(resp.kvs().len(), 2);
    assert!(resp.kvs().iter().all(|kv| Some(kv.lease()) == reg.lease_id()));
    reg.close().await.unwrap();
}

#[tokio::test]
async fn graceful_close_deletes_keys_at_once_and_revokes_the_lease() {
    let Some(endpoints) = shared_etcd() else { return };
    let root = unique_root("rpc");
    let reg = registry(&endpoints, &root, 30).await;
    reg.register(&instance(9001)).await.unwrap();
    let lease = reg.lease_id().unwrap();
    let mut raw = raw_client(&endpoints[0]).await;
    let started = Instant::now();
    reg.close().await.unwrap();
    let resp = raw
        .get(format!("{root}/").as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(resp.kvs().is_empty(), "keys left after close");
    assert!(started.elapsed() < Duration::from_secs(1));
    let ttl = raw.lease_time_to_live(lease, None).await.unwrap();
    assert_eq!(ttl.ttl(), -1, "the lease was not revoked");
}

#[tokio::test]
async fn a_provider_that_dies_leaves_the_cache_after_its_ttl_a_graceful_one_at_once() {
    let Some(endpoints) = shared_etcd() else { return };
    let root = unique_root("rpc");
    let consumer = cache(registry(&endpoints, &root, 10).await).await;
    let graceful = registry(&endpoints, &root, 2).await;
    let crashing = registry(&endpoints, &root, 2).await;
    graceful.register(&instance(1001)).await.unwrap();
    crashing.register(&instance(1002)).await.unwrap();
    consumer.instances("UserService:1.0").await.unwrap();
    await_ports(&consumer, "UserService:1.0", &[1001, 1002], Duration::from_secs(2)).await;

    let since = Instant::now();
    graceful.close().await.unwrap();
    let took = await_ports_since(&consumer, "UserService:1.0", &[1002], Duration::from_secs(1), since).await;
    eprintln!("MEASURED etcd graceful deregistration -> cache: {took:?}");

    // Dropping the registry stops its keep-alives without deregistering: a crash.
    let since = Instant::now();
    drop(crashing);
    let took = await_ports_since(&consumer, "UserService:1.0", &[], Duration::from_secs(6), since).await;
    eprintln!("MEASURED etcd crashed provider (TTL 2 s) -> cache: {took:?}");
    assert!(
        took >= Duration::from_millis(500),
        "removed before its lease could expire: {took:?}"
    );
    consumer.close().await;
}

#[tokio::test]
async fn the_cache_sees_added_and_removed_providers_within_a_second() {
    let Some(endpoints) = shared_etcd() else { return };
    let root = unique_root("rpc");
    let reg = registry(&endpoints, &root, 10).await;
    let consumer = cache(reg.clone()).await;
    reg.register(&instance(2001)).await.unwrap();
    consumer.instances("UserService:1.0").await.unwrap();
    await_ports(&consumer, "UserService:1.0", &[2001], Duration::from_secs(1)).await;

    let provider = registry(&endpoints, &root, 10).await;
    let since = Instant::now();
    provider.register(&instance(2002)).await.unwrap();
    let added = await_ports_since(
        &consumer,
        "UserService:1.0",
        &[2001, 2002],
        Duration::from_secs(1),
        since,
    )
    .await;
    let since = Instant::now();
    provider.deregister(&instance(2002)).await.unwrap();
    let removed = await_ports_since(&consumer, "UserService:1.0", &[2001], Duration::from_secs(1), since).await;
    eprintln!("MEASURED etcd add -> cache: {added:?}, remove -> cache: {removed:?}");

    // An update (new weight) replaces the entry rather than adding one.
    let mut heavier = instance(2001);
    heavier.weight = 5;
    reg.register(&heavier).await.unwrap();
    wait_until(Duration::from_secs(1), "the weight update arrives", || {
        let w = consumer
            .cached("UserService:1.0")
            .map(|l| l.iter().map(|i| i.weight).collect::<Vec<_>>());
        async move { w == Some(vec![5]) }
    })
    .await;
    provider.close().await.unwrap();
    reg.close().await.unwrap();
    consumer.close().await;
}

#[tokio::test]
async fn a_consumer_started_before_its_provider_finds_it_once_it_registers() {
    let Some(endpoints) = shared_etcd() else { return };
    let root = unique_root("rpc");
    let consumer = Arc::new(cache(registry(&endpoints, &root, 10).await).await);
    let client = discovery_client(consumer.clone());
    match client.echo(1).await {
        Err(waypost_core::RpcError::NoInstances(key)) => assert_eq!(key, "TestService:1.0"),
        other => panic!("expected no instances, got {other:?}"),
    }
    let provider_registry = registry(&endpoints, &root, 10).await;
    let server = start_provider(provider_registry.clone()).await;
    wait_until(Duration::from_secs(2), "the consumer reaches the late provider", || {
        let client = client.clone();
        async move { client.echo(7).await.ok() == Some(7) }
    })
    .await;
    server.shutdown().await;
    provider_registry.close().await.unwrap();
    consumer.close().await;
}

#[tokio::test]
async fn a_change_to_one_service_leaves_another_untouched() {
    let Some(endpoints) = shared_etcd() else { return };
    let root = unique_root("rpc");
    let reg = registry(&endpoints, &root, 10).await;
    let orders = ServiceInstance::new("OrderService", "2.0", "127.0.0.1", 3001);
    reg.register(&orders).await.unwrap();
    reg.register(&instance(3002)).await.unwrap();
    let consumer = cache(reg.clone()).await;
    let before = consumer.instances("OrderService:2.0").await.unwrap();
    consumer.instances("UserService:1.0").await.unwrap();
    let mut orders_rx = consumer.subscribe("OrderService:2.0");
    orders_rx.borrow_and_update();

    reg.register(&instance(3003)).await.unwrap();
    reg.deregister(&instance(3002)).await.unwrap();
    await_ports(&consumer, "UserService:1.0", &[3003], Duration::from_secs(1)).await;

    assert!(!orders_rx.has_changed().unwrap(), "OrderService's entry was disturbed");
    let after = consumer.cached("OrderService:2.0").unwrap();
    assert!(Arc::ptr_eq(&before, &after), "OrderService's list was rebuilt");
    let mut keys = consumer.keys();
    keys.sort();
    assert_eq!(keys, vec!["OrderService:2.0", "UserService:1.0"]);
    reg.close().await.unwrap();
    consumer.close().await;
}

#[tokio::test]
async fn garbage_values_under_the_prefix_are_skipped() {
    let Some(endpoints) = shared_etcd() else { return };
    let root = unique_root("rpc");
    let reg = registry(&endpoints, &root, 10).await;
    reg.register(&instance(4001)).await.unwrap();
    let mut raw = raw_client(&endpoints[0]).await;
    let dir = format!("{root}/UserService:1.0");
    raw.put(format!("{dir}/127.0.0.1:4002"), "not json at all", None)
        .await
        .unwrap();
    raw.put(
        format!("{dir}/127.0.0.1:4003"),
        r#"{"name":"Other","version":"1.0","host":"127.0.0.1","port":4003}"#,
        None,
    )
    .await
    .unwrap();
    let found = reg.discover("UserService:1.0").await.unwrap();
    assert_eq!(found.iter().map(|i| i.port).collect::<Vec<_>>(), vec![4001]);

    let consumer = cache(reg.clone()).await;
    consumer.instances("UserService:1.0").await.unwrap();
    await_ports(&consumer, "UserService:1.0", &[4001], Duration::from_secs(1)).await;
    // Garbage arriving through the watch is skipped too, and valid changes still flow.
    raw.put(format!("{dir}/127.0.0.1:4004"), "{broken", None).await.unwrap();
    reg.register(&instance(4005)).await.unwrap();
    await_ports(&consumer, "UserService:1.0", &[4001, 4005], Duration::from_secs(1)).await;
    reg.close().await.unwrap();
    consumer.close().await;
}

#[tokio::test]
async fn an_unreachable_etcd_fails_connect_with_a_clear_error() {
    let started = Instant::now();
    let endpoint = format!("127.0.0.1:{}", free_port());
    let err = EtcdRegistry::connect(options(vec![endpoint], "/rpc", 10))
        .await
        .err()
        .expect("connect must fail");
    let message = err.to_string();
    assert!(message.contains("etcd"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}
