//! ZooKeeper-specific behaviour against a real server: restarts longer than the session
//! timeout, with consumers calling through the cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rpc_core::client::{ClientOptions, ClusterInvoker, ConnectionPool, InstanceSource};
use rpc_core::fault::InstanceHealth;
use rpc_core::registry::{DiscoveryCache, DiscoveryOptions, Registry};
use rpc_core::server::{Registration, ServerBuilder};
use rpc_core::Channel;
use rpc_registry::zookeeper::{ZookeeperOptions, ZookeeperRegistry};
use rpc_tests::servers::{unique_root, ZookeeperServer};
use rpc_tests::{wait_until, TestServiceClient, TestServiceImpl, TestServiceServer};

async fn registry(endpoint: &str, root: &str) -> Arc<ZookeeperRegistry> {
    Arc::new(
        ZookeeperRegistry::connect(ZookeeperOptions {
            servers: vec![endpoint.to_owned()],
            root: root.to_owned(),
            session_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
        })
        .await
        .expect("connect ZooKeeper"),
    )
}

#[tokio::test]
async fn calls_survive_a_zookeeper_outage_longer_than_the_session_and_nodes_come_back() {
    let Some(mut zookeeper) = ZookeeperServer::start().await else {
        return;
    };
    let root = unique_root("zk");
    let provider_registry = registry(&zookeeper.endpoint(), &root).await;
    let mut server = ServerBuilder::new()
        .add_service(TestServiceServer::new(TestServiceImpl::default()))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let registration = Registration {
        host: "127.0.0.1".into(),
        weight: 1,
        metadata: Default::default(),
    };
    server.register(provider_registry.clone(), &registration).await.unwrap();
    let consumer_registry: Arc<dyn Registry> = registry(&zookeeper.endpoint(), &root).await;
    let cache = Arc::new(
        DiscoveryCache::new(
            consumer_registry.clone(),
            DiscoveryOptions {
                load_timeout: Duration::from_secs(2),
                retry_base: Duration::from_millis(50),
                retry_cap: Duration::from_millis(500),
                ..DiscoveryOptions::default()
            },
        )
        .await
        .unwrap(),
    );
    let invoker = ClusterInvoker::new(
        InstanceSource::Discovery(cache.clone()),
        Arc::new(ConnectionPool::new(ClientOptions::default())),
        Arc::new(InstanceHealth::default()),
    );
    let client = TestServiceClient::new(Channel::new(Arc::new(invoker)).with_timeout(Duration::from_secs(2))).unwrap();
    assert_eq!(client.echo(1).await.unwrap(), 1);

    zookeeper.stop().await;
    let outage = Instant::now();
    let mut calls = 0;
    while outage.elapsed() < Duration::from_secs(4) {
        client
            .echo(calls)
            .await
            .expect("a call during the ZooKeeper outage failed");
        calls += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("MEASURED ZooKeeper outage of 4 s (session 2 s): {calls} calls, 0 failed");

    let first_session = provider_registry.session().unwrap().id();
    zookeeper.restart().await;
    let back = Instant::now();
    let port = server.local_addr().unwrap().port();
    // The outage outlived the session: the provider must hold its node in a new session.
    wait_until(
        Duration::from_secs(20),
        "the provider's node is back in a new session",
        || {
            let registry = consumer_registry.clone();
            let renewed = provider_registry.session().is_ok_and(|s| s.id() != first_session);
            async move {
                renewed
                    && registry
                        .discover("TestService:1.0")
                        .await
                        .is_ok_and(|l| l.iter().any(|i| i.port == port))
            }
        },
    )
    .await;
    eprintln!(
        "MEASURED ZooKeeper restart -> provider node back in a new session: {:?}",
        back.elapsed()
    );
    // The consumer's watch works again: a second provider is discovered.
    let mut late = ServerBuilder::new()
        .add_service(TestServiceServer::new(TestServiceImpl::default()))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    late.register(provider_registry.clone(), &registration).await.unwrap();
    wait_until(Duration::from_secs(10), "the consumer sees both providers", || {
        let n = cache.cached("TestService:1.0").map(|l| l.len());
        async move { n == Some(2) }
    })
    .await;
    for i in 0..10 {
        assert_eq!(client.echo(i).await.unwrap(), i);
    }
    late.shutdown().await;
    server.shutdown().await;
    provider_registry.close().await.unwrap();
    cache.close().await;
}
