//! The client's circuit breaker and per-instance limit over real TCP.
//!
//! Breaker: three providers, one of which answers every call with an internal error; with
//! ejection after failures in a row turned out of the way, the breaker alone must keep the
//! failing provider's share of calls under 5% of what round robin would give it, and without
//! the breaker it gets its full third. With the default settings, ejection after three
//! failures in a row gets there first. Limit: one provider holding its calls; past the limit a
//! call fails overloaded at once, without reaching the provider.

use std::sync::Arc;
use std::time::Duration;

use waypost_core::client::{ClientOptions, ClusterInvoker, ConnectionPool, InstanceSource};
use waypost_core::config::{BreakerConfig, ConsumerConfig, OutlierConfig};
use waypost_core::fault::{HealthOptions, InstanceHealth, PolicySet};
use waypost_core::protocol::Status;
use waypost_core::registry::ServiceInstance;
use waypost_core::server::{RunningServer, ServerBuilder};
use waypost_core::{Channel, ErrorKind};
use waypost_tests::faulty::{Fault, FaultHandle, FaultyService};

#[waypost_core::service(name = "Counter", version = "1.0")]
pub trait Counter {
    /// Returns `n`, after `hold_ms`.
    async fn echo(&self, n: u64, hold_ms: u64) -> u64;
}

#[derive(Clone)]
struct Provider;

impl Counter for Provider {
    async fn echo(&self, n: u64, hold_ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(hold_ms)).await;
        n
    }
}

/// `count` providers, each wrapped in a fault handle.
async fn providers(count: usize) -> (Vec<RunningServer>, Vec<ServiceInstance>, Vec<FaultHandle>) {
    let mut servers = Vec::new();
    let mut instances = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..count {
        let (service, handle) = FaultyService::new(CounterServer::new(Provider));
        let server = ServerBuilder::new()
            .add_service(service)
            .bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = server.local_addr().expect("addr").port();
        instances.push(ServiceInstance::new("Counter", "1.0", "127.0.0.1", port));
        servers.push(server);
        handles.push(handle);
    }
    (servers, instances, handles)
}

fn client(instances: &[ServiceInstance], config: ConsumerConfig) -> CounterClient {
    let invoker = ClusterInvoker::new(
        InstanceSource::Fixed(Arc::from(instances.to_vec())),
        Arc::new(ConnectionPool::new(ClientOptions::default())),
        Arc::new(InstanceHealth::new(HealthOptions::from(&config))),
    );
    let channel = Channel::new(Arc::new(invoker)).with_policies(Arc::new(PolicySet::new(config)));
    CounterClient::new(channel).expect("client")
}

/// The consumer settings of the breaker run: ejection out of the way (it would hide the
/// breaker), the breaker on or off.
fn breaker_config(enabled: bool) -> ConsumerConfig {
    ConsumerConfig {
        outlier: OutlierConfig {
            consecutive_failures: 1_000_000,
            ..OutlierConfig::default()
        },
        breaker: BreakerConfig {
            enabled,
            // A short window, so the recovery below takes 2 s rather than 10.
            window_ms: 2_000,
            ..BreakerConfig::default()
        },
        ..ConsumerConfig::default()
    }
}

/// Makes `calls` calls one after another; answers how many reached the failing provider.
async fn calls_reaching(client: &CounterClient, failing: &FaultHandle, calls: u64) -> usize {
    let before = failing.calls();
    for n in 0..calls {
        match client.echo(n, 0).await {
            Ok(answer) => assert_eq!(answer, n),
            Err(e) => assert_eq!(e.kind(), ErrorKind::Internal, "{e}"),
        }
    }
    failing.calls() - before
}

#[tokio::test]
async fn the_breaker_keeps_calls_from_a_failing_instance() {
    const CALLS: u64 = 600;
    let (_servers, instances, handles) = providers(3).await;
    handles[0].set(Fault::FailAlways(Status::InternalError));

    // Without the breaker, round robin gives the failing provider its third.
    let plain = client(&instances, breaker_config(false));
    let reached = calls_reaching(&plain, &handles[0], CALLS).await;
    assert_eq!(reached as u64, CALLS / 3);

    // With it: once its window holds a few hundred requests, at most 5% of that third (the
    // share let through falls as (protection + 1) / (requests + 1)).
    let guarded = client(&instances, breaker_config(true));
    let opening = calls_reaching(&guarded, &handles[0], 900).await;
    assert!(
        opening >= 5,
        "the protection lets the first failures through: {opening}"
    );
    let reached = calls_reaching(&guarded, &handles[0], CALLS).await;
    assert!(
        reached as u64 * 20 <= CALLS / 3,
        "{reached} of the {} calls round robin would send reached the failing provider",
        CALLS / 3
    );

    // A failing provider that recovers gets its share back as its accepts return.
    handles[0].set(Fault::None);
    let mut reached = 0;
    for _ in 0..200 {
        reached = calls_reaching(&guarded, &handles[0], 30).await;
        if reached >= 9 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reached >= 9,
        "the recovered provider gets its third again: {reached} of 30"
    );
}

#[tokio::test]
async fn with_the_default_settings_a_failing_instance_is_ejected_first() {
    const CALLS: u64 = 600;
    let (_servers, instances, handles) = providers(3).await;
    handles[0].set(Fault::FailAlways(Status::InternalError));
    let guarded = client(&instances, ConsumerConfig::default());
    let reached = calls_reaching(&guarded, &handles[0], CALLS).await;
    assert!(
        reached as u64 * 20 <= CALLS / 3,
        "{reached} of {} calls reached the failing provider",
        CALLS / 3
    );
}

#[tokio::test]
async fn past_the_per_instance_limit_calls_fail_overloaded_without_being_sent() {
    let (_servers, instances, handles) = providers(1).await;
    let held = client(
        &instances,
        ConsumerConfig {
            max_in_flight_per_instance: 2,
            ..ConsumerConfig::default()
        },
    );
    let slow: Vec<_> = (0..2)
        .map(|n| {
            let held = held.clone();
            tokio::spawn(async move { held.echo(n, 300).await })
        })
        .collect();
    // Wait until both held calls have reached the provider.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while handles[0].calls() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the held calls never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for n in 0..5 {
        let refused = held.echo(n, 0).await.expect_err("over the limit");
        assert_eq!(refused.kind(), ErrorKind::Overloaded, "{refused}");
    }
    assert_eq!(handles[0].calls(), 2, "refused calls were never sent");
    for call in slow {
        assert!(call.await.expect("joined").is_ok());
    }
    assert_eq!(held.echo(9, 0).await.expect("below the limit again"), 9);
}
