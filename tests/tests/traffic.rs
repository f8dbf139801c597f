//! Traffic control through the registry, against real etcd and ZooKeeper: rules that disable
//! instances and shift weight (applied live, the last valid one kept), zones, and warm-up.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use waypost::Provider;
use waypost_core::config::RpcConfig;
use waypost_core::registry::Registry;
use waypost_core::server::ServerBuilder;
use waypost_tests::load::{ms, report};
use waypost_tests::servers::{shared_etcd, shared_zookeeper, unique_root};
use waypost_tests::{TestServiceClient, TestServiceImpl, TestServiceServer};

const KEY: &str = "TestService:1.0";

fn config(kind: &str, endpoints: &[String], root: &str, server: &str, consumer: &str) -> RpcConfig {
    let endpoints = waypost_tests::servers::yaml_list(endpoints);
    RpcConfig::from_yaml(&format!(
        "rpc:\n  server: {{ host: 127.0.0.1, port: 0, deregister_quiet_ms: 10{server} }}\n  registry:\n    type: {kind}\n    endpoints: [{endpoints}]\n    root: \"{root}\"\n    ttl_secs: 5\n  consumer:\n    timeout_ms: 2000\n{consumer}"
    ))
    .unwrap()
}

fn backends() -> Vec<(&'static str, Vec<String>)> {
    let mut all = Vec::new();
    if let Some(etcd) = shared_etcd() {
        all.push(("etcd", etcd));
    }
    if let Some(zk) = shared_zookeeper() {
        all.push(("zookeeper", zk));
    }
    all
}

async fn provider(config: &RpcConfig, label: &str) -> Provider {
    let builder =
        ServerBuilder::from_config(&config.server).add_service(TestServiceServer::new(TestServiceImpl::labeled(label)));
    waypost::serve(config, builder).await.expect("start a provider")
}

/// When a call ended, and who answered it (or its error).
type Answer = (Instant, Result<String, String>);

/// Calls `owner` in a loop, recording who answered when, until dropped.
struct Recorder {
    calls: Arc<Mutex<Vec<Answer>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    fn start(client: &TestServiceClient) -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (client, sink) = (client.clone(), calls.clone());
        let task = tokio::spawn(async move {
            let mut key = 0;
            loop {
                let outcome = client.owner(key).await.map_err(|e| e.to_string());
                sink.lock().unwrap().push((Instant::now(), outcome));
                key += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        Self { calls, task }
    }

    /// The answers that came after `since`.
    fn since(&self, since: Instant) -> Vec<Answer> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at >= since)
            .cloned()
            .collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until `condition` holds for the answers since `since`; returns how long it took.
async fn until(
    recorder: &Recorder,
    since: Instant,
    what: &str,
    condition: impl Fn(&[(Instant, Result<String, String>)]) -> bool,
) -> Duration {
    let deadline = since + Duration::from_secs(5);
    loop {
        if condition(&recorder.since(since)) {
            return since.elapsed();
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabling_rule_takes_an_instance_out_within_a_second_and_its_deletion_brings_it_back() {
    for (kind, endpoints) in backends() {
        let config = config(kind, &endpoints, &unique_root("rules"), "", "");
        let (a, b) = (provider(&config, "a").await, provider(&config, "b").await);
        let a_addr = a.instances()[0].address();
        let consumer = waypost::consumer(&config).await.unwrap();
        let client = TestServiceClient::new(consumer.channel()).unwrap();
        let recorder = Recorder::start(&client);
        let operator: Arc<dyn Registry> = waypost_registry::connect(&config.registry).await.unwrap();
        until(&recorder, Instant::now(), "both instances answer", |calls| {
            calls.iter().any(|(_, r)| r.as_deref() == Ok("a")) && calls.iter().any(|(_, r)| r.as_deref() == Ok("b"))
        })
        .await;

        let disabled_at = Instant::now();
        operator
            .put_rules(KEY, &format!(r#"{{"disabled": ["{a_addr}"]}}"#))
            .await
            .unwrap();
        // From some moment on, no call reaches a: find when the last one did.
        until(&recorder, disabled_at, "20 calls in a row avoid a", |calls| {
            calls.len() >= 20 && calls[calls.len() - 20..].iter().all(|(_, r)| r.as_deref() == Ok("b"))
        })
        .await;
        let last_to_a = recorder
            .since(disabled_at)
            .iter()
            .filter(|(_, r)| r.as_deref() == Ok("a"))
            .map(|(at, _)| *at)
            .max()
            .unwrap_or(disabled_at);
        let stopped_after = last_to_a - disabled_at;
        assert!(
            stopped_after < Duration::from_secs(1),
            "{kind}: a still got calls {stopped_after:?} after the rule"
        );

        let deleted_at = Instant::now();
        operator.delete_rules(KEY).await.unwrap();
        let back_after = until(&recorder, deleted_at, "a gets calls again", |calls| {
            calls.iter().any(|(_, r)| r.as_deref() == Ok("a"))
        })
        .await;
        assert!(
            back_after < Duration::from_secs(1),
            "{kind}: a came back after {back_after:?}"
        );
        let failed = recorder.since(disabled_at).iter().filter(|(_, r)| r.is_err()).count();
        assert_eq!(failed, 0);
        report(
            &format!("traffic rules on {kind}: disable and delete"),
            serde_json::json!({"last_call_to_disabled_after_ms": ms(stopped_after),
                "calls_again_after_deletion_ms": ms(back_after), "failed": failed}),
        );
        drop(recorder);
        a.shutdown().await;
        b.shutdown().await;
        consumer.close().await;
        operator.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_from_a_rule_split_calls_five_to_one() {
    const CALLS: u32 = 20_000;
    for (kind, endpoints) in backends() {
        let config = config(kind, &endpoints, &unique_root("weights"), "", "");
        let (a, b) = (provider(&config, "a").await, provider(&config, "b").await);
        let operator: Arc<dyn Registry> = waypost_registry::connect(&config.registry).await.unwrap();
        // The rule also switches the service to weighted_random (the consumer's config says
        // round_robin).
        let rule = format!(
            r#"{{"weights": {{"{}": 5, "{}": 1}}, "load_balancer": "weighted_random"}}"#,
            a.instances()[0].address(),
            b.instances()[0].address()
        );
        operator.put_rules(KEY, &rule).await.unwrap();
        let consumer = waypost::consumer(&config).await.unwrap();
        let client = TestServiceClient::new(consumer.channel()).unwrap();
        // 20,000 draws: the 10% tolerance on the ratio is then about five standard deviations
        // of the weight-1 count (at 6,000 draws it was 2.4: about 1 run in 30 failed by chance).
        let (mut to_a, mut to_b) = (0u32, 0u32);
        for i in 0..CALLS {
            match client.owner(u64::from(i)).await.unwrap().as_str() {
                "a" => to_a += 1,
                _ => to_b += 1,
            }
        }
        let ratio = f64::from(to_a) / f64::from(to_b);
        assert!(
            (4.5..=5.5).contains(&ratio),
            "{kind}: {to_a}:{to_b} = {ratio:.2}, not 5:1 within 10%"
        );
        report(
            &format!("traffic rules on {kind}: weights 5:1"),
            serde_json::json!({"calls": CALLS, "to_weight_5": to_a, "to_weight_1": to_b, "ratio": (ratio * 100.0).round() / 100.0}),
        );
        a.shutdown().await;
        b.shutdown().await;
        consumer.close().await;
        operator.delete_rules(KEY).await.unwrap();
        operator.close().await.unwrap();
    }
}

#[tokio::test]
async fn an_invalid_rule_is_ignored_with_one_warning_and_the_last_valid_one_stays() {
    let logs = waypost_tests::logs::CapturedLogs::start();
    for (kind, endpoints) in backends() {
        let config = config(kind, &endpoints, &unique_root("invalid"), "", "");
        let (a, b) = (provider(&config, "a").await, provider(&config, "b").await);
        let a_addr = a.instances()[0].address();
        let operator: Arc<dyn Registry> = waypost_registry::connect(&config.registry).await.unwrap();
        operator
            .put_rules(KEY, &format!(r#"{{"disabled": ["{a_addr}"]}}"#))
            .await
            .unwrap();
        let consumer = waypost::consumer(&config).await.unwrap();
        let client = TestServiceClient::new(consumer.channel()).unwrap();
        for i in 0..20 {
            assert_eq!(client.owner(i).await.unwrap(), "b");
        }
        let before = logs.len();
        operator.put_rules(KEY, r#"{"disabled": "not a list"}"#).await.unwrap();
        // The consumer sees the new text within a watch round trip; its calls keep avoiding a.
        let deadline = Instant::now() + Duration::from_secs(5);
        while consumer.cache().rules(KEY).as_deref() != Some(r#"{"disabled": "not a list"}"#) {
            assert!(Instant::now() < deadline, "{kind}: the invalid text never arrived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for i in 0..200 {
            assert_eq!(
                client.owner(i).await.unwrap(),
                "b",
                "{kind}: the last valid rule stays in force"
            );
        }
        let logged = logs.since(before);
        let warnings = logged.matches("ignoring invalid routing rules").count();
        assert_eq!(warnings, 1, "{kind}: {logged}");
        assert!(
            logged.contains("config/TestService:1.0") && logged.contains("disabled"),
            "{kind}: {logged}"
        );
        a.shutdown().await;
        b.shutdown().await;
        consumer.close().await;
        operator.delete_rules(KEY).await.unwrap();
        operator.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_stay_in_the_zone_while_it_has_a_healthy_instance() {
    let Some(endpoints) = shared_etcd() else { return };
    let root = unique_root("zones");
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_test-provider"));
    let zone_yaml = |zone: &str| {
        format!(
            "rpc:\n  server: {{ host: 127.0.0.1, port: 0, zone: {zone} }}\n  registry: {{ type: etcd, endpoints: [\"{}\"], root: \"{root}\", ttl_secs: 10 }}\n",
            endpoints[0]
        )
    };
    let mut a1 = waypost_tests::process::ProviderProcess::start(binary, &zone_yaml("a")).await;
    let mut a2 = waypost_tests::process::ProviderProcess::start(binary, &zone_yaml("a")).await;
    let b = waypost_tests::process::ProviderProcess::start(binary, &zone_yaml("b")).await;
    let consumer_config = config("etcd", &endpoints, &root, "", "    zone: a\n    tolerant: fail_over\n");
    let consumer = waypost::consumer(&consumer_config).await.unwrap();
    let client = TestServiceClient::new(consumer.channel()).unwrap();
    // `owner` answers the provider's port.
    let b_port = b.port.to_string();
    for i in 0..300 {
        assert_ne!(
            client.owner(i).await.unwrap(),
            b_port,
            "a call left the zone while it had healthy instances"
        );
    }
    // Both instances of zone a die (SIGKILL: still registered until their leases expire).
    a1.kill().await;
    a2.kill().await;
    let killed = Instant::now();
    let mut first_to_b = None;
    for i in 0..300 {
        let owner = client.owner(i).await.expect("no call fails under fail_over");
        if owner == b_port && first_to_b.is_none() {
            first_to_b = Some(killed.elapsed());
        }
    }
    let first_to_b = first_to_b.expect("calls reach zone b");
    report(
        "traffic: zones",
        serde_json::json!({"providers": "a, a, b", "consumer_zone": "a", "calls_before_kill": 300,
            "calls_to_b_before_kill": 0, "calls_after_killing_both_a": 300, "failed": 0,
            "first_call_to_b_after_ms": ms(first_to_b)}),
    );
    consumer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_instance_warms_up_before_it_takes_its_share() {
    let Some(endpoints) = shared_etcd() else { return };
    let root = unique_root("warmup");
    let plain = config("etcd", &endpoints, &root, "", "");
    let warming = config("etcd", &endpoints, &root, ", warmup_secs: 3", "");
    let (old1, old2) = (provider(&plain, "old1").await, provider(&plain, "old2").await);
    let consumer = waypost::consumer(&plain).await.unwrap();
    let client = TestServiceClient::new(consumer.channel()).unwrap();
    client.owner(0).await.unwrap();
    let new = provider(&warming, "new").await;
    let registered = Instant::now();
    let recorder = Recorder::start(&client);
    let share_of_new = |from: Duration, to: Duration| {
        let calls: Vec<_> = recorder
            .since(registered + from)
            .into_iter()
            .filter(|(at, _)| *at < registered + to)
            .collect();
        let to_new = calls.iter().filter(|(_, r)| r.as_deref() == Ok("new")).count();
        (to_new as f64 / calls.len().max(1) as f64, calls.len())
    };
    tokio::time::sleep(Duration::from_millis(4200)).await;
    // Its first tenth of the warm-up (0.3 s of 3 s), and a second after it is warm.
    let (early, early_calls) = share_of_new(Duration::ZERO, Duration::from_millis(300));
    let (warm, warm_calls) = share_of_new(Duration::from_millis(3200), Duration::from_millis(4200));
    assert!(
        early < 0.10,
        "{early:.3} of {early_calls} calls in the first tenth of the warm-up"
    );
    assert!(
        (0.25..=0.42).contains(&warm),
        "{warm:.3} of {warm_calls} calls once warm (a fair share is 0.33)"
    );
    report(
        "traffic: warm-up",
        serde_json::json!({"instances": 3, "warmup_s": 3, "share_in_first_tenth": (early * 1000.0).round() / 1000.0,
            "calls_in_first_tenth": early_calls, "share_once_warm": (warm * 1000.0).round() / 1000.0,
            "calls_once_warm": warm_calls}),
    );
    drop(recorder);
    for p in [old1, old2, new] {
        p.shutdown().await;
    }
    consumer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_tag_sends_calls_to_its_group_and_falls_back_when_the_group_is_gone() {
    let root = unique_root("tags");
    let config = RpcConfig::from_yaml(&format!(
        "rpc:\n  server: {{ host: 127.0.0.1, port: 0, deregister_quiet_ms: 10 }}\n  registry: {{ type: memory, root: \"{root}\" }}\n"
    ))
    .unwrap();
    let stable = [provider(&config, "s1").await, provider(&config, "s2").await];
    let canary = provider(&config, "canary").await;
    let operator: Arc<dyn Registry> = waypost_registry::connect(&config.registry).await.unwrap();
    operator
        .put_rules(
            KEY,
            &format!(r#"{{"tags": {{"canary": ["{}"]}}}}"#, canary.instances()[0].address()),
        )
        .await
        .unwrap();
    let consumer = waypost::consumer(&config).await.unwrap();
    let client = TestServiceClient::new(consumer.channel()).unwrap();
    let tagged = client.with_metadata("route-tag", "canary");
    for i in 0..50 {
        assert_eq!(tagged.owner(i).await.unwrap(), "canary");
    }
    let mut untagged = std::collections::BTreeSet::new();
    for i in 0..60 {
        untagged.insert(client.owner(i).await.unwrap());
    }
    assert_eq!(untagged.len(), 3, "calls without the tag go anywhere: {untagged:?}");
    let unknown = client.with_metadata("route-tag", "no-such-group");
    assert!(unknown.owner(1).await.is_ok(), "an unknown tag routes like no tag");
    // The group's only instance leaves: tagged calls fall back to all.
    canary.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while consumer.cache().cached(KEY).map_or(0, |l| l.len()) != 2 {
        assert!(Instant::now() < deadline, "the canary never left the cache");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..20 {
        let owner = tagged.owner(i).await.unwrap();
        assert!(owner == "s1" || owner == "s2", "{owner}");
    }
    for p in stable {
        p.shutdown().await;
    }
    consumer.close().await;
}
