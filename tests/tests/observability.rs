//! Observability over real TCP: metrics of both sides and the health method.

use std::sync::Arc;

use waypost_core::server::ServerBuilder;
use waypost_core::Channel;

#[waypost_core::service(name = "Metered", version = "1.0")]
pub trait Metered {
    async fn fine(&self) -> u32;
    async fn refuse(&self, code: u32) -> Result<u32, u32>;
}

struct MeteredImpl;

impl Metered for MeteredImpl {
    async fn fine(&self) -> u32 {
        1
    }

    async fn refuse(&self, code: u32) -> Result<u32, u32> {
        Err(code)
    }
}

/// `GET /metrics` from `addr`: the response body.
async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// The value of the series `series` (name and labels exactly as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Both sides record calls by outcome; requests the server answers without running them are
/// counted by reason; the health method answers without user code and says `draining` once
/// shutdown begins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_counted_on_both_sides_and_health_follows_shutdown() {
    use waypost_core::client::MethodDescriptor;
    use waypost_core::health::Health;
    use waypost_core::metrics::MetricsLayer;
    use waypost_core::registry::Registry;

    let endpoint = waypost::metrics_endpoint::MetricsEndpoint::start("127.0.0.1:0")
        .await
        .unwrap();
    let registry = Arc::new(waypost_registry::memory::MemoryRegistry::shared(
        "/observability-health",
    ));
    let mut server = ServerBuilder::new()
        .add_service(MeteredServer::new(MeteredImpl))
        .interceptor(MetricsLayer::new())
        .deregister_wait(std::time::Duration::from_secs(3), std::time::Duration::from_secs(2))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    server
        .register(
            registry.clone() as Arc<dyn Registry>,
            &waypost_core::server::Registration::from_config(&Default::default()),
        )
        .await
        .unwrap();
    let channel = Channel::direct(server.local_addr().unwrap().to_string())
        .unwrap()
        .with_interceptor(MetricsLayer::new());
    let client = MeteredClient::new(channel.clone()).unwrap();
    for _ in 0..3 {
        assert_eq!(client.fine().await.unwrap(), 1);
    }
    assert!(client.refuse(7).await.is_err());
    // A method the service does not have: refused before any layer, counted by reason.
    let unknown = MethodDescriptor::dynamic("Metered:1.0", "absent");
    let policy = channel.policy("Metered:1.0", "absent", false);
    let error = channel
        .call(unknown, &(), None::<&()>, &policy, None)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), waypost_core::ErrorKind::MethodNotFound);
    assert_eq!(channel.health("Metered:1.0").await.unwrap(), Health::Serving);
    assert_eq!(
        channel.health("Absent:1.0").await.unwrap_err().kind(),
        waypost_core::ErrorKind::ServiceNotFound
    );

    let text = scrape(endpoint.local_addr()).await;
    let series = |side: &str, method: &str, outcome: &str| {
        format!("rpc_{side}_calls_total{{service=\"Metered:1.0\",method=\"{method}\",outcome=\"{outcome}\"}}")
    };
    assert_eq!(value(&text, &series("server", "fine", "ok")), Some(3.0), "{text}");
    assert_eq!(value(&text, &series("client", "fine", "ok")), Some(3.0));
    assert_eq!(
        value(&text, &series("server", "refuse", "application_error")),
        Some(1.0)
    );
    assert_eq!(
        value(&text, &series("client", "refuse", "application_error")),
        Some(1.0)
    );
    assert_eq!(value(&text, &series("client", "absent", "method_not_found")), Some(1.0));
    assert_eq!(
        value(&text, &series("server", "absent", "method_not_found")),
        None,
        "unknown names never become labels"
    );
    assert!(value(&text, "rpc_server_rejected_total{reason=\"method_not_found\"}").is_some_and(|n| n >= 1.0));
    assert!(value(&text, "rpc_server_rejected_total{reason=\"service_not_found\"}").is_some_and(|n| n >= 1.0));
    assert!(text.contains("# HELP rpc_server_calls_total"), "described");
    assert_eq!(
        value(
            &text,
            "rpc_client_call_duration_seconds_count{service=\"Metered:1.0\",method=\"fine\"}"
        ),
        Some(3.0)
    );

    // Shutdown deregisters, then keeps serving for the quiet period: health says draining.
    let stopping = tokio::spawn(server.shutdown());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match channel.health("Metered:1.0").await {
            Ok(Health::Draining) => break,
            Ok(Health::Serving) => {}
            other => panic!("health while shutting down: {other:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "health never said draining");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stopping.await.unwrap();
}
