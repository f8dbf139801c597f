//! Operations without errors: a rolling restart that loses no call under the default policy,
//! the retry budget under a failing provider, and a consumer that starts while the registry
//! is down. (Provider churn has its own test binary, `churn.rs`, so that the process's file
//! descriptors are its own.)

use std::time::Duration;

use tokio::time::Instant;
use waypost_core::config::RpcConfig;
use waypost_core::protocol::Status;
use waypost_core::server::ServerBuilder;
use waypost_tests::faulty::{Fault, FaultyService};
use waypost_tests::load::{ms, report, Load};
use waypost_tests::process::ProviderProcess;
use waypost_tests::servers::{shared_etcd, unique_root};
use waypost_tests::{wait_until, TestServiceClient, TestServiceImpl, TestServiceServer};

fn etcd_yaml(endpoints: &[String], root: &str, extra_server: &str, consumer: &str) -> String {
    let endpoints = waypost_tests::servers::yaml_list(endpoints);
    format!(
        "rpc:\n  server:\n    host: 127.0.0.1\n    port: 0\n{extra_server}  registry:\n    type: etcd\n    endpoints: [{endpoints}]\n    root: \"{root}\"\n    ttl_secs: 10\n    timeout_ms: 3000\n  consumer:\n    timeout_ms: 2000\n{consumer}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_no_call_under_the_default_policy() {
    let Some(endpoints) = shared_etcd() else { return };
    let root = unique_root("rollout");
    let provider_yaml = etcd_yaml(
        &endpoints,
        &root,
        "    deregister_grace_ms: 3000\n    deregister_quiet_ms: 200\n    drain_timeout_ms: 5000\n",
        "",
    );
    // The consumer keeps every default: fail_fast, no retries.
    let consumer_config = RpcConfig::from_yaml(&etcd_yaml(&endpoints, &root, "", "")).unwrap();
    assert_eq!(
        consumer_config.consumer.tolerant,
        waypost_core::config::TolerantKind::FailFast
    );
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_test-provider"));
    let mut providers = Vec::new();
    for _ in 0..3 {
        providers.push(ProviderProcess::start(binary, &provider_yaml).await);
    }
    let consumer = waypost::consumer(&consumer_config).await.unwrap();
    let client = TestServiceClient::new(consumer.channel()).unwrap();
    wait_until(Duration::from_secs(10), "the consumer sees the three providers", || {
        let client = client.clone();
        async move { client.owner(0).await.is_ok() }
    })
    .await;
    let load = Load::start(&client, 8, Duration::from_millis(1));
    let started = Instant::now();
    let restarts = 20;
    let mut shutdown_times = Vec::new();
    for _ in 0..restarts {
        // Replace the oldest provider: start its successor, then stop it (SIGTERM).
        providers.push(ProviderProcess::start(binary, &provider_yaml).await);
        let mut old = providers.remove(0);
        let stopping = Instant::now();
        let status = old.terminate().await.unwrap();
        assert!(status.success(), "a provider exits 0 on SIGTERM: {status}");
        shutdown_times.push(stopping.elapsed());
    }
    // Calls keep flowing to the last generation.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = load.stop().await;
    let elapsed = started.elapsed();
    assert!(stats.calls() > 1000, "{} calls", stats.calls());
    assert_eq!(
        stats.failed(),
        0,
        "failures: {:?}",
        &stats.failures[..stats.failures.len().min(5)]
    );
    shutdown_times.sort_unstable();
    report(
        "rolling restart",
        serde_json::json!({
            "providers": 3, "restarts": restarts, "consumer_policy": "default (fail_fast, no retry)",
            "load": "8 workers, 1 ms pause", "calls": stats.calls(), "failed": stats.failed(),
            "duration_ms": ms(elapsed),
            "provider_shutdown_p50_ms": ms(shutdown_times[restarts / 2]),
            "provider_shutdown_max_ms": ms(shutdown_times[restarts - 1]),
        }),
    );
    for mut p in providers {
        p.terminate().await.unwrap();
    }
    consumer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_fail_overs_stay_within_the_retry_budget() {
    let (service, fault) = FaultyService::new(TestServiceServer::new(TestServiceImpl::default()));
    fault.set(Fault::FailAlways(Status::Overloaded));
    let root = unique_root("budget");
    let config = RpcConfig::from_yaml(&format!(
        "rpc:\n  server: {{ host: 127.0.0.1, port: 0 }}\n  registry: {{ type: memory, root: \"{root}\" }}\n  consumer:\n    retry: {{ strategy: fixed_interval, max_attempts: 5, base_delay_ms: 0, budget_percent: 20, min_retries_per_sec: 10 }}\n    outlier: {{ consecutive_failures: 1000000 }}\n"
    ))
    .unwrap();
    let provider = waypost::serve(&config, ServerBuilder::from_config(&config.server).add_service(service))
        .await
        .unwrap();
    let consumer = waypost::consumer(&config).await.unwrap();
    let client = TestServiceClient::new(consumer.channel()).unwrap();
    let started = Instant::now();
    let calls = 5000u64;
    let workers = 8;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..calls / workers {
                assert!(client.echo(w * 10_000 + i).await.is_err(), "every call fails");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let attempts = fault.calls() as u64;
    let extra = attempts - calls;
    let budget = consumer.retry_budget("TestService:1.0").unwrap();
    // The bucket starts full (10 s of floor plus 1,000 calls' deposits), then earns 20% of
    // the calls and 10 a second.
    let allowed = (calls as f64 * 0.20 + 10.0 * secs + 100.0 + 200.0).ceil() as u64;
    assert!(
        extra <= allowed,
        "{extra} extra attempts for {calls} calls; the budget allows {allowed}"
    );
    assert!(budget.exhausted() > 0, "the budget ran out and said so");
    report(
        "retry budget",
        serde_json::json!({
            "calls": calls, "attempts": attempts, "extra_attempts": extra,
            "extra_percent": (extra as f64 * 1000.0 / calls as f64).round() / 10.0,
            "without_budget_would_be": calls * 4, "budget_allowed_at_most": allowed,
            "refused_by_budget": budget.exhausted(), "seconds": (secs * 10.0).round() / 10.0,
        }),
    );
    provider.shutdown().await;
    consumer.close().await;
}

fn cache_file_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("rpc-{name}-{}-{}.json", std::process::id(), fastrand::u32(..)))
}

fn with_cache_file(endpoint: &str, root: &str, file: &std::path::Path) -> RpcConfig {
    RpcConfig::from_yaml(&format!(
        "rpc:\n  server: {{ host: 127.0.0.1, port: 0, deregister_quiet_ms: 10 }}\n  registry:\n    type: etcd\n    endpoints: [\"{endpoint}\"]\n    root: \"{root}\"\n    timeout_ms: 1000\n    cache_file: \"{}\"\n",
        file.display()
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_with_a_cache_file_starts_and_calls_while_etcd_is_down() {
    use waypost_core::registry::CacheFile;
    use waypost_tests::servers::EtcdServer;

    let Some(mut etcd) = EtcdServer::start().await else {
        return;
    };
    let root = unique_root("outage-start");
    let file = cache_file_path("cache");
    let config = with_cache_file(&etcd.endpoint(), &root, &file);
    let serve = || async {
        let builder =
            ServerBuilder::from_config(&config.server).add_service(TestServiceServer::new(TestServiceImpl::default()));
        waypost::serve(&config, builder).await.unwrap()
    };
    let providers = vec![serve().await, serve().await];

    // A consumer that ran while etcd was up left its last-known instances in the file.
    let first = waypost::consumer(&config).await.unwrap();
    let client = TestServiceClient::new(first.channel()).unwrap();
    client.echo(1).await.unwrap();
    let cache = CacheFile::new(&file, &root);
    wait_until(Duration::from_secs(5), "the cache file lists both providers", || {
        let n = cache.load().map(|c| c.instance_count()).unwrap_or(0);
        async move { n == 2 }
    })
    .await;
    first.close().await;

    etcd.stop().await;
    let started = Instant::now();
    let consumer = waypost::consumer(&config).await.expect("starts from the cache file");
    let client = TestServiceClient::new(consumer.channel()).unwrap();
    for i in 0..20 {
        assert_eq!(
            client.echo(i).await.unwrap(),
            i,
            "calls reach the providers that are up"
        );
    }
    let first_calls_after = started.elapsed();
    assert_eq!(consumer.pool().live_connections(), 2, "both cached providers answered");

    // The registry comes back: live data replaces the cached list (a new provider shows up).
    etcd.restart().await;
    let third = serve().await;
    wait_until(Duration::from_secs(15), "the consumer sees live data again", || {
        let n = consumer.cache().cached("TestService:1.0").map_or(0, |l| l.len());
        async move { n == 3 }
    })
    .await;
    let live_again = started.elapsed();
    for i in 0..10 {
        assert_eq!(client.echo(i).await.unwrap(), i);
    }
    report(
        "consumer start during a registry outage",
        serde_json::json!({
            "registry": "etcd, stopped", "cache_file_instances": 2,
            "calls_after_start": 20, "failed": 0,
            "start_and_20_calls_ms": ms(first_calls_after),
            "live_data_again_after_restart_ms": ms(live_again),
        }),
    );
    for p in providers.into_iter().chain([third]) {
        p.shutdown().await;
    }
    consumer.close().await;
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn a_corrupt_cache_file_is_ignored_naming_it_and_the_registry_error_stands() {
    let logs = waypost_tests::logs::CapturedLogs::start();
    let file = cache_file_path("corrupt");
    std::fs::write(&file, b"{ this is not json").unwrap();
    let dead = format!("127.0.0.1:{}", waypost_tests::ports::free_port());
    let config = with_cache_file(&dead, &unique_root("corrupt"), &file);
    let error = match waypost::consumer(&config).await {
        Ok(_) => panic!("a consumer started without a registry and without a usable cache file"),
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains("etcd registry at") && error.contains("unavailable"),
        "{error}"
    );
    assert!(error.contains(&dead), "the error names the registry endpoint: {error}");
    let logged = logs.since(0);
    assert!(
        logged.contains("ignoring the cache file") && logged.contains(&file.display().to_string()),
        "{logged}"
    );
    let _ = std::fs::remove_file(&file);
}
