//! Client resilience over real loopback TCP: retry timing and bounds, every tolerance strategy,
//! outlier ejection and recovery, consistent hashing, and per-service overrides from YAML.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use waypost_core::client::{ClientOptions, ClusterInvoker, ConnectionPool, InstanceSource};
use waypost_core::config::RpcConfig;
use waypost_core::fault::{HealthOptions, InstanceHealth, PolicySet};
use waypost_core::protocol::Status;
use waypost_core::registry::ServiceInstance;
use waypost_core::server::{RunningServer, ServerBuilder};
use waypost_core::{Channel, ClientBuildError, ErrorKind, RpcError};
use waypost_tests::faulty::{Fault, FaultHandle, FaultyService};
use waypost_tests::ports::free_port;
use waypost_tests::{TestServiceClient, TestServiceImpl, TestServiceServer};

/// A provider whose behaviour the test controls.
struct Provider {
    server: RunningServer,
    fault: FaultHandle,
    addr: String,
}

async fn provider(label: &str) -> Provider {
    let (service, fault) = FaultyService::new(TestServiceServer::new(TestServiceImpl::labeled(label)));
    let server = ServerBuilder::new()
        .add_service(service)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr().unwrap().to_string();
    Provider { server, fault, addr }
}

/// A channel over fixed instances with the `rpc.consumer` section given in YAML.
fn channel(addrs: &[&str], consumer_yaml: &str) -> Channel {
    let config = RpcConfig::from_yaml(&format!("rpc:\n  consumer:\n{consumer_yaml}")).unwrap();
    let instances: Arc<[ServiceInstance]> = addrs
        .iter()
        .map(|a| {
            let (host, port) = a.rsplit_once(':').unwrap();
            ServiceInstance::new("TestService", "1.0", host, port.parse().unwrap())
        })
        .collect();
    let health = Arc::new(InstanceHealth::new(HealthOptions::from(&config.consumer)));
    let invoker = ClusterInvoker::new(
        InstanceSource::Fixed(instances),
        Arc::new(ConnectionPool::new(ClientOptions::default())),
        health,
    );
    Channel::new(Arc::new(invoker)).with_policies(Arc::new(PolicySet::new(config.consumer)))
}

fn dead_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

fn within(d: Duration, low_ms: u64, high_ms: u64) -> bool {
    d >= Duration::from_millis(low_ms) && d <= Duration::from_millis(high_ms)
}

#[tokio::test]
async fn fixed_interval_retries_are_spaced_and_bounded_by_max_attempts() {
    let p = provider("a").await;
    let client = TestServiceClient::new(channel(
        &[&p.addr],
        "    retry: { strategy: fixed_interval, max_attempts: 4, base_delay_ms: 100 }\n",
    ))
    .unwrap();
    p.fault.set(Fault::FailNext(Status::Overloaded, 2));
    assert_eq!(client.echo(5).await.unwrap(), 5);
    assert_eq!(p.fault.calls(), 3, "two failures, then the answer");
    for gap in p.fault.gaps() {
        assert!(within(gap, 95, 300), "{gap:?}");
    }

    let p = provider("b").await;
    let client = TestServiceClient::new(channel(
        &[&p.addr],
        "    retry: { strategy: fixed_interval, max_attempts: 4, base_delay_ms: 20 }\n",
    ))
    .unwrap();
    p.fault.set(Fault::FailAlways(Status::Overloaded));
    assert!(matches!(client.echo(5).await, Err(RpcError::Overloaded)));
    assert_eq!(p.fault.calls(), 4, "exactly max_attempts attempts");
}

#[tokio::test]
async fn exponential_backoff_grows_with_jitter_up_to_its_cap() {
    let p = provider("a").await;
    let client = TestServiceClient::new(channel(
        &[&p.addr],
        "    retry: { strategy: exponential_backoff, max_attempts: 5, base_delay_ms: 40, max_delay_ms: 100 }\n",
    ))
    .unwrap();
    p.fault.set(Fault::FailAlways(Status::Overloaded));
    assert!(client.echo(1).await.is_err());
    let gaps = p.fault.gaps();
    assert_eq!(gaps.len(), 4);
    // Upper half of 40, 80, then the 100 ms cap (plus scheduling slack).
    let bounds = [(20, 70), (40, 110), (50, 130), (50, 130)];
    for (gap, (low, high)) in gaps.iter().zip(bounds) {
        assert!(within(*gap, low, high), "{gaps:?}");
    }
}

#[tokio::test]
async fn retries_stop_at_the_call_deadline() {
    let p = provider("a").await;
    let client = TestServiceClient::new(channel(
        &[&p.addr],
        "    timeout_ms: 700\n    retry: { strategy: fixed_interval, max_attempts: 10, base_delay_ms: 300 }\n",
    ))
    .unwrap();
    p.fault.set(Fault::FailAlways(Status::Overloaded));
    let started = Instant::now();
    assert!(client.echo(1).await.is_err());
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    assert!(
        p.fault.calls() <= 3,
        "{} attempts within a 700 ms deadline",
        p.fault.calls()
    );
}

#[tokio::test]
async fn only_idempotent_methods_retry_a_timed_out_attempt() {
    let policy = "    timeout_ms: 3000\n    retry: { strategy: fixed_interval, max_attempts: 3, base_delay_ms: 10, attempt_timeout_ms: 200 }\n";
    let p = provider("a").await;
    let client = TestServiceClient::new(channel(&[&p.addr], policy)).unwrap();
    p.fault.set(Fault::DelayNext(Duration::from_secs(2), 1));
    // `owner` is #[idempotent]: the slow first attempt times out, the second answers.
    assert_eq!(client.owner(1).await.unwrap(), "a");
    assert_eq!(p.fault.calls(), 2);

    let p = provider("b").await;
    let client = TestServiceClient::new(channel(&[&p.addr], policy)).unwrap();
    p.fault.set(Fault::DelayNext(Duration::from_secs(2), 1));
    // `echo` is not: it may have run, so the timeout reaches the caller after one attempt.
    let err = client.echo(1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert_eq!(p.fault.calls(), 1);
}

#[tokio::test]
async fn fail_fast_hands_the_error_to_the_caller() {
    let client = TestServiceClient::new(channel(&[&dead_addr()], "    tolerant: fail_fast\n")).unwrap();
    assert_eq!(client.echo(1).await.unwrap_err().kind(), ErrorKind::Connect);
}

#[tokio::test]
async fn fail_over_tries_other_instances_never_the_one_that_just_failed() {
    let (a, b, c) = (provider("a").await, provider("b").await, provider("c").await);
    for p in [&a, &b, &c] {
        p.fault.set(Fault::FailAlways(Status::Overloaded));
    }
    let yaml = "    tolerant: fail_over\n    retry: { strategy: none, max_attempts: 3 }\n    outlier: { consecutive_failures: 100 }\n";
    let client = TestServiceClient::new(channel(&[&a.addr, &b.addr, &c.addr], yaml)).unwrap();
    assert!(matches!(client.echo(1).await, Err(RpcError::Overloaded)));
    assert_eq!(
        (a.fault.calls(), b.fault.calls(), c.fault.calls()),
        (1, 1, 1),
        "each instance once"
    );

    // One bad instance out of three: every call still succeeds.
    let (a, b, c) = (provider("a").await, provider("b").await, provider("c").await);
    b.fault.set(Fault::FailAlways(Status::Overloaded));
    let client = TestServiceClient::new(channel(&[&a.addr, &b.addr, &c.addr], yaml)).unwrap();
    for i in 0..60 {
        assert_eq!(client.echo(i).await.unwrap(), i);
    }
    // And a dead one (connection refused) likewise.
    let dead = dead_addr();
    let client = TestServiceClient::new(channel(&[&a.addr, &dead, &c.addr], yaml)).unwrap();
    for i in 0..60 {
        assert_eq!(client.echo(i).await.unwrap(), i);
    }
}

#[tokio::test]
async fn fail_over_is_bounded_by_the_instances_not_by_retry_attempts() {
    // Four of five instances fail; retry is off (its max_attempts of 2 must not cap fail-over).
    let good = provider("good").await;
    let mut bad = Vec::new();
    for i in 0..4 {
        let p = provider(&format!("bad{i}")).await;
        p.fault.set(Fault::FailAlways(Status::Overloaded));
        bad.push(p);
    }
    let mut addrs: Vec<&str> = bad.iter().map(|p| p.addr.as_str()).collect();
    addrs.push(&good.addr);
    let yaml = "    tolerant: fail_over\n    retry: { strategy: none, max_attempts: 2 }\n    outlier: { consecutive_failures: 1000 }\n";
    let client = TestServiceClient::new(channel(&addrs, yaml)).unwrap();
    for i in 0..20 {
        assert_eq!(
            client.echo(i).await.unwrap(),
            i,
            "fail-over reaches the one good instance"
        );
    }
    // With retry on, each round tries every instance once; rounds are bounded by max_attempts.
    good.fault.set(Fault::FailAlways(Status::Overloaded));
    let yaml = "    tolerant: fail_over\n    retry: { strategy: fixed_interval, max_attempts: 2, base_delay_ms: 1 }\n    outlier: { consecutive_failures: 1000 }\n";
    let client = TestServiceClient::new(channel(&addrs, yaml)).unwrap();
    let before: usize = bad.iter().chain([&good]).map(|p| p.fault.calls()).sum();
    assert!(matches!(client.echo(1).await, Err(RpcError::Overloaded)));
    let after: usize = bad.iter().chain([&good]).map(|p| p.fault.calls()).sum();
    assert_eq!(after - before, 10, "two rounds over five instances");
}

#[derive(Debug, Serialize, Deserialize)]
struct Opaque(u8);

#[waypost_core::service(name = "TestService", version = "1.0")]
trait NoDefaults {
    async fn echo(&self, value: u64) -> u64;
    async fn opaque(&self) -> Opaque;
}

#[tokio::test]
async fn fail_safe_returns_the_default_and_rejects_results_without_one_at_build_time() {
    let dead = dead_addr();
    let client = TestServiceClient::new(channel(&[&dead], "    tolerant: fail_safe\n")).unwrap();
    assert_eq!(client.echo(9).await.unwrap(), 0);
    assert_eq!(client.blob(10).await.unwrap(), Vec::<u8>::new());
    assert_eq!(
        client.fallible(0).await.unwrap(),
        Vec::<String>::new(),
        "Ok(T::default()) for Result<T, E>"
    );
    client.touch().await.unwrap();

    match NoDefaultsClient::new(channel(&[&dead], "    tolerant: fail_safe\n")) {
        Err(ClientBuildError::FailSafeWithoutDefault { service, method }) => {
            assert_eq!((service.as_str(), method.as_str()), ("TestService:1.0", "opaque"));
        }
        other => panic!("expected a build error, got {:?}", other.map(|_| ())),
    }
    // Only the method configured for fail_safe needs a default.
    let per_method = "    services:\n      TestService:\n        methods:\n          echo: { tolerant: fail_safe }\n";
    let client = NoDefaultsClient::new(channel(&[&dead], per_method)).unwrap();
    assert_eq!(client.echo(3).await.unwrap(), 0);
    assert_eq!(client.opaque().await.unwrap_err().kind(), ErrorKind::Connect);
}

#[tokio::test]
async fn fail_back_answers_from_the_local_implementation() {
    let dead = dead_addr();
    let client = TestServiceClient::builder(channel(&[&dead], "    tolerant: fail_back\n"))
        .fallback(TestServiceImpl::labeled("local"))
        .build()
        .unwrap();
    assert_eq!(client.owner(1).await.unwrap(), "local");
    assert_eq!(client.echo(4).await.unwrap(), 4);
    // The local implementation's own error type still arrives typed.
    assert!(matches!(client.fallible(3).await, Err(RpcError::Application(_))));

    // A healthy remote is preferred.
    let p = provider("remote").await;
    let client = TestServiceClient::builder(channel(&[&p.addr], "    tolerant: fail_back\n"))
        .fallback(TestServiceImpl::labeled("local"))
        .build()
        .unwrap();
    assert_eq!(client.owner(1).await.unwrap(), "remote");

    match TestServiceClient::new(channel(&[&dead], "    tolerant: fail_back\n")) {
        Err(ClientBuildError::FallbackMissing { mode, .. }) => assert_eq!(mode, "fail_back"),
        other => panic!("expected a build error, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn mock_mode_calls_only_the_local_implementation() {
    let p = provider("remote").await;
    let client = TestServiceClient::builder(channel(&[&p.addr], "    mock: true\n"))
        .fallback(TestServiceImpl::labeled("mock"))
        .build()
        .unwrap();
    for i in 0..10 {
        assert_eq!(client.owner(i).await.unwrap(), "mock");
    }
    assert_eq!(p.fault.calls(), 0, "mock mode reached the network");
    match TestServiceClient::new(channel(&[&p.addr], "    mock: true\n")) {
        Err(ClientBuildError::FallbackMissing { mode, .. }) => assert_eq!(mode, "mock"),
        other => panic!("expected a build error, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_failing_instance_is_ejected_then_recovers() {
    let (a, b) = (provider("a").await, provider("b").await);
    b.fault.set(Fault::FailAlways(Status::Overloaded));
    let yaml = "    outlier: { consecutive_failures: 2, base_ejection_ms: 400, max_ejection_ms: 5000 }\n";
    let client = TestServiceClient::new(channel(&[&a.addr, &b.addr], yaml)).unwrap();
    let mut failures = 0;
    for i in 0..40 {
        if client.echo(i).await.is_err() {
            failures += 1;
        }
    }
    assert_eq!(b.fault.calls(), 2, "b is skipped after two failures in a row");
    assert_eq!(
        failures, 0,
        "the two calls b refused (overloaded, never run) were re-sent to a"
    );

    // b recovers; once its ejection ends it gets calls again, and a success clears it.
    b.fault.set(Fault::None);
    tokio::time::sleep(Duration::from_millis(450)).await;
    for i in 0..20 {
        assert_eq!(client.echo(i).await.unwrap(), i);
    }
    assert!(
        b.fault.calls() >= 2 + 9,
        "b got {} calls after recovering",
        b.fault.calls() - 2
    );
}

#[tokio::test]
async fn with_every_instance_ejected_the_least_recently_ejected_is_still_tried() {
    let (a, b) = (provider("a").await, provider("b").await);
    a.fault.set(Fault::FailAlways(Status::Overloaded));
    b.fault.set(Fault::FailAlways(Status::Overloaded));
    let yaml = "    outlier: { consecutive_failures: 1, base_ejection_ms: 10000 }\n";
    let client = TestServiceClient::new(channel(&[&a.addr, &b.addr], yaml)).unwrap();
    assert!(client.echo(1).await.is_err()); // a, ejected first
    assert!(client.echo(1).await.is_err()); // b, ejected second
    a.fault.set(Fault::None);
    // Both are ejected: the call goes to a, ejected longest ago, rather than failing blind.
    assert_eq!(client.owner(1).await.unwrap(), "a");
}

#[tokio::test]
async fn consistent_hash_sends_a_key_to_one_instance() {
    let providers = [provider("a").await, provider("b").await, provider("c").await];
    let addrs: Vec<&str> = providers.iter().map(|p| p.addr.as_str()).collect();
    let client = TestServiceClient::new(channel(&addrs, "    load_balancer: consistent_hash\n")).unwrap();
    let mut owners: HashMap<u64, String> = HashMap::new();
    for round in 0..3 {
        for key in 0..60u64 {
            let owner = client.owner(key).await.unwrap();
            if round == 0 {
                owners.insert(key, owner);
            } else {
                assert_eq!(owners[&key], owner, "key {key} moved");
            }
        }
    }
    let distinct: std::collections::HashSet<&String> = owners.values().collect();
    assert_eq!(distinct.len(), 3, "60 keys should reach all three instances");
    // An explicit key overrides the first argument.
    let pinned = client.with_hash_key("tenant-42");
    let first = pinned.owner(0).await.unwrap();
    for key in 1..30 {
        assert_eq!(pinned.owner(key).await.unwrap(), first);
    }
}

#[tokio::test]
async fn per_service_and_per_method_overrides_from_yaml_apply() {
    let p = provider("a").await;
    let yaml = "    timeout_ms: 2000\n    services:\n      \"TestService:1.0\":\n        retry: { strategy: fixed_interval, max_attempts: 2, base_delay_ms: 10 }\n        methods:\n          sleep_echo: { timeout_ms: 100 }\n";
    let client = TestServiceClient::new(channel(&[&p.addr], yaml)).unwrap();
    assert_eq!(client.policy("sleep_echo").unwrap().timeout, Duration::from_millis(100));
    assert_eq!(client.policy("echo").unwrap().timeout, Duration::from_millis(2000));
    assert_eq!(client.policy("echo").unwrap().retry.max_attempts, 2);
    let started = Instant::now();
    let err = client.sleep_echo(1, 500).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    p.fault.set(Fault::FailNext(Status::Overloaded, 1));
    assert_eq!(client.echo(2).await.unwrap(), 2, "the service's retry override applies");
    // A timeout set in code wins over the configuration.
    assert_eq!(
        client
            .with_timeout(Duration::from_secs(2))
            .sleep_echo(3, 300)
            .await
            .unwrap(),
        3
    );
    drop(p.server);
}

#[test]
fn a_method_override_for_a_method_the_service_lacks_is_an_error() {
    let yaml = "    services:\n      TestService:\n        methods:\n          ecoh: { timeout_ms: 100 }\n";
    match TestServiceClient::new(channel(&["127.0.0.1:9"], yaml)) {
        Err(e @ ClientBuildError::UnknownMethod { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("TestService:1.0 has no method ecoh") && text.contains("echo"),
                "{text}"
            );
        }
        other => panic!("expected an unknown-method error, got {:?}", other.map(|_| ())),
    }
    let yaml = "    services:\n      TestService:\n        methods:\n          ECHO: { timeout_ms: 100 }\n";
    assert!(
        TestServiceClient::new(channel(&["127.0.0.1:9"], yaml)).is_ok(),
        "names compare case-insensitively"
    );
}
