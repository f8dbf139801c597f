//! What abuse testing found, each against real servers: etcd auth tokens that expire, etcd's
//! keep-alive policy, connection and memory limits on the RPC port, and configuration that
//! must be refused.

use std::sync::Arc;
use std::time::Duration;

use rpc_core::config::RpcConfig;
use rpc_core::registry::Registry;
use rpc_core::server::ServerBuilder;
use rpc_registry::Provider;
use rpc_tests::load::{ms, report, Load};
use rpc_tests::servers::{shared_etcd, unique_root, EtcdServer, ETCD_ROOT};
use rpc_tests::{wait_until, TestServiceClient, TestServiceImpl, TestServiceServer};
use tokio::time::Instant;

fn etcd_config(endpoint: &str, root: &str, auth: bool) -> RpcConfig {
    let credentials = if auth {
        format!("    username: {}\n    password: {}\n", ETCD_ROOT.0, ETCD_ROOT.1)
    } else {
        String::new()
    };
    RpcConfig::from_yaml(&format!(
        "rpc:\n  server: {{ host: 127.0.0.1, port: 0, deregister_quiet_ms: 100 }}\n  registry:\n    type: etcd\n    endpoints: [\"{endpoint}\"]\n    root: \"{root}\"\n    ttl_secs: 5\n    reconcile_secs: 1\n    resync_secs: 5\n{credentials}"
    ))
    .unwrap()
}

async fn provider(config: &RpcConfig, label: &str) -> Provider {
    let builder =
        ServerBuilder::from_config(&config.server).add_service(TestServiceServer::new(TestServiceImpl::labeled(label)));
    rpc_registry::serve(config, builder).await.expect("start a provider")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_etcd_auth_tokens_are_renewed_by_consumers_and_providers() {
    let Some(etcd) = EtcdServer::start_with_jwt_auth(Duration::from_secs(10)).await else {
        return;
    };
    let config = etcd_config(&etcd.endpoint(), &unique_root("jwt"), true);
    let first = provider(&config, "first").await;
    let consumer = rpc_registry::consumer(&config).await.unwrap();
    let client = TestServiceClient::new(consumer.channel()).unwrap();
    client.owner(0).await.unwrap();
    let load = Load::start(&client, 4, Duration::from_millis(5));
    let started = Instant::now();

    // Three token lifetimes later, a new provider registers and must be discovered.
    tokio::time::sleep_until(started + Duration::from_secs(30)).await;
    let second = provider(&config, "second").await;
    wait_until(
        Duration::from_secs(10),
        "the consumer discovers the provider started at 30 s",
        || {
            let n = consumer.cache().cached("TestService:1.0").map_or(0, |l| l.len());
            async move { n == 2 }
        },
    )
    .await;
    let discovered_after = started.elapsed() - Duration::from_secs(30);

    // The first provider leaves: no call may fail.
    tokio::time::sleep_until(started + Duration::from_secs(40)).await;
    first.shutdown().await;
    tokio::time::sleep_until(started + Duration::from_secs(60)).await;
    let stats = load.stop().await;
    assert_eq!(
        stats.failed(),
        0,
        "failures: {:?}",
        &stats.failures[..stats.failures.len().min(5)]
    );
    assert!(stats.by_instance.get("second").copied().unwrap_or(0) > 0);

    // The provider deregisters cleanly at shutdown, long after its first token expired.
    let observer: Arc<dyn Registry> = rpc_registry::connect(&config.registry).await.unwrap();
    second.shutdown().await;
    let left = observer.discover("TestService:1.0").await.unwrap();
    assert!(left.is_empty(), "deregistered at once, not by lease expiry: {left:?}");
    report(
        "etcd auth token expiry",
        serde_json::json!({
            "token": "JWT, ttl 10 s", "run_s": 60, "calls": stats.calls(), "failed": stats.failed(),
            "provider_started_at_30_s_discovered_after_ms": ms(discovered_after),
            "deregistered_at_shutdown": true,
        }),
    );
    consumer.close().await;
    observer.close().await.unwrap();
}

/// The local ports of this process's established TCP connections to `endpoint`
/// (`127.0.0.1:port`), read from `/proc`: a connection that etcd drops and the client makes
/// again shows up as a new port.
fn connections_to(endpoint: &str) -> std::collections::BTreeSet<u16> {
    let port: u16 = endpoint.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(0);
    let ours: std::collections::HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .map(|fds| {
            fds.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter_map(|link| {
                    let link = link.display().to_string();
                    link.strip_prefix("socket:[")
                        .and_then(|l| l.strip_suffix(']'))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/self/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, state, inode) = (fields.get(1)?, fields.get(2)?, fields.get(3)?, fields.get(9)?);
            let remote_port = u16::from_str_radix(remote.rsplit_once(':')?.1, 16).ok()?;
            let local_port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
            (remote_port == port && *state == "01" && ours.contains(*inode)).then_some(local_port)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_etcd_keeps_the_connections_of_a_watching_and_an_idle_consumer() {
    let Some(endpoints) = shared_etcd() else { return };
    let config = etcd_config(&endpoints[0], &unique_root("keepalive"), false);
    let only = provider(&config, "only").await;
    let watching = rpc_registry::consumer(&config).await.unwrap();
    let client = TestServiceClient::new(watching.channel()).unwrap();
    client.owner(0).await.unwrap();
    // A consumer that has not called anything yet: its connection carries no stream, which is
    // when etcd counts a client's pings against its --grpc-keepalive-min-time.
    let idle = rpc_registry::consumer(&config).await.unwrap();
    let connections = connections_to(&endpoints[0]);
    assert!(
        connections.len() >= 3,
        "provider, watching and idle consumer: {connections:?}"
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after = connections_to(&endpoints[0]);
    assert_eq!(
        connections, after,
        "etcd dropped connections and the clients made new ones (too many keep-alive pings?)"
    );
    assert_eq!(
        watching.cache().rewatches(),
        0,
        "the watch broke and was re-established"
    );
    client.owner(1).await.unwrap();
    report(
        "etcd keep-alive",
        serde_json::json!({"etcd": "default flags (--grpc-keepalive-min-time 5 s)", "keepalive_interval_ms": 30000,
            "watched_s": 30, "connections": connections.len(), "connections_replaced": connections.difference(&after).count(),
            "watch_breaks": watching.cache().rewatches()}),
    );
    only.shutdown().await;
    watching.close().await;
    idle.close().await;
}
