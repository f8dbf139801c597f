//! Metrics end to end against the shared etcd: two example-provider processes serve
//! `/metrics`, a consumer (this test, metrics on too) makes 50 calls, and each provider's
//! counters and latency histogram add up to the calls it answered.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use waypost_example_api::UserServiceClient;

use waypost_tests::process::lines;
use waypost_tests::servers::shared_etcd;

/// A provider process, killed when dropped.
struct Provider {
    child: Child,
    /// `host:port` of its RPC server.
    addr: String,
    /// `host:port` of its metrics endpoint.
    metrics: String,
    config: PathBuf,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

fn yaml(endpoint: &str, root: &str) -> String {
    format!(
        "rpc:\n  server: {{ host: 127.0.0.1, port: 0, deregister_quiet_ms: 50 }}\n  registry: {{ type: etcd, endpoints: [\"{endpoint}\"], root: \"{root}\" }}\n  metrics: {{ listen: \"127.0.0.1:0\" }}\n"
    )
}

/// Starts example-provider and waits for the lines naming its addresses.
fn start_provider(yaml: &str, n: usize) -> Provider {
    let config = std::env::temp_dir().join(format!("example-provider-metrics-{}-{n}.yaml", std::process::id()));
    std::fs::write(&config, yaml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_example-provider"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut addr = None;
    let metrics = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("example-provider printed its addresses");
        if let Some(rest) = line.strip_prefix("serving UserService:1.0 at ") {
            addr = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(url) = line.strip_prefix("metrics at http://") {
            break url.trim_end_matches("/metrics").to_owned();
        }
    };
    let addr = addr.expect("the serving line comes before the metrics line");
    Provider {
        child,
        addr,
        metrics,
        config,
    }
}

/// `GET /metrics` over a plain socket; the response body.
fn scrape(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    // Header names are case-insensitive (hyper writes them in lower case).
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_owned()
}

/// One sample line of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("name and value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|l| !l.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').expect("label=value");
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().expect("a number"),
            }
        })
        .collect()
}

/// The sum of `name` over samples whose labels include every pair of `having`.
fn sum(samples: &[Sample], name: &str, having: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            having
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_provider_counts_the_calls_it_served_with_a_latency_histogram() {
    let Some(endpoints) = shared_etcd() else { return };
    let endpoint = &endpoints[0];
    let root = format!("/metrics-{}-{}", std::process::id(), fastrand_suffix());
    let yaml = yaml(endpoint, &root);
    let providers = [start_provider(&yaml, 1), start_provider(&yaml, 2)];

    let config = waypost::config::RpcConfig::from_yaml(&yaml).unwrap();
    let consumer = waypost::consumer(&config).await.unwrap();
    let client = UserServiceClient::new(consumer.channel()).unwrap();
    // Both providers are known before the calls start.
    let deadline = Instant::now() + Duration::from_secs(10);
    while consumer
        .cache()
        .instances("UserService:1.0")
        .await
        .map_or(0, |l| l.len())
        < 2
    {
        assert!(Instant::now() < deadline, "both providers registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut served: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..50u64 {
        let user = client.get_user(i % 5).await.unwrap();
        *served.entry(user.served_by).or_default() += 1;
    }
    assert_eq!(served.len(), 2, "both providers served calls: {served:?}");

    let get_user = [("service", "UserService:1.0"), ("method", "get_user")];
    for provider in &providers {
        let samples = parse(&scrape(&provider.metrics));
        let calls = sum(&samples, "rpc_server_calls_total", &get_user);
        let ok = sum(
            &samples,
            "rpc_server_calls_total",
            &[get_user[0], get_user[1], ("outcome", "ok")],
        );
        assert_eq!(calls, ok, "every call succeeded");
        assert_eq!(
            calls, served[&provider.addr] as f64,
            "{} counted the calls it served ({served:?})",
            provider.addr
        );
        let histogram_count = sum(&samples, "rpc_server_call_duration_seconds_count", &get_user);
        let inf_bucket = sum(
            &samples,
            "rpc_server_call_duration_seconds_bucket",
            &[get_user[0], get_user[1], ("le", "+Inf")],
        );
        let buckets = samples
            .iter()
            .filter(|s| s.name == "rpc_server_call_duration_seconds_bucket")
            .count();
        assert_eq!(histogram_count, calls);
        assert_eq!(inf_bucket, calls);
        assert!(buckets > 10, "a histogram with buckets, not a summary: {buckets}");
        assert!(sum(&samples, "rpc_server_call_duration_seconds_sum", &get_user) > 0.0);
        assert_eq!(
            sum(&samples, "rpc_server_connections", &[]),
            1.0,
            "the consumer's connection"
        );
    }
    consumer.close().await;
}

fn fastrand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}
