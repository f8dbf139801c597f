//! The building blocks of the reliability scenarios: a registry configuration with short
//! timers, in-process providers and consumers built from it, and a wait until the registry
//! lists exactly the expected providers.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use waypost::Provider;
use waypost_core::client::Consumer;
use waypost_core::config::RpcConfig;
use waypost_core::registry::{Registry, ServiceInstance};
use waypost_core::server::ServerBuilder;

use crate::{wait_until, TestServiceClient, TestServiceImpl, TestServiceServer};

/// Configuration for `kind` at `endpoints` under `root`, with `consumer` YAML appended.
pub fn config(kind: &str, endpoints: &[String], root: &str, ttl_secs: u64, consumer: &str) -> RpcConfig {
    let endpoints = crate::servers::yaml_list(endpoints);
    RpcConfig::from_yaml(&format!(
        "rpc:\n  server: {{ host: 127.0.0.1, port: 0 }}\n  registry:\n    type: {kind}\n    endpoints: [{endpoints}]\n    root: \"{root}\"\n    ttl_secs: {ttl_secs}\n    timeout_ms: 2000\n    reconcile_secs: 1\n    resync_secs: 5\n  consumer:\n    timeout_ms: 2000\n{consumer}"
    ))
    .expect("test config")
}

/// An in-process provider registered through `config`, answering `owner` with `label`.
pub async fn provider(config: &RpcConfig, label: &str) -> Provider {
    let builder =
        ServerBuilder::from_config(&config.server).add_service(TestServiceServer::new(TestServiceImpl::labeled(label)));
    waypost::serve(config, builder).await.expect("start a provider")
}

/// Waits until a fresh registry handle lists exactly `ports` for TestService.
pub async fn await_registered(config: &RpcConfig, ports: &[u16], timeout: Duration, what: &str) -> Duration {
    let started = Instant::now();
    let mut want = ports.to_vec();
    want.sort_unstable();
    let observer: Arc<dyn Registry> = waypost_registry::connect(&config.registry).await.expect("observer");
    wait_until(timeout, what, || {
        let observer = observer.clone();
        let want = want.clone();
        async move {
            let mut got: Vec<u16> = observer
                .discover("TestService:1.0")
                .await
                .map(|l| l.iter().map(|i| i.port).collect())
                .unwrap_or_default();
            got.sort_unstable();
            got == want
        }
    })
    .await;
    let _ = observer.close().await;
    started.elapsed()
}

/// A consumer built from `cfg` whose client has made its first call (so the service is loaded
/// and watched).
pub async fn consumer(cfg: &RpcConfig) -> (Consumer, TestServiceClient) {
    let consumer = waypost::consumer(cfg).await.expect("a consumer");
    let client = TestServiceClient::new(consumer.channel()).expect("a client");
    client.owner(0).await.expect("a first call");
    (consumer, client)
}

/// The port `p` serves on.
pub fn port(p: &Provider) -> u16 {
    p.local_addr().expect("provider address").port()
}

/// The session owning the ephemeral node of TestService's instance at `port`, read with a plain
/// ZooKeeper client connected to `endpoint` (one server or a comma-separated list).
pub async fn ephemeral_owner(endpoint: String, root: &str, port: u16) -> Option<i64> {
    let path = ServiceInstance::new("TestService", "1.0", "127.0.0.1", port).path(root);
    let read = async {
        let client = zookeeper_client::Client::connect(&endpoint).await.ok()?;
        let (_, stat) = client.get_data(&path).await.ok()?;
        Some(stat.ephemeral_owner)
    };
    tokio::time::timeout(Duration::from_secs(3), read).await.ok().flatten()
}
