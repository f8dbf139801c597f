//! What abuse testing found, each against real servers: etcd auth tokens that expire, etcd's
//! keep-alive policy, connection and memory limits on the RPC port, and configuration that
//! must be refused.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use waypost::Provider;
use waypost_core::config::RpcConfig;
use waypost_core::registry::Registry;
use waypost_core::server::ServerBuilder;
use waypost_tests::load::{ms, report, Load};
use waypost_tests::servers::{shared_etcd, unique_root, EtcdServer, ETCD_ROOT};
use waypost_tests::{wait_until, TestServiceClient, TestServiceImpl, TestServiceServer};

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
    waypost::serve(config, builder).await.expect("start a provider")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_etcd_auth_tokens_are_renewed_by_consumers_and_providers() {
    let Some(etcd) = EtcdServer::start_with_jwt_auth(Duration::from_secs(10)).await else {
        return;
    };
    let config = etcd_config(&etcd.endpoint(), &unique_root("jwt"), true);
    let first = provider(&config, "first").await;
    let consumer = waypost::consumer(&config).await.unwrap();
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
    let observer: Arc<dyn Registry> = waypost_registry::connect(&config.registry).await.unwrap();
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
    let watching = waypost::consumer(&config).await.unwrap();
    let client = TestServiceClient::new(watching.channel()).unwrap();
    client.owner(0).await.unwrap();
    // A consumer that has not called anything yet: its connection carries no stream, which is
    // when etcd counts a client's pings against its --grpc-keepalive-min-time.
    let idle = waypost::consumer(&config).await.unwrap();
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
        serde_json::json!({"etcd": "default flags (--grpc-keepalive-min-time 5 s)", "keepalive_interval_ms": config.registry.keepalive_interval_ms,
            "watched_s": 30, "connections": connections.len(), "connections_replaced": connections.difference(&after).count(),
            "watch_breaks": watching.cache().rewatches()}),
    );
    only.shutdown().await;
    watching.close().await;
    idle.close().await;
}

fn local_provider_yaml(extra_server: &str) -> String {
    format!(
        "rpc:\n  server:\n    host: 127.0.0.1\n    port: 0\n{extra_server}  registry: {{ type: memory, root: \"{}\" }}\n",
        unique_root("hardening")
    )
}

fn test_provider() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_test-provider"))
}

async fn connect_many(addr: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => sockets.push(s),
            _ => break,
        }
    }
    sockets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_told_to_go_away_and_closed() {
    use tokio::io::AsyncReadExt;

    let server = ServerBuilder::new()
        .add_service(TestServiceServer::new(TestServiceImpl::default()))
        .idle_timeout(Duration::from_millis(300))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let started = Instant::now();
    let mut closers = Vec::new();
    for mut socket in connect_many(&addr, 20).await {
        closers.push(tokio::spawn(async move {
            // GoAway arrives, then the close: EOF.
            let mut first = [0u8; 64];
            let n = socket.read(&mut first).await.unwrap_or(0);
            let go_away_at = Instant::now();
            let mut sink = Vec::new();
            let _ = socket.read_to_end(&mut sink).await;
            (go_away_at, Instant::now(), n + sink.len())
        }));
    }
    assert_eq!(closers.len(), 20);
    for c in closers {
        let (go_away_at, closed_at, got) = tokio::time::timeout(Duration::from_secs(10), c)
            .await
            .expect("closed")
            .unwrap();
        // Idleness counts from the accept: one idle timeout, not two (the wait for a first
        // byte that would tell HTTP from the RPC protocol is part of it).
        let told = go_away_at - started;
        assert!(
            told < Duration::from_millis(550),
            "GoAway after {told:?} for a 300 ms idle timeout"
        );
        let after = closed_at - started;
        assert!(
            after >= Duration::from_millis(300),
            "closed after {after:?}, before the idle timeout"
        );
        assert!(after < Duration::from_secs(4), "closed after {after:?}");
        assert!(got > 0, "a GoAway came before the close");
    }
    // A real client that went idle is told to go away, lets go, and its next call reconnects.
    let client = TestServiceClient::new(waypost_core::Channel::direct(&addr).unwrap()).unwrap();
    assert_eq!(client.echo(1).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    wait_until(Duration::from_secs(5), "no connection is left open", || {
        let n = server.open_connections();
        async move { n == 0 }
    })
    .await;
    assert_eq!(client.echo(2).await.unwrap(), 2, "the next call reconnects");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_leave_a_consumer_served_and_memory_bounded() {
    let provider = waypost_tests::process::ProviderProcess::start(test_provider(), &local_provider_yaml("")).await;
    let addr = format!("127.0.0.1:{}", provider.port);
    let client = TestServiceClient::new(waypost_core::Channel::direct(&addr).unwrap()).unwrap();
    client.echo(0).await.unwrap();
    let (rss_before, _) = provider.memory_kib();
    let idle = connect_many(&addr, 2000).await;
    assert_eq!(idle.len(), 2000);
    let started = Instant::now();
    for i in 0..200 {
        assert_eq!(client.echo(i).await.unwrap(), i, "the consumer is served");
    }
    let calls_ms = ms(started.elapsed());
    let (rss_with, _) = provider.memory_kib();
    drop(idle);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_after, peak) = provider.memory_kib();
    assert!(
        rss_with - rss_before < 64 * 1024,
        "2,000 idle connections cost {} KiB",
        rss_with - rss_before
    );
    report(
        "connection limits: 2,000 idle connections",
        serde_json::json!({
            "idle_connections": 2000, "consumer_calls": 200, "consumer_failed": 0, "consumer_calls_ms": calls_ms,
            "provider_rss_kib_before": rss_before, "provider_rss_kib_with": rss_with,
            "provider_rss_kib_after_close": rss_after, "provider_rss_kib_peak": peak,
        }),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_provider_backs_off_logs_rarely_and_recovers() {
    let provider = waypost_tests::process::ProviderProcess::start_with(
        test_provider(),
        &local_provider_yaml(""),
        waypost_tests::process::ProcessOptions {
            max_open_files: Some(64),
            capture_log: true,
            ..Default::default()
        },
    )
    .await;
    let addr = format!("127.0.0.1:{}", provider.port);
    // More connections than the provider has descriptors: accept fails with EMFILE.
    let hogs = connect_many(&addr, 120).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failures_logged = provider.log().matches("accept failed").count();
    assert!(
        (1..=2).contains(&failures_logged),
        "{failures_logged} lines about failed accepts in 3 s:\n{}",
        provider.log()
    );
    drop(hogs);
    let client = TestServiceClient::new(waypost_core::Channel::direct(&addr).unwrap()).unwrap();
    let started = Instant::now();
    wait_until(Duration::from_secs(10), "the provider serves again", || {
        let client = client.clone();
        async move { client.echo(7).await.is_ok() }
    })
    .await;
    report(
        "connection limits: out of file descriptors",
        serde_json::json!({
            "provider_open_files_limit": 64, "connections_opened": 120,
            "accept_failure_lines_in_3_s": failures_logged,
            "served_again_after_ms": ms(started.elapsed()),
        }),
    );
}

/// A request for TestService `echo` whose body is `size` bytes (its arguments do not decode:
/// the server reads it whole, then answers with a decode error).
fn large_request(size: usize) -> Vec<u8> {
    use waypost_core::context::Metadata;
    use waypost_core::protocol::{encode_frame, encode_request_body, Header, MessageType};

    let mut body = encode_request_body(
        "TestService:1.0",
        "echo",
        &Metadata::new(),
        waypost_core::SerializerKind::Bincode,
        &(),
    )
    .unwrap()
    .as_one()
    .to_vec();
    body.resize(size, 0xab);
    let mut header = Header::new(MessageType::Request, 1);
    header.serializer = waypost_core::SerializerKind::Bincode.id();
    header.timeout_ms = 60_000;
    let mut frame = bytes::BytesMut::new();
    encode_frame(header, &body, &mut frame);
    frame.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_requests_are_read_within_a_memory_budget_and_memory_comes_back() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let provider = waypost_tests::process::ProviderProcess::start(
        test_provider(),
        &local_provider_yaml("    max_buffered_request_bytes: 268435456\n    frame_timeout_ms: 60000\n"),
    )
    .await;
    let addr = format!("127.0.0.1:{}", provider.port);
    let client = TestServiceClient::new(waypost_core::Channel::direct(&addr).unwrap()).unwrap();
    client.echo(0).await.unwrap();
    let (rss_before, _) = provider.memory_kib();
    let frame = Arc::new(large_request(16 * 1024 * 1024 - 64));
    let load = Load::start(&client, 2, Duration::from_millis(10));
    let senders: Vec<_> = (0..60)
        .map(|_| {
            let (addr, frame) = (addr.clone(), frame.clone());
            tokio::spawn(async move {
                let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
                socket.write_all(&frame).await.unwrap();
                let mut answer = [0u8; 64];
                socket.read(&mut answer).await.unwrap()
            })
        })
        .collect();
    for s in senders {
        let answered = tokio::time::timeout(Duration::from_secs(60), s)
            .await
            .expect("answered")
            .unwrap();
        assert!(answered > 0, "each large request is answered");
    }
    let stats = load.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_after, peak) = provider.memory_kib();
    stats.assert_none_failed();
    let mib = |kib: u64| kib / 1024;
    assert!(mib(peak) < 256 + 200, "peak {} MiB for a 256 MiB budget", mib(peak));
    assert!(
        mib(rss_after.saturating_sub(rss_before)) < 64,
        "{} MiB kept after the connections closed",
        mib(rss_after.saturating_sub(rss_before))
    );
    report(
        "memory: 60 connections sending 16 MiB requests",
        serde_json::json!({
            "connections": 60, "request_mib": 16, "budget_mib": 256,
            "consumer_calls": stats.calls(), "consumer_failed": stats.failed(),
            "provider_rss_mib_before": mib(rss_before), "provider_rss_mib_peak": mib(peak),
            "provider_rss_mib_after_close": mib(rss_after),
        }),
    );
}

/// Reads until the server closes the connection (end of stream or reset), at most `within`.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, within: Duration, what: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut read = Vec::new();
    let closed = tokio::time::timeout(within, stream.read_to_end(&mut read)).await;
    assert!(closed.is_ok(), "{what}: still open after {within:?}");
    read
}

/// The types of the HTTP/2 frames in `bytes`, in order.
fn h2_frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

/// Idle HTTP connections go away after the idle timeout, as the RPC protocol's do: HTTP/1.1
/// kept alive after its last answer, and HTTP/2 (h2c) with a GOAWAY (the frame timeout is a
/// minute here, so it is the idle timeout that closes them). And a connection that sends the
/// first byte of a request and nothing more, still open or half-closed, is closed after the
/// frame timeout (the idle timeout is a minute there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http_connections_and_a_lone_first_byte_are_closed_in_time() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let serve = |idle: u64, frame: u64| {
        ServerBuilder::new()
            .idle_timeout(Duration::from_millis(idle))
            .frame_timeout(Duration::from_millis(frame))
            .add_service(TestServiceServer::new(TestServiceImpl::default()))
            .bind("127.0.0.1:0")
    };
    let within = Duration::from_secs(20);

    let server = serve(300, 60_000).await.expect("bind");
    let addr = server.local_addr().expect("addr");
    let mut http1 = TcpStream::connect(addr).await.expect("connect");
    http1
        .write_all(b"POST /TestService/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 3\r\n\r\n[7]")
        .await
        .expect("write");
    let answer = read_until_closed(&mut http1, within, "an idle HTTP/1.1 connection").await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("\r\n\r\n7"),
        "{answer}"
    );

    let mut h2c = TcpStream::connect(addr).await.expect("connect");
    // The client preface and an empty SETTINGS frame, then nothing.
    h2c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("write");
    let frames = read_until_closed(&mut h2c, within, "an idle HTTP/2 connection").await;
    const GOAWAY: u8 = 7;
    assert!(
        h2_frame_types(&frames).contains(&GOAWAY),
        "{:?}",
        h2_frame_types(&frames)
    );
    server.shutdown().await;

    let server = serve(60_000, 300).await.expect("bind");
    let addr = server.local_addr().expect("addr");
    let mut open = TcpStream::connect(addr).await.expect("connect");
    let mut gone = TcpStream::connect(addr).await.expect("connect");
    for stream in [&mut open, &mut gone] {
        stream.write_all(b"P").await.expect("write");
    }
    gone.shutdown().await.expect("half-close");
    for (stream, what) in [
        (&mut open, "one byte, then nothing"),
        (&mut gone, "one byte, then the client left"),
    ] {
        let read = read_until_closed(stream, within, what).await;
        assert!(read.is_empty(), "{what}: answered {read:?}");
    }
    // The server still serves.
    let client =
        TestServiceClient::new(waypost_core::Channel::direct(addr.to_string()).expect("channel")).expect("client");
    assert_eq!(client.echo(5).await.expect("served"), 5);
    server.shutdown().await;
}

/// Sends an HTTP/1.1 request (`head` without its blank line, then `body`) and reads the answer
/// until the server closes the connection: its status and its body.
async fn http_exchange(addr: &str, head: &str, body: &[u8]) -> (u16, Vec<u8>) {
    use tokio::io::AsyncWriteExt;
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(format!("{head}\r\n\r\n").as_bytes()).await.unwrap();
    // The server may answer (and close) before it has read the whole body.
    let _ = socket.write_all(body).await;
    let answer = read_until_closed(&mut socket, Duration::from_secs(60), "an HTTP answer").await;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {:?}", &text[..text.len().min(200)]));
    let body = match answer.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => answer[end + 4..].to_vec(),
        None => Vec::new(),
    };
    (status, body)
}

/// HTTP bodies are read as the RPC protocol's large frames are: under the request byte budget
/// (before 30 parallel 15 MiB bodies under a 64 MiB budget took the provider to 412.6 MB, with
/// JSON that fails to decode 520.8 MB, and 233.9 MB stayed), and JSON arguments by name cost
/// about their own size (a 15 MB `{"value": [0, 0, ...]}` grew the provider by ~270-295 MB).
/// An honest oversized length, `Expect: 100-continue` included, is refused at once (it got
/// `100 Continue` and a 408), and a 400 answer quotes a 15 MB string argument briefly (it echoed
/// all of it). A well-behaved consumer is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bodies_stay_within_the_budget_and_bad_json_costs_little() {
    let provider = waypost_tests::process::ProviderProcess::start(
        test_provider(),
        &local_provider_yaml("    max_buffered_request_bytes: 67108864\n    frame_timeout_ms: 60000\n"),
    )
    .await;
    let addr = format!("127.0.0.1:{}", provider.port);
    let client = TestServiceClient::new(waypost_core::Channel::direct(&addr).unwrap()).unwrap();
    client.echo(0).await.unwrap();
    let post = |len: usize, extra: &str| {
        format!(
            "POST /TestService/echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {len}{extra}"
        )
    };

    // Declared too long: refused before the body is read, with no `100 Continue`.
    let started = Instant::now();
    let (status, _) = http_exchange(&addr, &post(100 << 20, "\r\nExpect: 100-continue"), b"").await;
    assert_eq!(status, 413, "a 100 MB declared length is refused");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once: {:?}",
        started.elapsed()
    );

    // A 15 MB string where a number belongs: a short 400.
    let string_arg = format!("[\"{}\"]", "A".repeat(15_000_000));
    let (status, body) = http_exchange(&addr, &post(string_arg.len(), ""), string_arg.as_bytes()).await;
    assert_eq!(status, 400);
    assert!(
        body.len() < 1024,
        "the 400 quotes the argument briefly: {} bytes",
        body.len()
    );
    drop(string_arg);

    // 30 parallel 15 MB objects whose value does not decode, under a 64 MiB budget.
    let (rss_before, _) = provider.memory_kib();
    let load = Load::start(&client, 2, Duration::from_millis(10));
    let object = {
        let mut o = String::from("{\"value\":[");
        o.push_str(&"0,".repeat(7_500_000));
        o.push_str("0]}");
        Arc::new(o)
    };
    let senders: Vec<_> = (0..30)
        .map(|_| {
            let (addr, object) = (addr.clone(), object.clone());
            let head = post(object.len(), "");
            tokio::spawn(async move { http_exchange(&addr, &head, object.as_bytes()).await })
        })
        .collect();
    for sender in senders {
        let (status, body) = sender.await.unwrap();
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
        assert!(body.len() < 1024, "a short 400: {} bytes", body.len());
    }
    let stats = load.stop().await;
    let (_, peak) = provider.memory_kib();
    let mib = |kib: u64| kib / 1024;
    let mut kept = 0;
    wait_until(Duration::from_secs(10), "the bodies' memory to come back", || {
        kept = mib(provider.memory_kib().0.saturating_sub(rss_before));
        async move { kept < 48 }
    })
    .await;
    stats.assert_none_failed();
    let grown = mib(peak.saturating_sub(rss_before));
    assert!(grown < 160, "the provider grew by {grown} MiB for a 64 MiB budget");
    report(
        "memory: 30 parallel 15 MB HTTP/JSON bodies that do not decode",
        serde_json::json!({
            "connections": 30, "body_mb": 15, "budget_mib": 64,
            "consumer_calls": stats.calls(), "consumer_failed": stats.failed(),
            "provider_rss_mib_before": mib(rss_before), "provider_rss_mib_peak": mib(peak),
            "provider_rss_mib_grown": grown, "provider_rss_mib_kept": kept,
            "before": "peak 412.6 MB (520.8 MB when the JSON does not decode), 233.9 MB kept",
        }),
    );
}

/// Streams whose reader stalls end after the stream idle timeout and free their call slots.
/// Before, 51 HTTP/2 connections of 199 `list_users` streams each, with an initial window of
/// 0, held `rpc_server_calls_in_flight` at 10,000 for 45 s (and with `max_concurrent_calls:
/// 50` one connection was enough): every other call got 429. Here one h2c connection opens 60
/// NDJSON streams with a window of 0, and then 50 RPC streams that are never read take every
/// slot: each time the well-behaved caller is refused until the stream idle timeout (5 s)
/// ends the stalled streams, then served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_whose_reader_stalls_end_and_free_their_slots() {
    use waypost_tests::feed::FeedClient;

    let provider = waypost_tests::process::ProviderProcess::start(
        test_provider(),
        &local_provider_yaml("    max_concurrent_calls: 50\n    stream_idle_timeout_ms: 5000\n"),
    )
    .await;
    let addr = format!("127.0.0.1:{}", provider.port);
    let channel = waypost_core::Channel::direct(&addr).unwrap();
    let client = TestServiceClient::new(channel.clone()).unwrap();
    client.echo(0).await.unwrap();
    let refused_then_served = |what: &'static str| {
        let client = client.clone();
        async move {
            let started = Instant::now();
            let refused = client.echo(1).await;
            assert!(
                matches!(refused, Err(waypost_core::RpcError::Overloaded)),
                "{what}: every slot is held at first: {refused:?}"
            );
            wait_until(
                Duration::from_secs(15),
                "the stalled streams to free their slots",
                || {
                    let client = client.clone();
                    async move { client.echo(2).await.is_ok() }
                },
            )
            .await;
            started.elapsed()
        }
    };

    // HTTP/2 with prior knowledge, a window of 0 for every stream.
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut h2, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let mut responses = Vec::new();
    for _ in 0..60 {
        h2 = h2.ready().await.unwrap();
        let request = http::Request::post(format!("http://{addr}/Feed/count"))
            .header("content-type", "application/json")
            .body(())
            .unwrap();
        let (response, mut body) = h2.send_request(request, false).unwrap();
        body.send_data(bytes::Bytes::from_static(b"[1000000, 0]"), true)
            .unwrap();
        responses.push(response);
    }
    // The head of the first 50 comes (200, NDJSON); the other 10 are refused (429).
    // Kept: a response dropped here would reset its stream.
    let mut heads = Vec::new();
    for response in responses {
        heads.push(
            tokio::time::timeout(Duration::from_secs(10), response)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let statuses: Vec<u16> = heads.iter().map(|r| r.status().as_u16()).collect();
    let admitted = statuses.iter().filter(|&&s| s == 200).count();
    assert_eq!(admitted, 50, "{statuses:?}");
    let http_freed_after = refused_then_served("HTTP/2").await;
    // The provider closed the connection.
    tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the stalled connection is closed")
        .unwrap()
        .ok();
    drop(heads);

    // RPC streams that are never read: the server sends what the first credit allows, then
    // waits for more.
    let feed = FeedClient::new(channel).unwrap();
    // Opened together, so that none stalls long before the last is open.
    let opening = (0..50).map(|_| feed.count(u64::MAX, 0));
    let mut unread: Vec<_> = futures_util::future::join_all(opening)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let rpc_freed_after = refused_then_served("RPC").await;
    // Every slot free again: 50 calls at once that each take 100 ms are all served, so every
    // unread stream has ended.
    wait_until(Duration::from_secs(10), "every unread stream to end", || {
        let client = client.clone();
        async move {
            let calls = (0..50).map(|n| client.sleep_echo(n, 100));
            futures_util::future::join_all(calls).await.iter().all(Result::is_ok)
        }
    })
    .await;
    // What the first credit allowed, then the end: the reader granted no more.
    let mut stream = unread.pop().unwrap();
    let mut end = None;
    while let Some(item) = futures_util::StreamExt::next(&mut stream).await {
        if let Err(e) = item {
            end = Some(e);
            break;
        }
    }
    assert!(
        matches!(end, Some(waypost_core::RpcError::Timeout(_))),
        "the stalled stream ended with a timeout: {end:?}"
    );
    report(
        "streams: readers that stall",
        serde_json::json!({
            "max_concurrent_calls": 50, "stream_idle_timeout_ms": 5000,
            "http2_streams_window_0": 60, "http2_admitted": admitted,
            "http2_slots_freed_after_ms": ms(http_freed_after),
            "rpc_streams_unread": 50, "rpc_slots_freed_after_ms": ms(rpc_freed_after),
            "before": "slots held for as long as the connections were (45 s and more); every other call 429",
        }),
    );
}
