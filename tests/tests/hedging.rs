//! Hedged calls over real TCP: three providers, one of which answers every 10th call it gets
//! 200 ms late; with hedging on, an `#[idempotent]` call that has not been answered after the
//! hedge delay also goes to another provider, and the first answer wins.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use waypost_core::client::{ClientOptions, ClusterInvoker, ConnectionPool, InstanceSource};
use waypost_core::config::{ConsumerConfig, HedgingConfig};
use waypost_core::fault::{InstanceHealth, PolicySet};
use waypost_core::registry::ServiceInstance;
use waypost_core::server::{RunningServer, ServerBuilder};
use waypost_core::Channel;

#[waypost_core::service(name = "Lookup", version = "1.0")]
pub trait Lookup {
    /// Returns `n`, the slow provider late now and then.
    #[idempotent]
    async fn find(&self, n: u64) -> u64;
    /// Returns `n`; not idempotent, so never hedged.
    async fn store(&self, n: u64) -> u64;
}

/// Counts the calls it gets; when `slow`, answers every 10th one 200 ms late.
#[derive(Clone, Default)]
struct Provider {
    slow: bool,
    calls: Arc<AtomicU64>,
}

impl Provider {
    async fn answer(&self, n: u64) -> u64 {
        let seen = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.slow && seen.is_multiple_of(10) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        n
    }
}

impl Lookup for Provider {
    async fn find(&self, n: u64) -> u64 {
        self.answer(n).await
    }

    async fn store(&self, n: u64) -> u64 {
        self.answer(n).await
    }
}

/// Three providers (the first slow now and then), and their call counters.
async fn providers() -> (Vec<RunningServer>, Vec<ServiceInstance>, Vec<Arc<AtomicU64>>) {
    let mut servers = Vec::new();
    let mut instances = Vec::new();
    let mut counters = Vec::new();
    for slow in [true, false, false] {
        let provider = Provider {
            slow,
            ..Provider::default()
        };
        counters.push(provider.calls.clone());
        let server = ServerBuilder::new()
            .add_service(LookupServer::new(provider))
            .bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = server.local_addr().expect("addr").port();
        instances.push(ServiceInstance::new("Lookup", "1.0", "127.0.0.1", port));
        servers.push(server);
    }
    (servers, instances, counters)
}

fn client(instances: &[ServiceInstance], hedging: HedgingConfig) -> LookupClient {
    let config = ConsumerConfig {
        hedging,
        ..ConsumerConfig::default()
    };
    let invoker = ClusterInvoker::new(
        InstanceSource::Fixed(Arc::from(instances.to_vec())),
        Arc::new(ConnectionPool::new(ClientOptions::default())),
        Arc::new(InstanceHealth::default()),
    );
    let channel = Channel::new(Arc::new(invoker)).with_policies(Arc::new(PolicySet::new(config)));
    LookupClient::new(channel).expect("client")
}

/// `calls` calls one after another: their p99 latency, and the calls the providers got.
async fn run(client: &LookupClient, counters: &[Arc<AtomicU64>], calls: u64, idempotent: bool) -> (Duration, u64) {
    let before: u64 = counters.iter().map(|c| c.load(Ordering::SeqCst)).sum();
    let mut took = Vec::new();
    for n in 0..calls {
        let started = Instant::now();
        let answer = match idempotent {
            true => client.find(n).await,
            false => client.store(n).await,
        };
        assert_eq!(answer.expect("answered"), n);
        took.push(started.elapsed());
    }
    took.sort();
    let p99 = took[(took.len() * 99 / 100).min(took.len() - 1)];
    // Cancelled losers still reached a provider: count what the providers got once the last
    // hedged attempt has had time to arrive.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after: u64 = counters.iter().map(|c| c.load(Ordering::SeqCst)).sum();
    (p99, after - before)
}

#[tokio::test]
async fn a_hedged_call_does_not_wait_for_a_slow_provider() {
    let (_servers, instances, counters) = providers().await;
    const CALLS: u64 = 300;

    // Without hedging: the slow provider's late answers set the p99.
    let plain = client(&instances, HedgingConfig::default());
    let (p99_plain, received_plain) = run(&plain, &counters, CALLS, true).await;
    assert!(
        p99_plain >= Duration::from_millis(200),
        "p99 without hedging: {p99_plain:?}"
    );
    assert_eq!(received_plain, CALLS);

    // With hedging after 20 ms: a late call also goes to another provider.
    let hedged = client(
        &instances,
        HedgingConfig {
            enabled: true,
            delay_ms: 20,
            max_extra: 1,
        },
    );
    let (p99_hedged, received_hedged) = run(&hedged, &counters, CALLS, true).await;
    assert!(
        p99_hedged < Duration::from_millis(150),
        "p99 with hedging: {p99_hedged:?}"
    );
    let extra = received_hedged - CALLS;
    assert!(extra >= 5, "the slow provider's late calls were hedged ({extra} extra)");
    assert!(extra * 10 <= CALLS, "at most 10% extra calls: {extra}");

    // A method that is not idempotent is never sent twice.
    let (_, received_store) = run(&hedged, &counters, 100, false).await;
    assert_eq!(received_store, 100);
}

#[tokio::test]
async fn an_adaptive_hedge_delay_follows_the_service_latency() {
    let (_servers, instances, counters) = providers().await;
    let hedged = client(
        &instances,
        HedgingConfig {
            enabled: true,
            delay_ms: 0,
            max_extra: 1,
        },
    );
    // The first 32 calls teach the delay (the p95, at least 5 ms); then late calls are
    // hedged.
    let _ = run(&hedged, &counters, 64, true).await;
    let (p99, received) = run(&hedged, &counters, 300, true).await;
    assert!(p99 < Duration::from_millis(150), "p99 with an adaptive delay: {p99:?}");
    assert!(received > 300, "late calls were hedged");
}

#[tokio::test]
async fn hedging_is_turned_on_for_one_method_by_a_live_rule() {
    use waypost_core::registry::Registry;
    use waypost_tests::servers::etcd_config;

    let Some(config) = etcd_config("hedge-rules") else {
        return;
    };
    let mut providers = Vec::new();
    let mut counters = Vec::new();
    for slow in [true, false, false] {
        let provider = Provider {
            slow,
            ..Provider::default()
        };
        counters.push(provider.calls.clone());
        let builder = ServerBuilder::from_config(&config.server).add_service(LookupServer::new(provider));
        providers.push(waypost::serve(&config, builder).await.expect("provider"));
    }
    let consumer = waypost::consumer(&config).await.expect("consumer");
    let client = LookupClient::new(consumer.channel()).expect("client");
    let deadline = Instant::now() + Duration::from_secs(10);
    while counters.iter().any(|c| c.load(Ordering::SeqCst) == 0) {
        assert!(Instant::now() < deadline, "the three providers were never all called");
        let _ = client.find(0).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let (p99_plain, _) = run(&client, &counters, 300, true).await;
    assert!(
        p99_plain >= Duration::from_millis(200),
        "p99 before the rule: {p99_plain:?}"
    );

    let rule = r#"{"methods": {"find": {"hedging": {"enabled": true, "delay_ms": 20}}}}"#;
    let operator: Arc<dyn Registry> = waypost_registry::connect(&config.registry).await.expect("operator");
    operator.put_rules("Lookup:1.0", rule).await.expect("put the rule");
    while consumer.cache().rules("Lookup:1.0").as_deref() != Some(rule) {
        assert!(
            Instant::now() < deadline + Duration::from_secs(10),
            "the rule never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (p99_hedged, received) = run(&client, &counters, 300, true).await;
    assert!(
        p99_hedged < Duration::from_millis(150),
        "p99 under the rule: {p99_hedged:?}"
    );
    assert!(received > 300, "late calls were hedged");
    let (_, received_store) = run(&client, &counters, 100, false).await;
    assert_eq!(
        received_store, 100,
        "the rule names find only; store is not idempotent anyway"
    );
    operator.delete_rules("Lookup:1.0").await.expect("delete the rule");
}
