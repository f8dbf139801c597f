//! A long-lived consumer keeps nothing for the providers that came and went: 1,000 in-process
//! providers arrive and leave while it calls. Alone in its test binary, so the process's file
//! descriptors and memory are this test's own.

use std::time::Duration;

use waypost_core::config::RpcConfig;
use waypost_core::server::ServerBuilder;
use waypost_tests::load::{report, resident_bytes};
use waypost_tests::servers::unique_root;
use waypost_tests::{wait_until, TestServiceClient, TestServiceImpl, TestServiceServer};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_keeps_nothing_for_providers_that_left() {
    let root = unique_root("churn");
    let config = RpcConfig::from_yaml(&format!(
        "rpc:\n  server: {{ host: 127.0.0.1, port: 0, deregister_grace_ms: 100, deregister_quiet_ms: 5 }}\n  registry: {{ type: memory, root: \"{root}\" }}\n  consumer: {{ departed_grace_ms: 50 }}\n"
    ))
    .unwrap();
    let start_provider = || async {
        let builder =
            ServerBuilder::from_config(&config.server).add_service(TestServiceServer::new(TestServiceImpl::default()));
        waypost::serve(&config, builder).await.unwrap()
    };
    let mut live = vec![start_provider().await, start_provider().await];
    let consumer = waypost::consumer(&config).await.unwrap();
    let client = TestServiceClient::new(consumer.channel()).unwrap();
    for i in 0..10 {
        client.echo(i).await.unwrap();
    }
    let metrics = tokio::runtime::Handle::current().metrics();
    let (fds_before, tasks_before, rss_before) = (open_fds(), metrics.num_alive_tasks(), resident_bytes());
    let rounds = 1000;
    let mut failed = 0;
    for i in 0..rounds {
        live.push(start_provider().await);
        // Calls spread over the providers alive now, the newest included once the cache has it.
        for k in 0..4 {
            if client.echo(i * 10 + k).await.is_err() {
                failed += 1;
            }
        }
        live.remove(0).shutdown().await;
    }
    let expected = live.len();
    wait_until(
        Duration::from_secs(5),
        "the pool and health hold only live instances",
        || {
            let (pool, health) = (consumer.pool().len(), consumer.health().len());
            async move { pool <= expected && health <= expected }
        },
    )
    .await;
    let (fds_after, tasks_after, rss_after) = (open_fds(), metrics.num_alive_tasks(), resident_bytes());
    assert_eq!(failed, 0);
    assert!(fds_after <= fds_before + 2, "fds {fds_before} -> {fds_after}");
    assert!(tasks_after <= tasks_before + 4, "tasks {tasks_before} -> {tasks_after}");
    report(
        "churn: 1,000 provider arrivals and departures",
        serde_json::json!({
            "arrivals_and_departures": rounds, "calls": rounds * 4, "failed": failed,
            "pool_entries_after": consumer.pool().len(), "health_entries_after": consumer.health().len(),
            "live_providers": expected,
            "fds_before": fds_before, "fds_after": fds_after,
            "tasks_before": tasks_before, "tasks_after": tasks_after,
            "rss_growth_kib": (rss_after.saturating_sub(rss_before)) >> 10,
        }),
    );
    for p in live {
        p.shutdown().await;
    }
    consumer.close().await;
}
