//! Reliability scenarios against real servers, each reporting its figures as a
//! `RELIABILITY {json}` line (`scripts/reliability` turns them into RELIABILITY.md).
//!
//! Every scenario runs steady load from a consumer built from configuration, breaks something
//! real (a registry process, a cluster member, a session, a provider process), and asserts on
//! calls made, calls failed and time to recover.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use waypost::Provider;
use waypost_core::client::Consumer;
use waypost_tests::load::{ms, report, Load};
use waypost_tests::ports::free_port;
use waypost_tests::process::{signal, ProcessOptions, ProviderProcess};
use waypost_tests::proxy::FaultProxy;
use waypost_tests::scenario::{await_registered, config, consumer, ephemeral_owner, port, provider};
use waypost_tests::servers::{shared_etcd, unique_root, EtcdCluster, EtcdServer, ZookeeperServer};
use waypost_tests::{wait_until, TestServiceClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outage_longer_than_the_ttl() {
    let Some(mut etcd) = EtcdServer::start().await else {
        return;
    };
    let cfg = config("etcd", &[etcd.endpoint()], &unique_root("outage"), 2, "");
    let (p1, p2) = (provider(&cfg, "p1").await, provider(&cfg, "p2").await);
    let (consumer, client) = consumer(&cfg).await;
    let load = Load::start(&client, 8, Duration::from_millis(2));
    tokio::time::sleep(Duration::from_millis(500)).await;

    etcd.stop().await;
    let outage = Duration::from_secs(5);
    tokio::time::sleep(outage).await;
    let during = load.snapshot();
    assert_eq!(
        during.failed(),
        0,
        "calls failed during the outage: {:?}",
        &during.failures[..1]
    );
    etcd.restart().await;
    let reregistered = await_registered(
        &cfg,
        &[port(&p1), port(&p2)],
        Duration::from_secs(15),
        "both providers are registered again",
    )
    .await;
    let started = Instant::now();
    let p3 = provider(&cfg, "p3").await;
    wait_until(
        Duration::from_secs(15),
        "the consumer discovers a provider started after the outage",
        || {
            let n = consumer.cache().cached("TestService:1.0").map_or(0, |l| l.len());
            async move { n == 3 }
        },
    )
    .await;
    let discovered = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = load.stop().await;
    stats.assert_none_failed();
    assert!(
        stats.by_instance.get("p3").copied().unwrap_or(0) > 0,
        "the new provider got calls"
    );
    report(
        "etcd outage (stopped for 5 s, lease TTL 2 s, restarted with its data)",
        serde_json::json!({
            "load": "8 workers", "calls": stats.calls(), "failed": stats.failed(),
            "calls_during_outage": during.calls(), "failed_during_outage": during.failed(),
            "providers_registered_again_ms": ms(reregistered),
            "new_provider_discovered_ms": ms(discovered),
        }),
    );
    for p in [p1, p2, p3] {
        p.shutdown().await;
    }
    consumer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_replaced_by_an_empty_one() {
    let Some(mut etcd) = EtcdServer::start().await else {
        return;
    };
    let cfg = config("etcd", &[etcd.endpoint()], &unique_root("wipe"), 5, "");
    let (p1, p2) = (provider(&cfg, "p1").await, provider(&cfg, "p2").await);
    let (consumer, client) = consumer(&cfg).await;
    let load = Load::start(&client, 8, Duration::from_millis(2));
    tokio::time::sleep(Duration::from_millis(300)).await;

    etcd.wipe_and_restart().await;
    let reregistered = await_registered(
        &cfg,
        &[port(&p1), port(&p2)],
        Duration::from_secs(5),
        "both providers re-register in the empty etcd",
    )
    .await;
    assert!(
        reregistered <= Duration::from_secs(4),
        "took {reregistered:?}; the reconcile period is 1 s, the pause before a new lease at most 2 s"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = load.stop().await;
    assert_eq!(stats.failed(), 0);
    report(
        "etcd data loss (replaced by an empty etcd on the same address)",
        serde_json::json!({
            "load": "8 workers", "calls": stats.calls(), "failed": stats.failed(),
            "reconcile_period_ms": 1000, "lease_replacement_pause_ms": "random, up to 2000",
            "providers_registered_again_ms": ms(reregistered),
        }),
    );
    for p in [p1, p2] {
        p.shutdown().await;
    }
    consumer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_cluster_loses_its_leader_then_a_follower() {
    let Some(mut cluster) = EtcdCluster::start(3).await else {
        return;
    };
    let mut cfg = config("etcd", &cluster.endpoints(), &unique_root("cluster"), 3, "");
    // A leader election on a loaded two-core machine can outlast the usual 2 s: requests made
    // during it wait for the new leader (and retry) within this budget.
    cfg.registry.timeout_ms = 6000;
    let (p1, p2) = (provider(&cfg, "p1").await, provider(&cfg, "p2").await);
    let (consumer, client) = consumer(&cfg).await;
    let load = Load::start(&client, 8, Duration::from_millis(2));
    let mut figures = serde_json::Map::new();
    let mut providers = vec![p1, p2];

    for (round, role) in ["leader", "follower"].into_iter().enumerate() {
        let leader = cluster.leader().await.expect("a leader");
        let victim = if role == "leader" { leader } else { (leader + 1) % 3 };
        cluster.kill(victim).await;
        let killed = Instant::now();
        // Registration and watches during the failover: a provider added now is seen.
        let added = provider(&cfg, &format!("late{round}")).await;
        let want = providers.len() + 1;
        wait_until(
            Duration::from_secs(15),
            "the consumer sees the provider added during the failover",
            || {
                let n = consumer.cache().cached("TestService:1.0").map_or(0, |l| l.len());
                async move { n == want }
            },
        )
        .await;
        figures.insert(
            format!("{role}_killed_added_provider_seen_ms"),
            ms(killed.elapsed()).into(),
        );
        providers.push(added);
        // Keep-alive carries on: every key outlives twice the TTL.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let ports: Vec<u16> = providers.iter().map(port).collect();
        await_registered(
            &cfg,
            &ports,
            Duration::from_secs(5),
            "every provider is still registered after 2 TTLs",
        )
        .await;
        cluster.restart(victim).await;
    }
    let stats = load.stop().await;
    stats.assert_none_failed();
    figures.insert("load".into(), "8 workers".into());
    figures.insert("calls".into(), stats.calls().into());
    figures.insert("failed".into(), stats.failed().into());
    report(
        "etcd cluster member loss (3 members; leader killed, then a follower)",
        figures.into(),
    );
    for p in providers {
        p.shutdown().await;
    }
    consumer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_restart_and_session_expiry() {
    let Some(mut zookeeper) = ZookeeperServer::start().await else {
        return;
    };
    let root = unique_root("zk");
    let cfg = config("zookeeper", &[zookeeper.endpoint()], &root, 2, "");
    let (p1, p2) = (provider(&cfg, "p1").await, provider(&cfg, "p2").await);
    // A third provider reaches ZooKeeper through a proxy the test can cut.
    let proxy = FaultProxy::start(&zookeeper.endpoint()).await;
    let proxied = config("zookeeper", &[proxy.endpoint()], &root, 2, "");
    let p3 = provider(&proxied, "p3").await;
    let (consumer, client) = consumer(&cfg).await;
    let load = Load::start(&client, 8, Duration::from_millis(2));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let zk_endpoint = zookeeper.endpoint();
    let owner_of = |p: &Provider| ephemeral_owner(zk_endpoint.clone(), &root, port(p));
    let sessions_before = (owner_of(&p1).await, owner_of(&p2).await);

    // Restart: down for longer than the session timeout.
    zookeeper.stop().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = load.snapshot();
    assert_eq!(during.failed(), 0, "calls failed while ZooKeeper was down");
    zookeeper.restart().await;
    let back = Instant::now();
    wait_until(
        Duration::from_secs(20),
        "both providers hold their nodes in new sessions",
        || {
            let (a, b) = (owner_of(&p1), owner_of(&p2));
            async move {
                let (a, b) = (a.await, b.await);
                a.is_some() && b.is_some() && a != sessions_before.0 && b != sessions_before.1
            }
        },
    )
    .await;
    let restart_recovered = back.elapsed();

    // Forced session expiry: p3 is cut off for twice its session timeout.
    let session_before = owner_of(&p3).await;
    proxy.set_blackhole(true);
    tokio::time::sleep(Duration::from_millis(4500)).await;
    proxy.set_blackhole(false);
    let healed = Instant::now();
    wait_until(
        Duration::from_secs(20),
        "the expired provider's node is back in a new session",
        || {
            let owner = owner_of(&p3);
            async move {
                let owner = owner.await;
                owner.is_some() && owner != session_before
            }
        },
    )
    .await;
    let expiry_recovered = healed.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = load.stop().await;
    // Calls to p3 while it was cut off from ZooKeeper still succeed: only its registration lapsed.
    stats.assert_none_failed();
    report(
        "ZooKeeper restart (down 4 s, session 2 s) and forced session expiry",
        serde_json::json!({
            "load": "8 workers", "calls": stats.calls(), "failed": stats.failed(),
            "failed_while_down": during.failed(),
            "restart_nodes_back_in_new_sessions_ms": ms(restart_recovered),
            "expired_session_node_back_ms": ms(expiry_recovered),
        }),
    );
    for p in [p1, p2, p3] {
        p.shutdown().await;
    }
    consumer.close().await;
}

/// Three `test-provider` processes on the shared etcd under a fresh root (`prefix`), their keys
/// on leases of `ttl_secs`, and a consumer (with `consumer_yaml` in its consumer section) that
/// has discovered all three; `None` without the shared etcd.
async fn three_provider_processes(
    prefix: &str,
    ttl_secs: u64,
    consumer_yaml: &str,
) -> Option<(Vec<ProviderProcess>, Consumer, TestServiceClient)> {
    let endpoints = shared_etcd()?;
    let cfg = config("etcd", &endpoints, &unique_root(prefix), ttl_secs, consumer_yaml);
    let provider_yaml = format!(
        "rpc:\n  server: {{ host: 127.0.0.1, port: 0 }}\n  registry:\n    type: etcd\n    endpoints: [\"{}\"]\n    root: \"{}\"\n    ttl_secs: {ttl_secs}\n",
        endpoints[0], cfg.registry.root
    );
    let binary = Path::new(env!("CARGO_BIN_EXE_test-provider"));
    let mut providers = Vec::new();
    for _ in 0..3 {
        providers.push(ProviderProcess::start(binary, &provider_yaml).await);
    }
    let (consumer, client) = consumer(&cfg).await;
    wait_until(Duration::from_secs(5), "all three providers are discovered", || {
        let n = consumer.cache().cached("TestService:1.0").map_or(0, |l| l.len());
        async move { n == 3 }
    })
    .await;
    Some((providers, consumer, client))
}

/// Three provider processes, one SIGKILLed under load by 16 workers; returns the load figures
/// and when the kill happened.
async fn kill_one_of_three(tolerant: &str) -> Option<(waypost_tests::load::LoadStats, Instant, u16)> {
    let consumer_yaml = format!("    tolerant: {tolerant}\n    retry: {{ strategy: none, max_attempts: 3 }}\n");
    let (mut providers, consumer, client) = three_provider_processes("crash", 2, &consumer_yaml).await?;
    let load = Load::start(&client, 16, Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let victim = providers[1].port;
    providers[1].kill().await;
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let stats = load.stop().await;
    consumer.close().await;
    Some((stats, killed, victim))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_killed_under_load_with_fail_over_loses_no_call() {
    let Some((stats, _, victim)) = kill_one_of_three("fail_over").await else {
        return;
    };
    stats.assert_none_failed();
    assert!(
        stats.by_instance.contains_key(&victim.to_string()),
        "the victim served calls before it died"
    );
    assert!(stats.ok > 500);
    report(
        "provider SIGKILLed under load, fail_over",
        serde_json::json!({ "load": "16 workers, no pause", "calls": stats.calls(), "failed": stats.failed(), "by_instance": stats.by_instance }),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_killed_under_load_with_fail_fast_fails_only_calls_in_flight() {
    let Some((stats, killed, _)) = kill_one_of_three("fail_fast").await else {
        return;
    };
    let last_failure = stats.failures.iter().map(|(at, _)| *at).max();
    let failures_window = last_failure.map_or(Duration::ZERO, |at| at.saturating_duration_since(killed));
    // The 16 calls in flight on the victim fail, plus at most one probe per ejection period
    // until its lease (TTL 2 s) expires and it leaves the registry; none after that.
    assert!(stats.failed() <= 16 + 4, "{} failures", stats.failed());
    assert_eq!(
        stats.failed_since(killed + Duration::from_secs(3)),
        0,
        "failures after the victim left the registry"
    );
    report(
        "provider SIGKILLed under load, fail_fast",
        serde_json::json!({
            "load": "16 workers, no pause", "calls": stats.calls(), "failed": stats.failed(),
            "last_failure_after_kill_ms": ms(failures_window),
        }),
    );
}

/// The frozen provider of issue 29: three provider processes on etcd (TTL 5 s), one consumer
/// calling one call at a time with a 1 s deadline and the default policy; one provider frozen
/// with SIGSTOP. Only the call already sent to it fails: its timeout makes the client ping the
/// provider, which does not answer, so calls avoid it (no further stall) until it answers
/// again after SIGCONT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_provider_costs_one_call() {
    let Some((providers, consumer, client)) =
        three_provider_processes("frozen", 5, "    probe_timeout_ms: 500\n").await
    else {
        return;
    };
    let victim = providers[1].port.to_string();
    let pid = providers[1].pid();
    let client = client.with_timeout(Duration::from_secs(1));

    // One call at a time, for 8 s after the freeze (the key leaves after about 5 s).
    let mut failed = Vec::new();
    let mut stalls = 0;
    let mut calls = 0;
    signal(pid, "STOP").await;
    let frozen = Instant::now();
    while frozen.elapsed() < Duration::from_secs(8) {
        let started = Instant::now();
        let outcome = client.owner(calls).await;
        if started.elapsed() >= Duration::from_millis(500) {
            stalls += 1;
        }
        if let Err(e) = outcome {
            failed.push((frozen.elapsed(), e.to_string()));
        }
        calls += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Thawed: it answers the pings, registers again, and takes calls again.
    signal(pid, "CONT").await;
    let thawed = Instant::now();
    let mut back = None;
    while thawed.elapsed() < Duration::from_secs(15) {
        if client.owner(0).await.is_ok_and(|owner| owner == victim) {
            back = Some(thawed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    consumer.close().await;
    println!("frozen provider: {calls} calls, failed {failed:?}, {stalls} stalls, back after {back:?}");
    assert!(failed.len() <= 1, "{failed:?}");
    assert!(stalls <= 1, "{stalls} calls took 500 ms or more");
    assert!(calls > 500, "{calls} calls");
    let back = back.expect("the thawed provider takes calls again within 15 s");
    report(
        "provider frozen (SIGSTOP) for 8 s, one call at a time, 1 s deadline",
        serde_json::json!({
            "calls": calls,
            "failed": failed.len(),
            "stalls_over_500ms": stalls,
            "back_after_sigcont_ms": ms(back),
        }),
    );
}

/// The calls of `owner` a provider process served, from its metrics endpoint on `port`.
async fn owner_calls_served(port: u16) -> u64 {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let text = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("curl")
            .args(["-s", &url])
            .output()
            .expect("curl (scripts/setup installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .expect("curl");
    text.lines()
        .filter(|l| l.starts_with("rpc_server_calls_total{") && l.contains("method=\"owner\""))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum::<f64>() as u64
}

/// Three provider processes on etcd, each with a fault (`RPC_TEST_FAULT`, see test-provider)
/// and a metrics endpoint: the processes, their metrics ports, and the etcd endpoints and
/// root they registered under.
async fn three_faulty_providers(prefix: &str, faults: [&str; 3]) -> Option<FaultyThree> {
    let endpoints = shared_etcd()?;
    let root = unique_root(prefix);
    let mut providers = Vec::new();
    let mut metrics = Vec::new();
    for fault in faults {
        let port = free_port();
        let yaml = format!(
            "rpc:\n  server: {{ host: 127.0.0.1, port: 0 }}\n  registry:\n    type: etcd\n    endpoints: [\"{}\"]\n    root: \"{root}\"\n  metrics:\n    listen: 127.0.0.1:{port}\n",
            endpoints[0]
        );
        let options = ProcessOptions {
            env: vec![("RPC_TEST_FAULT".to_owned(), fault.to_owned())],
            ..ProcessOptions::default()
        };
        providers
            .push(ProviderProcess::start_with(Path::new(env!("CARGO_BIN_EXE_test-provider")), &yaml, options).await);
        metrics.push(port);
    }
    Some(FaultyThree {
        providers,
        metrics,
        endpoints,
        root,
    })
}

/// What [`three_faulty_providers`] started.
struct FaultyThree {
    providers: Vec<ProviderProcess>,
    metrics: Vec<u16>,
    endpoints: Vec<String>,
    root: String,
}

impl FaultyThree {
    /// A consumer of the three with `consumer_yaml` under `rpc.consumer`, once it sees them.
    async fn consumer(&self, consumer_yaml: &str) -> (Consumer, TestServiceClient) {
        let cfg = config("etcd", &self.endpoints, &self.root, 10, consumer_yaml);
        let consumer = waypost::consumer(&cfg).await.expect("a consumer");
        let client = TestServiceClient::new(consumer.channel()).expect("a client");
        // The first call loads and watches the service; it may meet the failing provider.
        let _ = client.owner(0).await;
        wait_until(Duration::from_secs(5), "all three providers are discovered", || {
            let n = consumer.cache().cached("TestService:1.0").map_or(0, |l| l.len());
            async move { n == 3 }
        })
        .await;
        (consumer, client)
    }

    /// The calls of `owner` the three served so far.
    async fn served(&self) -> u64 {
        let mut total = 0;
        for port in &self.metrics {
            total += owner_calls_served(*port).await;
        }
        total
    }
}

/// `calls` calls of `owner` one after another: each one's latency and who answered it.
async fn sequential_calls(client: &TestServiceClient, calls: u64) -> Vec<(Duration, String)> {
    let mut answered = Vec::with_capacity(calls as usize);
    for n in 0..calls {
        let started = Instant::now();
        let owner = client.owner(n).await.expect("owner");
        answered.push((started.elapsed(), owner));
    }
    answered
}

/// The latencies of `calls`, sorted.
fn latencies<'a>(calls: impl Iterator<Item = &'a (Duration, String)>) -> Vec<Duration> {
    let mut took: Vec<Duration> = calls.map(|(d, _)| *d).collect();
    took.sort();
    took
}

fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    sorted[(sorted.len() * percent / 100).min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedging_keeps_the_p99_of_a_service_with_one_slow_provider() {
    // Every call takes 10 ms; the first provider answers every 10th call it gets after 200 ms.
    let Some(three) = three_faulty_providers("hedge", ["latency:10:every:10:200", "latency:10", "latency:10"]).await
    else {
        return;
    };
    const CALLS: u64 = 600;

    // Without hedging: the slow calls set the p99. The calls the healthy providers answered
    // give the latency hedging aims for.
    let (plain_consumer, plain) = three.consumer("").await;
    let slow_label = three.providers[0].port.to_string();
    let plain_calls = sequential_calls(&plain, CALLS).await;
    plain_consumer.close().await;
    let plain_p99 = percentile(&latencies(plain_calls.iter()), 99);
    let healthy_latencies = latencies(plain_calls.iter().filter(|(_, owner)| *owner != slow_label));
    let healthy_p99 = percentile(&healthy_latencies, 99);

    // Hedging with the adaptive delay (the recent p95), after 100 calls that teach it.
    let (hedged_consumer, hedged) = three
        .consumer("    hedging: { enabled: true, delay_ms: 0, max_extra: 1 }\n")
        .await;
    let _ = sequential_calls(&hedged, 100).await;
    let before = three.served().await;
    let hedged_p99 = percentile(&latencies(sequential_calls(&hedged, CALLS).await.iter()), 99);
    // Losers are cancelled on their provider, which still counts them: wait until the count
    // settles (every hedged call's loser has arrived).
    let mut after = three.served().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = three.served().await;
        if now == after || Instant::now() > deadline {
            break;
        }
        after = now;
    }
    hedged_consumer.close().await;
    let extra = (after - before).saturating_sub(CALLS);
    let ratio = hedged_p99.as_secs_f64() / healthy_p99.as_secs_f64();
    println!("hedging: healthy p99 {healthy_p99:?}, without {plain_p99:?}, with {hedged_p99:?} ({ratio:.2}x), {extra} extra calls");
    assert!(
        plain_p99 >= Duration::from_millis(200),
        "without hedging: {plain_p99:?}"
    );
    assert!(hedged_p99 < Duration::from_millis(100), "with hedging: {hedged_p99:?}");
    assert!(extra * 100 <= CALLS * 15, "extra calls {extra} of {CALLS}");
    report(
        "hedging: one provider of three slow on every 10th call",
        serde_json::json!({
            "calls": CALLS,
            "service_time_ms": 10,
            "healthy_p99_ms": ms_tenths(healthy_p99),
            "p99_without_hedging_ms": ms_tenths(plain_p99),
            "hedge_delay": "adaptive (the recent p95)",
            "p99_with_hedging_ms": ms_tenths(hedged_p99),
            "p99_over_healthy_p99": format!("{ratio:.2}x"),
            "extra_calls": extra,
            "extra_calls_percent": format!("{:.1}%", extra as f64 * 100.0 / CALLS as f64),
        }),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_keeps_calls_from_a_failing_provider_process() {
    let Some(three) = three_faulty_providers("breaker", ["fail", "", ""]).await else {
        return;
    };
    const CALLS: u64 = 600;
    let run = |client: TestServiceClient| async move {
        let mut failed = 0;
        for n in 0..CALLS {
            failed += u64::from(client.owner(n).await.is_err());
        }
        failed
    };
    let mut figures = serde_json::Map::new();
    for (name, yaml) in [
        (
            "no breaker, no ejection",
            "    outlier: { consecutive_failures: 1000000 }\n",
        ),
        (
            "breaker, no ejection",
            "    outlier: { consecutive_failures: 1000000 }\n    breaker: { enabled: true }\n",
        ),
        ("default (ejection)", ""),
    ] {
        let (consumer, client) = three.consumer(yaml).await;
        // Warm up: the breaker's window fills with the failing provider's requests (as it
        // does within seconds at a few hundred calls a second).
        for _ in 0..3 {
            let _ = run(client.clone()).await;
        }
        let before = owner_calls_served(three.metrics[0]).await;
        let failed = run(client).await;
        let reached = owner_calls_served(three.metrics[0]).await - before;
        consumer.close().await;
        println!(
            "{name}: {reached} of {} calls reached the failing provider, {failed} failed",
            CALLS / 3
        );
        figures.insert(
            name.to_owned(),
            serde_json::json!({"reached_failing": reached, "would_get": CALLS / 3, "share": format!("{:.1}%", reached as f64 * 300.0 / CALLS as f64), "failed": failed}),
        );
        if name != "no breaker, no ejection" {
            assert!(reached * 20 <= CALLS / 3, "{name}: {reached}");
        }
    }
    report(
        "breaker: one provider of three failing every call",
        serde_json::Value::Object(figures),
    );
}

/// Milliseconds, to a tenth.
fn ms_tenths(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shedding_provider_process_keeps_its_goodput_at_three_times_its_capacity() {
    use waypost_testkit::load::{closed_loop, open_loop};
    let Some(endpoints) = shared_etcd() else { return };
    let mut figures = serde_json::Map::new();
    for shedding in [false, true] {
        // Each call holds one of four pooled connections for 5 ms.
        let yaml = format!(
            "rpc:\n  server: {{ host: 127.0.0.1, port: 0, shedding: {{ enabled: {shedding} }} }}\n  registry:\n    type: etcd\n    endpoints: [\"{}\"]\n    root: \"{}\"\n",
            endpoints[0],
            unique_root("overload")
        );
        let options = ProcessOptions {
            env: vec![("RPC_TEST_FAULT".to_owned(), "pool:4:5".to_owned())],
            ..ProcessOptions::default()
        };
        let provider =
            ProviderProcess::start_with(Path::new(env!("CARGO_BIN_EXE_test-provider")), &yaml, options).await;
        let config = waypost_core::config::ConsumerConfig {
            timeout_ms: 1000,
            ..waypost_core::config::ConsumerConfig::default()
        };
        let channel = waypost_core::Channel::direct(format!("127.0.0.1:{}", provider.port))
            .expect("channel")
            .with_policies(Arc::new(waypost_core::fault::PolicySet::new(config)));
        let client = TestServiceClient::new(channel).expect("client");
        let call = |n: u64| {
            let client = client.clone();
            async move { client.owner(n).await.is_ok() }
        };
        let capacity = closed_loop(32, Duration::from_secs(2), &call).await;
        let unloaded = open_loop(capacity / 2.0, Duration::from_secs(2), &call).await;
        let loaded = open_loop(capacity * 3.0, Duration::from_secs(10), &call).await;
        let unloaded_p99 = unloaded.percentile(99);
        let p99 = loaded.percentile(99);
        let name = if shedding { "with shedding" } else { "without shedding" };
        println!(
            "overload {name}: capacity {capacity:.0}/s, goodput {:.0}/s, p99 {p99:?} (unloaded {unloaded_p99:?})",
            loaded.goodput
        );
        figures.insert(
            name.to_owned(),
            serde_json::json!({
                "capacity_per_s": capacity.round(),
                "offered_per_s": (capacity * 3.0).round(),
                "goodput_per_s": loaded.goodput.round(),
                "goodput_of_capacity": format!("{:.0}%", loaded.goodput * 100.0 / capacity),
                "unloaded_p99_ms": ms_tenths(unloaded_p99),
                "p99_ms": ms_tenths(p99),
                "p99_over_unloaded": format!("{:.1}x", p99.as_secs_f64() / unloaded_p99.as_secs_f64()),
            }),
        );
        if shedding {
            assert!(
                loaded.goodput >= capacity * 0.8,
                "goodput {:.0} of {capacity:.0}",
                loaded.goodput
            );
            assert!(p99 <= unloaded_p99 * 4, "p99 {p99:?}, unloaded {unloaded_p99:?}");
        } else {
            assert!(p99 >= unloaded_p99 * 10, "without shedding calls queue: {p99:?}");
        }
    }
    report(
        "overload: a provider offered three times its capacity for 10 s",
        serde_json::Value::Object(figures),
    );
}
