//! End-to-end tests of the core RPC over real loopback TCP.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use waypost_core::client::{ClientOptions, ClusterInvoker, ConnectionPool};
use waypost_core::server::{RunningServer, ServerBuilder};
use waypost_core::{Channel, ErrorKind, RpcError, SerializerKind};
use waypost_tests::{wait_until, TestError, TestServiceClient, TestServiceImpl, TestServiceServer};

async fn start(builder: ServerBuilder) -> (RunningServer, String) {
    let server = builder.bind("127.0.0.1:0").await.expect("bind");
    let addr = server.local_addr().expect("addr").to_string();
    (server, addr)
}

async fn start_default() -> (RunningServer, String, TestServiceImpl) {
    let service = TestServiceImpl::default();
    let (server, addr) = start(ServerBuilder::new().add_service(TestServiceServer::new(service.clone()))).await;
    (server, addr, service)
}

/// A client over its own pool, so tests can look at the pool.
fn client_with_pool(addr: &str, options: ClientOptions) -> (TestServiceClient, Arc<ConnectionPool>) {
    let pool = Arc::new(ConnectionPool::new(options));
    let channel = Channel::new(Arc::new(ClusterInvoker::direct(addr, pool.clone()).unwrap()));
    (TestServiceClient::new(channel).unwrap(), pool)
}

#[tokio::test]
async fn typed_calls_with_every_serializer() {
    let (server, addr, service) = start_default().await;
    for kind in SerializerKind::ALL {
        let client = TestServiceClient::new(Channel::direct(&addr).unwrap().with_serializer(kind)).unwrap();
        assert_eq!(client.echo(u64::MAX).await.unwrap(), u64::MAX, "{kind}");
        assert_eq!(
            client.concat("x".into(), 7, vec![-1, 2], Some(true)).await.unwrap(),
            "x|7|[-1, 2]|Some(true)",
            "{kind}"
        );
        client.touch().await.unwrap();
        assert_eq!(client.fallible(0).await.unwrap(), vec!["fine".to_string()], "{kind}");
        match client.fallible(42).await {
            Err(RpcError::Application(TestError::Refused { code: 42 })) => {}
            other => panic!("{kind}: expected the typed application error, got {other:?}"),
        }
        assert_eq!(client.blob(100_000).await.unwrap().len(), 100_000, "{kind}");
    }
    assert_eq!(service.touched.load(Ordering::SeqCst), SerializerKind::ALL.len());
    server.shutdown().await;
}

#[tokio::test]
async fn ten_thousand_calls_from_a_hundred_tasks_share_one_connection() {
    let (server, addr, _) = start_default().await;
    let (client, pool) = client_with_pool(&addr, ClientOptions::default());
    let mut tasks = Vec::new();
    for task in 0..100u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100u64 {
                let value = task * 1_000 + i;
                // A varying delay makes replies come back out of order.
                let got = if i % 10 == 0 {
                    client.sleep_echo(value, (task + i) % 7).await
                } else {
                    client.echo(value).await
                };
                assert_eq!(got.expect("call"), value);
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(pool.live_connections(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_call_past_its_deadline_times_out_and_frees_its_slot() {
    let (server, addr, _) = start_default().await;
    let pool = Arc::new(ConnectionPool::new(ClientOptions::default()));
    let channel = Channel::new(Arc::new(ClusterInvoker::direct(&addr, pool.clone()).unwrap()));
    let client = TestServiceClient::new(channel.with_timeout(Duration::from_millis(100))).unwrap();
    let started = Instant::now();
    let err = client.sleep_echo(1, 5_000).await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(elapsed < Duration::from_secs(2), "timed out after {elapsed:?}");
    let conn = pool.get(&addr, None).await.unwrap();
    assert_eq!(conn.pending_calls(), 0, "the timed-out call left its slot behind");
    // The connection is still good for other calls.
    assert_eq!(client.echo(5).await.unwrap(), 5);
    // The server dropped the abandoned work at the deadline it was sent.
    wait_until(Duration::from_secs(3), "the server abandons the call", || {
        let n = server.calls_in_flight();
        async move { n == 0 }
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_panicking_handler_fails_only_its_own_call() {
    let (server, addr, _) = start_default().await;
    let client = TestServiceClient::new(Channel::direct(&addr).unwrap()).unwrap();
    let mut calls = Vec::new();
    for i in 0..50u64 {
        let client = client.clone();
        calls.push(tokio::spawn(async move { client.sleep_echo(i, 20).await }));
    }
    let err = client.explode("boom".into()).await.unwrap_err();
    match &err {
        RpcError::Internal { message, .. } => assert!(message.contains("boom"), "{message}"),
        other => panic!("expected a remote failure, got {other:?}"),
    }
    for (i, c) in calls.into_iter().enumerate() {
        assert_eq!(c.await.unwrap().unwrap(), i as u64);
    }
    assert_eq!(
        client.echo(9).await.unwrap(),
        9,
        "server keeps serving the same connection"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_killed_mid_call_fails_pending_calls_fast_and_the_next_call_reconnects() {
    let (server, addr, _) = start_default().await;
    let client = TestServiceClient::new(Channel::direct(&addr).unwrap().with_timeout(Duration::from_secs(30))).unwrap();
    assert_eq!(client.echo(1).await.unwrap(), 1);
    let pending: Vec<_> = (0..20u64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.sleep_echo(i, 20_000).await })
        })
        .collect();
    wait_until(Duration::from_secs(2), "all 20 calls are running on the server", || {
        let n = server.calls_in_flight();
        async move { n == 20 }
    })
    .await;
    let killed = Instant::now();
    drop(server); // aborts every task and closes every socket, as a crash would
    for p in pending {
        let err = p.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionClosed, "{err}");
    }
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "pending calls took {:?} to fail",
        killed.elapsed()
    );

    // Nothing listens now: a connect failure, promptly.
    let err = client.echo(2).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");

    // A server back on the same address is reached by the next call.
    let service = TestServiceImpl::default();
    let server = ServerBuilder::new()
        .add_service(TestServiceServer::new(service))
        .bind(&addr)
        .await
        .expect("rebind");
    assert_eq!(client.echo(3).await.unwrap(), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_calls_in_flight() {
    let service = TestServiceImpl::default();
    let (server, addr) = start(
        ServerBuilder::new()
            .add_service(TestServiceServer::new(service.clone()))
            .drain_timeout(Duration::from_secs(5)),
    )
    .await;
    let client = TestServiceClient::new(Channel::direct(&addr).unwrap()).unwrap();
    let in_flight: Vec<_> = (0..10u64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.sleep_echo(i, 300).await })
        })
        .collect();
    wait_until(Duration::from_secs(2), "all 10 calls run", || {
        let n = server.calls_in_flight();
        async move { n == 10 }
    })
    .await;
    let report = server.shutdown().await;
    assert!(report.drained);
    for (i, c) in in_flight.into_iter().enumerate() {
        assert_eq!(c.await.unwrap().unwrap(), i as u64);
    }
    assert_eq!(service.completed.load(Ordering::SeqCst), 10);
    let err = client.echo(1).await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Connect | ErrorKind::ConnectionClosed),
        "{err}"
    );
}

#[tokio::test]
async fn shutdown_refuses_new_calls_and_cancels_at_the_drain_timeout() {
    let (server, addr) = start(
        ServerBuilder::new()
            .add_service(TestServiceServer::new(TestServiceImpl::default()))
            .drain_timeout(Duration::from_millis(200)),
    )
    .await;
    let client = TestServiceClient::new(Channel::direct(&addr).unwrap().with_timeout(Duration::from_secs(30))).unwrap();
    assert_eq!(client.echo(0).await.unwrap(), 0);
    let stuck = {
        let client = client.clone();
        tokio::spawn(async move { client.sleep_echo(1, 60_000).await })
    };
    wait_until(Duration::from_secs(2), "the stuck call runs", || {
        let n = server.calls_in_flight();
        async move { n == 1 }
    })
    .await;
    let shutdown = tokio::spawn(server.shutdown());
    // While draining, the open connection gets refusals.
    wait_until(Duration::from_secs(2), "a new call is refused", || {
        let client = client.clone();
        async move { matches!(client.echo(1).await, Err(RpcError::ShuttingDown)) }
    })
    .await;
    let started = Instant::now();
    let report = shutdown.await.unwrap();
    assert!(!report.drained);
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = stuck.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionClosed, "{err}");
}

#[tokio::test]
async fn the_concurrency_limit_answers_overloaded() {
    let (server, addr) = start(
        ServerBuilder::new()
            .add_service(TestServiceServer::new(TestServiceImpl::default()))
            .max_concurrent_calls(2),
    )
    .await;
    let client = TestServiceClient::new(Channel::direct(&addr).unwrap()).unwrap();
    let slow: Vec<_> = (0..2u64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.sleep_echo(i, 500).await })
        })
        .collect();
    wait_until(Duration::from_secs(2), "both slots are taken", || {
        let n = server.calls_in_flight();
        async move { n == 2 }
    })
    .await;
    assert!(matches!(client.echo(3).await, Err(RpcError::Overloaded)));
    for s in slow {
        s.await.unwrap().unwrap();
    }
    assert_eq!(client.echo(4).await.unwrap(), 4, "slots are released");
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_service_and_method_are_told_apart() {
    #[waypost_core::service(name = "TestService", version = "1.0")]
    trait NewerTestService {
        async fn echo(&self, value: u64) -> u64;
        async fn brand_new(&self) -> u64;
    }
    #[waypost_core::service(name = "Absent")]
    trait Absent {
        async fn anything(&self) -> u64;
    }
    let (server, addr, _) = start_default().await;
    let newer = NewerTestServiceClient::new(Channel::direct(&addr).unwrap()).unwrap();
    assert_eq!(newer.echo(8).await.unwrap(), 8);
    match newer.brand_new().await {
        Err(RpcError::MethodNotFound { service, method }) => {
            assert_eq!((service.as_str(), method.as_str()), ("TestService:1.0", "brand_new"));
        }
        other => panic!("expected method not found, got {other:?}"),
    }
    match AbsentClient::new(Channel::direct(&addr).unwrap())
        .unwrap()
        .anything()
        .await
    {
        Err(RpcError::ServiceNotFound(key)) => assert_eq!(key, "Absent:1.0"),
        other => panic!("expected service not found, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn an_unanswered_ping_closes_the_connection_and_fails_pending_calls() {
    // A peer that accepts and reads but never answers anything.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let silent = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut sink = vec![0u8; 4096];
        while sock.read(&mut sink).await.map(|n| n > 0).unwrap_or(false) {}
    });
    let options = ClientOptions {
        keepalive_interval: Duration::from_millis(100),
        keepalive_timeout: Duration::from_millis(200),
        ..ClientOptions::default()
    };
    let (client, _) = client_with_pool(&addr, options);
    let client = client.with_timeout(Duration::from_secs(30));
    let started = Instant::now();
    let err = client.echo(1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionClosed, "{err}");
    assert!(err.to_string().contains("ping"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    silent.abort();
}

#[tokio::test]
async fn pongs_keep_an_idle_connection_open() {
    let (server, addr, _) = start_default().await;
    let options = ClientOptions {
        keepalive_interval: Duration::from_millis(30),
        keepalive_timeout: Duration::from_millis(100),
        ..ClientOptions::default()
    };
    let (client, pool) = client_with_pool(&addr, options);
    assert_eq!(client.echo(1).await.unwrap(), 1);
    let conn = pool.get(&addr, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await; // many ping intervals, idle
    assert!(
        !conn.is_closed(),
        "idle connection was closed although the server answers pings"
    );
    assert_eq!(client.echo(2).await.unwrap(), 2);
    let again = pool.get(&addr, None).await.unwrap();
    assert!(Arc::ptr_eq(&conn, &again), "connection was replaced");
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_closes_only_the_offending_connection() {
    use waypost_core::protocol::{FrameDecoder, Status};

    let (server, addr, _) = start_default().await;
    let client = TestServiceClient::new(Channel::direct(&addr).unwrap()).unwrap();
    assert_eq!(client.echo(1).await.unwrap(), 1);
    let hostile: [&[u8]; 3] = [
        // neither the protocol nor HTTP (a TLS record header, then text)
        b"\x16\x03\x01 GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        // right magic and version, a 4 GiB body announced
        &[
            0x52, 0x50, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
        ],
        // right magic, a version from the future
        &[
            0x52, 0x50, 9, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    ];
    for bytes in hostile {
        let mut sock = TcpStream::connect(&addr).await.unwrap();
        sock.write_all(bytes).await.unwrap();
        let mut answer = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut answer)).await;
        assert!(closed.is_ok(), "server did not close");
        if bytes[2] == 9 {
            // The newer peer is told, in version 2, which version this server speaks.
            let mut buf = bytes::BytesMut::from(&answer[..]);
            let frame = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
            assert_eq!(frame.header.status, Status::UnsupportedVersion);
        } else {
            assert!(answer.is_empty(), "{answer:?}");
        }
        assert_eq!(client.echo(2).await.unwrap(), 2, "the good client keeps working");
    }
    // HTTP is answered (the HTTP/JSON ingress), not taken for garbage.
    let mut sock = TcpStream::connect(&addr).await.unwrap();
    sock.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), sock.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    server.shutdown().await;
}

#[tokio::test]
async fn one_server_answers_each_client_in_its_own_serializer() {
    let (server, addr, _) = start_default().await;
    let mut calls = Vec::new();
    for kind in SerializerKind::ALL {
        let client = TestServiceClient::new(Channel::direct(&addr).unwrap().with_serializer(kind)).unwrap();
        calls.push(tokio::spawn(async move {
            for i in 0..200u64 {
                assert_eq!(client.echo(i).await.unwrap(), i);
            }
        }));
    }
    for c in calls {
        c.await.unwrap();
    }
    server.shutdown().await;
}

/// Byte vectors travel as one byte string; a declaration the macro does not recognize as
/// `Vec<u8>` (an alias) encodes them per element, and the two interoperate.
mod byte_vectors {
    use super::*;

    /// What the macro sees as some other type: encoded element by element.
    type Plain = Vec<u8>;

    #[waypost_core::service(name = "Bytes", version = "1.0")]
    pub trait Fast {
        async fn echo(&self, data: Vec<u8>, tag: String) -> Vec<u8>;
        async fn checked(&self, data: std::vec::Vec<u8>) -> Result<Vec<u8>, String>;
    }

    #[waypost_core::service(name = "Bytes", version = "1.0")]
    pub trait Slow {
        async fn echo(&self, data: Plain, tag: String) -> Plain;
        async fn checked(&self, data: Plain) -> Result<Plain, String>;
    }

    struct FastImpl;

    impl Fast for FastImpl {
        async fn echo(&self, mut data: Vec<u8>, tag: String) -> Vec<u8> {
            data.extend_from_slice(tag.as_bytes());
            data
        }

        async fn checked(&self, data: Vec<u8>) -> Result<Vec<u8>, String> {
            if data.is_empty() {
                Err("empty".to_owned())
            } else {
                Ok(data.into_iter().rev().collect())
            }
        }
    }

    struct SlowImpl;

    impl Slow for SlowImpl {
        async fn echo(&self, data: Plain, tag: String) -> Plain {
            FastImpl.echo(data, tag).await
        }

        async fn checked(&self, data: Plain) -> Result<Plain, String> {
            FastImpl.checked(data).await
        }
    }

    /// Holds every call long enough for all of a burst to be in flight at once, however
    /// slowly the machine runs the callers.
    #[waypost_core::service(name = "Held", version = "1.0")]
    pub trait Held {
        async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
    }

    struct HeldImpl;

    impl Held for HeldImpl {
        async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
            tokio::time::sleep(Duration::from_millis(300)).await;
            data
        }
    }

    /// Connections the pool opened to `addr` for `calls` concurrent echoes of `size` bytes.
    async fn connections_for(addr: &str, max: usize, calls: usize, size: usize) -> usize {
        let options = ClientOptions {
            max_connections_per_endpoint: max,
            ..ClientOptions::default()
        };
        let pool = Arc::new(ConnectionPool::new(options));
        let channel = Channel::new(Arc::new(ClusterInvoker::direct(addr, pool.clone()).unwrap()));
        let client = HeldClient::new(channel).unwrap();
        let payload = vec![7u8; size];
        let calls: Vec<_> = (0..calls)
            .map(|_| {
                let (client, payload) = (client.clone(), payload.clone());
                tokio::spawn(async move { client.echo(payload).await.unwrap().len() })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap(), size);
        }
        pool.endpoint(addr).connection_count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_payloads_spread_over_more_connections_small_ones_share_one() {
        let (server, addr) = start(ServerBuilder::new().add_service(HeldServer::new(HeldImpl))).await;
        assert_eq!(
            connections_for(&addr, 4, 64, 512).await,
            1,
            "32 KiB in flight fit one connection"
        );
        let spread = connections_for(&addr, 4, 64, 256 * 1024).await;
        assert!((2..=4).contains(&spread), "16 MiB in flight: {spread} connections");
        assert_eq!(connections_for(&addr, 1, 64, 256 * 1024).await, 1, "the limit holds");
        server.shutdown().await;
    }

    /// `Bytes` arguments and results: large ones are shared with the frame, not copied.
    #[waypost_core::service(name = "Shared", version = "1.0")]
    pub trait Shared {
        async fn echo(&self, data: bytes::Bytes) -> bytes::Bytes;
        async fn concat(&self, a: Vec<u8>, b: Bytes) -> Vec<u8>;
        /// How many bytes lie between the end of `a` and the start of `b` in the handler's
        /// memory (`u64::MAX` when `b` is not after `a`).
        async fn gap(&self, a: Bytes, b: Bytes) -> u64;
    }

    use bytes::Bytes;

    struct SharedImpl;

    impl Shared for SharedImpl {
        async fn echo(&self, data: Bytes) -> Bytes {
            data
        }

        async fn concat(&self, mut a: Vec<u8>, b: Bytes) -> Vec<u8> {
            a.extend_from_slice(&b);
            a
        }

        async fn gap(&self, a: Bytes, b: Bytes) -> u64 {
            let end_of_a = a.as_ptr() as usize + a.len();
            (b.as_ptr() as usize)
                .checked_sub(end_of_a)
                .map_or(u64::MAX, |gap| gap as u64)
        }
    }

    #[tokio::test]
    async fn bytes_round_trip_at_every_size_and_large_ones_arrive_in_the_frame() {
        let (server, addr) = start(ServerBuilder::new().add_service(SharedServer::new(SharedImpl))).await;
        let payload = |len: usize, seed: usize| -> Vec<u8> { (0..len).map(|i| ((i * 7 + seed) % 251) as u8).collect() };
        // Around the 16 KiB sharing threshold, the pooled bodies and the mapped ones (> 2 MiB).
        let sizes = [0usize, 1, 16 * 1024 - 1, 16 * 1024, 100_000, 2_100_000];
        for kind in SerializerKind::ALL {
            // The subject is the bytes, not the time: a 2 MiB round trip of a debug build on a
            // loaded machine may outlast the default deadline.
            let channel = Channel::direct(&addr)
                .unwrap()
                .with_serializer(kind)
                .with_timeout(Duration::from_secs(30));
            let client = SharedClient::new(channel).unwrap();
            for (i, &len) in sizes.iter().enumerate() {
                let data = payload(len, i);
                assert_eq!(
                    client.echo(Bytes::from(data.clone())).await.unwrap(),
                    data,
                    "{kind} {len}"
                );
                let other = payload(sizes[sizes.len() - 1 - i] / 2, i + 1);
                let mut joined = data.clone();
                joined.extend_from_slice(&other);
                assert_eq!(
                    client.concat(data, Bytes::from(other)).await.unwrap(),
                    joined,
                    "{kind} {len}"
                );
            }
            let gap = client
                .gap(Bytes::from(payload(100_000, 1)), Bytes::from(payload(100_000, 2)))
                .await
                .unwrap();
            if kind != SerializerKind::Json {
                // Only `b`'s length prefix (at most 9 bytes) between them: both are slices of
                // the one frame that carried them.
                assert!(gap <= 9, "{kind}: {gap} bytes apart");
            }
        }
        server.shutdown().await;
    }

    #[tokio::test]
    async fn byte_vectors_round_trip_and_interoperate_with_per_element_peers() {
        let (fast, fast_addr) = start(ServerBuilder::new().add_service(FastServer::new(FastImpl))).await;
        let (slow, slow_addr) = start(ServerBuilder::new().add_service(SlowServer::new(SlowImpl))).await;
        let payload: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
        let mut expected = payload.clone();
        expected.extend_from_slice(b"-t");
        for kind in SerializerKind::ALL {
            for addr in [&fast_addr, &slow_addr] {
                let fast_client = FastClient::new(Channel::direct(addr).unwrap().with_serializer(kind)).unwrap();
                let slow_client = SlowClient::new(Channel::direct(addr).unwrap().with_serializer(kind)).unwrap();
                assert_eq!(
                    fast_client.echo(payload.clone(), "-t".into()).await.unwrap(),
                    expected,
                    "{kind}"
                );
                assert_eq!(
                    slow_client.echo(payload.clone(), "-t".into()).await.unwrap(),
                    expected,
                    "{kind}"
                );
                assert_eq!(
                    fast_client.checked(vec![1, 2, 3]).await.unwrap(),
                    vec![3, 2, 1],
                    "{kind}"
                );
                assert_eq!(
                    slow_client.checked(vec![1, 2, 3]).await.unwrap(),
                    vec![3, 2, 1],
                    "{kind}"
                );
                assert!(
                    matches!(fast_client.checked(Vec::new()).await, Err(RpcError::Application(e)) if e == "empty"),
                    "{kind}"
                );
                assert_eq!(
                    fast_client.echo(Vec::new(), String::new()).await.unwrap(),
                    Vec::<u8>::new()
                );
            }
        }
        fast.shutdown().await;
        slow.shutdown().await;
    }
}
