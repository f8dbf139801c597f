//! The call context over real TCP: metadata, deadlines and traces across two hops;
//! cancellation (deadline, dropped future, closed connection); metadata limits; user layers
//! on both sides; GoAway; and peers of another protocol version.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use waypost_core::client::{ClientOptions, ClusterInvoker, ConnectionPool};
use waypost_core::context::{self, MetadataLimits, Side};
use waypost_core::interceptor::{Interceptor, Outcome};
use waypost_core::server::{RunningServer, ServerBuilder};
use waypost_core::{Channel, ErrorKind, ProtocolError, RpcError};
use waypost_tests::load::{ms, report};
use waypost_tests::wait_until;

/// What a handler saw of its call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    service: String,
    method: String,
    tenant: Option<String>,
    from_client_layer: Option<String>,
    remaining_ms: Option<u64>,
    trace_id: Option<String>,
    span_id: Option<String>,
    parent_span_id: Option<String>,
    peer_known: bool,
}

impl Seen {
    fn now() -> Self {
        let ctx = context::current();
        assert_eq!(ctx.side(), Side::Server);
        Self {
            service: ctx.service().to_owned(),
            method: ctx.method().to_owned(),
            tenant: ctx.metadata().get("tenant").map(str::to_owned),
            from_client_layer: ctx.metadata().get("x-client-layer").map(str::to_owned),
            remaining_ms: ctx.remaining().map(|d| d.as_millis() as u64),
            trace_id: ctx.trace().map(|t| t.trace_id().to_string()),
            span_id: ctx.trace().map(|t| t.span_id().to_string()),
            parent_span_id: ctx.trace().and_then(|t| t.parent_span_id()).map(|s| s.to_string()),
            peer_known: ctx.peer().is_some(),
        }
    }
}

#[waypost_core::service(name = "Back", version = "1.0")]
pub trait Back {
    /// What the handler saw.
    async fn inspect(&self) -> Seen;
    /// Holds for `ms` milliseconds, then returns them.
    async fn hold(&self, ms: u64) -> u64;
}

#[waypost_core::service(name = "Front", version = "1.0")]
pub trait Front {
    /// What the front handler saw, and what the back handler saw of the call the front made.
    async fn relay(&self) -> (Seen, Seen);
}

/// Tells the test when a `hold` handler starts, and when its future is dropped before the end.
#[derive(Clone)]
struct Probe {
    started: mpsc::UnboundedSender<()>,
    dropped: mpsc::UnboundedSender<Instant>,
    completed: Arc<AtomicUsize>,
    ran: Arc<AtomicUsize>,
}

struct DropSignal {
    dropped: mpsc::UnboundedSender<Instant>,
    armed: bool,
}

impl Drop for DropSignal {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.dropped.send(Instant::now());
        }
    }
}

#[derive(Clone)]
struct BackImpl {
    probe: Probe,
}

impl Back for BackImpl {
    async fn inspect(&self) -> Seen {
        self.probe.ran.fetch_add(1, Ordering::SeqCst);
        Seen::now()
    }

    async fn hold(&self, ms: u64) -> u64 {
        self.probe.ran.fetch_add(1, Ordering::SeqCst);
        let mut signal = DropSignal {
            dropped: self.probe.dropped.clone(),
            armed: true,
        };
        let _ = self.probe.started.send(());
        tokio::time::sleep(Duration::from_millis(ms)).await;
        signal.armed = false;
        self.probe.completed.fetch_add(1, Ordering::SeqCst);
        ms
    }
}

struct FrontImpl {
    back: BackClient,
}

impl Front for FrontImpl {
    async fn relay(&self) -> (Seen, Seen) {
        let me = Seen::now();
        let back = self.back.inspect().await.expect("the back call");
        (me, back)
    }
}

struct Fixture {
    back: RunningServer,
    back_addr: String,
    probe: Probe,
    started: mpsc::UnboundedReceiver<()>,
    dropped: mpsc::UnboundedReceiver<Instant>,
}

async fn back_server(builder: ServerBuilder) -> Fixture {
    let (started_tx, started) = mpsc::unbounded_channel();
    let (dropped_tx, dropped) = mpsc::unbounded_channel();
    let probe = Probe {
        started: started_tx,
        dropped: dropped_tx,
        completed: Arc::default(),
        ran: Arc::default(),
    };
    let back = builder
        .add_service(BackServer::new(BackImpl { probe: probe.clone() }))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let back_addr = back.local_addr().unwrap().to_string();
    Fixture {
        back,
        back_addr,
        probe,
        started,
        dropped,
    }
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn metadata_deadline_and_trace_follow_a_call_across_two_hops() {
    let fx = back_server(ServerBuilder::new()).await;
    // The front's own client to the back has a long timeout: the inherited deadline must win.
    let outgoing = OutgoingTraces::default();
    let back_client = BackClient::new(
        Channel::direct(&fx.back_addr)
            .unwrap()
            .with_timeout(Duration::from_secs(30))
            .with_interceptor(outgoing.clone()),
    )
    .unwrap();
    let front = ServerBuilder::new()
        .add_service(FrontServer::new(FrontImpl { back: back_client }))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let first_call = OutgoingTraces::default();
    let client = FrontClient::new(
        Channel::direct(front.local_addr().unwrap().to_string())
            .unwrap()
            .with_timeout(Duration::from_millis(800))
            .with_interceptor(first_call.clone()),
    )
    .unwrap()
    .with_metadata("tenant", "acme")
    .with_metadata("traceparent", TRACEPARENT);

    let (front_seen, back_seen) = client.relay().await.unwrap();

    assert_eq!(
        (front_seen.service.as_str(), front_seen.method.as_str()),
        ("Front:1.0", "relay")
    );
    assert_eq!(
        (back_seen.service.as_str(), back_seen.method.as_str()),
        ("Back:1.0", "inspect")
    );
    assert_eq!(front_seen.tenant.as_deref(), Some("acme"), "metadata round-trips");
    assert_eq!(back_seen.tenant, None, "metadata belongs to one hop");
    assert!(front_seen.peer_known && back_seen.peer_known);
    let front_left = front_seen.remaining_ms.unwrap();
    let back_left = back_seen.remaining_ms.unwrap();
    assert!(front_left <= 800, "{front_left}");
    assert!(
        back_left <= front_left,
        "the back call's deadline ({back_left} ms left) is no later than the front call's ({front_left} ms left)"
    );
    assert_eq!(front_seen.trace_id.as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    // caller's span (from the metadata) -> the client's span of the call -> front server span
    let (first_span, first_parent) = first_call.0.lock().unwrap()[0].clone();
    assert_eq!(
        first_parent.as_deref(),
        Some("00f067aa0ba902b7"),
        "the call continues the given trace"
    );
    assert_eq!(front_seen.parent_span_id, Some(first_span));
    assert_eq!(back_seen.trace_id, front_seen.trace_id, "one trace across both hops");
    // front server span -> the front's client span for the back call -> back server span
    let (client_span, client_parent) = outgoing.0.lock().unwrap()[0].clone();
    assert_eq!(
        client_parent, front_seen.span_id,
        "the outgoing call is the front span's child"
    );
    assert_eq!(
        back_seen.parent_span_id,
        Some(client_span),
        "the back span is the outgoing call's child"
    );
    front.shutdown().await;
    fx.back.shutdown().await;
}

#[tokio::test]
async fn a_call_that_times_out_has_its_handler_dropped_on_the_server() {
    let mut fx = back_server(ServerBuilder::new()).await;
    let client = BackClient::new(
        Channel::direct(&fx.back_addr)
            .unwrap()
            .with_timeout(Duration::from_millis(50)),
    )
    .unwrap();
    let error = client.hold(2000).await.unwrap_err();
    let gave_up = Instant::now();
    assert_eq!(error.kind(), ErrorKind::Timeout);
    let dropped = tokio::time::timeout(Duration::from_secs(2), fx.dropped.recv())
        .await
        .expect("the handler was dropped")
        .unwrap();
    let lag = dropped.saturating_duration_since(gave_up);
    assert!(
        lag < Duration::from_millis(100),
        "handler dropped {lag:?} after the client gave up"
    );
    fx.started.try_recv().unwrap();
    assert_eq!(
        fx.probe.completed.load(Ordering::SeqCst),
        0,
        "the handler never completed"
    );
    fx.back.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_call_is_cancelled_on_the_server_and_frees_its_permit() {
    // Few permits: a cancelled call that kept its permit would soon make every call overloaded.
    let mut fx = back_server(ServerBuilder::new().max_concurrent_calls(4)).await;
    let client = BackClient::new(
        Channel::direct(&fx.back_addr)
            .unwrap()
            .with_timeout(Duration::from_secs(30)),
    )
    .unwrap();
    let rounds = 1000;
    let mut lags = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let mut call = Box::pin(client.hold(10_000));
        tokio::select! {
            outcome = &mut call => panic!("the call ended: {outcome:?}"),
            started = fx.started.recv() => started.unwrap(),
        }
        // The caller stops waiting: its future is dropped.
        drop(call);
        let gave_up = Instant::now();
        let dropped = tokio::time::timeout(Duration::from_secs(5), fx.dropped.recv())
            .await
            .expect("the handler was dropped after its caller left")
            .unwrap();
        lags.push(dropped.saturating_duration_since(gave_up));
    }
    lags.sort_unstable();
    let p50 = lags[rounds / 2];
    let p99 = lags[rounds * 99 / 100];
    assert_eq!(fx.probe.completed.load(Ordering::SeqCst), 0);
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");
    // The permits came back: a short call runs.
    assert_eq!(client.hold(1).await.unwrap(), 1);
    report(
        "cancellation: caller gives up -> handler dropped on the server (loopback)",
        serde_json::json!({"cancelled_calls": rounds, "p50_us": p50.as_micros() as u64,
            "p99_us": p99.as_micros() as u64, "max_us": lags[rounds - 1].as_micros() as u64,
            "handlers_completed": 0}),
    );
    fx.back.shutdown().await;
}

#[tokio::test]
async fn a_closed_connection_drops_its_running_calls() {
    use waypost_core::context::Metadata;
    use waypost_core::protocol::{encode_frame, encode_request_body, Header, MessageType};
    use waypost_core::SerializerKind;

    let mut fx = back_server(ServerBuilder::new()).await;
    let body = encode_request_body(
        "Back:1.0",
        "hold",
        &Metadata::new(),
        SerializerKind::Bincode,
        &(60_000u64,),
    )
    .unwrap();
    let mut header = Header::new(MessageType::Request, 1);
    header.serializer = SerializerKind::Bincode.id();
    let mut frame = bytes::BytesMut::new();
    encode_frame(header, &body.as_one(), &mut frame);
    let mut sock = TcpStream::connect(&fx.back_addr).await.unwrap();
    sock.write_all(&frame).await.unwrap();
    fx.started.recv().await.unwrap();
    drop(sock);
    tokio::time::timeout(Duration::from_secs(2), fx.dropped.recv())
        .await
        .expect("the handler was dropped when its caller's connection closed")
        .unwrap();
    wait_until(Duration::from_secs(2), "no call is in flight", || {
        let n = fx.back.calls_in_flight();
        async move { n == 0 }
    })
    .await;
    fx.back.shutdown().await;
}

#[tokio::test]
async fn metadata_over_the_limits_is_refused_with_a_clear_error() {
    let fx = back_server(ServerBuilder::new()).await;
    let many: Vec<(String, String)> = (0..65).map(|i| (format!("k{i}"), "v".to_owned())).collect();

    // The client refuses to send it.
    let client = BackClient::new(Channel::direct(&fx.back_addr).unwrap()).unwrap();
    match client.with_metadata_map(many.clone()).inspect().await {
        Err(RpcError::InvalidMetadata(message)) => {
            assert_eq!(
                message,
                "66 entries exceed the limit of 64 (counting the traceparent every call carries)"
            )
        }
        other => panic!("{other:?}"),
    }
    match client.with_metadata("Tenant", "x").inspect().await {
        Err(RpcError::InvalidMetadata(message)) => assert!(message.contains("\"Tenant\""), "{message}"),
        other => panic!("{other:?}"),
    }

    // A client with looser limits sends it; the server refuses the call, not the connection.
    let loose = ClientOptions {
        metadata_limits: MetadataLimits {
            max_entries: 1000,
            max_bytes: 1 << 20,
        },
        ..ClientOptions::default()
    };
    let client = BackClient::new(Channel::direct_with(&fx.back_addr, loose).unwrap()).unwrap();
    match client.with_metadata_map(many).inspect().await {
        Err(RpcError::InvalidMetadata(message)) => {
            // 65 entries and the traceparent.
            assert_eq!(message, "server: metadata entries of 66 exceeds the limit of 64")
        }
        other => panic!("{other:?}"),
    }
    let big = "x".repeat(20_000);
    match client.with_metadata("big", big).inspect().await {
        Err(RpcError::InvalidMetadata(message)) => assert!(message.contains("bytes"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        fx.probe.ran.load(Ordering::SeqCst),
        0,
        "no refused call reached the handler"
    );
    assert_eq!(
        client.inspect().await.unwrap().method,
        "inspect",
        "the connection still serves"
    );
    fx.back.shutdown().await;
}

/// One record per hook call of a [`Recorder`].
type Records = Arc<Mutex<Vec<(Side, String, String, Option<String>, Option<Outcome>)>>>;

/// A user's layer: records what it sees; on the server it refuses calls carrying `deny`; on
/// the client it adds a metadata entry.
struct Recorder {
    records: Records,
}

impl Interceptor for Recorder {
    fn on_request(&self, ctx: &mut context::CallContext) -> Result<(), RpcError> {
        self.records.lock().unwrap().push((
            ctx.side(),
            ctx.service().to_owned(),
            ctx.method().to_owned(),
            ctx.metadata().get("tenant").map(str::to_owned),
            None,
        ));
        match ctx.side() {
            Side::Client => ctx.metadata_mut().insert("x-client-layer", "seen"),
            _ if ctx.metadata().get("deny").is_some() => {
                return Err(RpcError::PermissionDenied("tenant may not call".into()))
            }
            _ => {}
        }
        Ok(())
    }

    fn on_response(&self, ctx: &context::CallContext, outcome: Outcome) {
        self.records.lock().unwrap().push((
            ctx.side(),
            ctx.service().to_owned(),
            ctx.method().to_owned(),
            ctx.metadata().get("tenant").map(str::to_owned),
            Some(outcome),
        ));
    }
}

/// A span id and its parent's, as hex.
type SpanLink = (String, Option<String>);

/// Records the trace position of every outgoing call (a client layer).
#[derive(Clone, Default)]
struct OutgoingTraces(Arc<Mutex<Vec<SpanLink>>>);

impl Interceptor for OutgoingTraces {
    fn on_request(&self, ctx: &mut context::CallContext) -> Result<(), RpcError> {
        let trace = ctx.trace().expect("an outgoing call from a traced handler is traced");
        self.0.lock().unwrap().push((
            trace.span_id().to_string(),
            trace.parent_span_id().map(|s| s.to_string()),
        ));
        Ok(())
    }
}

/// A layer that does nothing, stacked to check nesting.
struct Nothing;
impl Interceptor for Nothing {}

#[tokio::test]
async fn user_layers_see_every_call_and_its_outcome_on_both_sides() {
    let server_records = Records::default();
    let client_records = Records::default();
    let mut fx = back_server(ServerBuilder::new().interceptor(Nothing).interceptor(Recorder {
        records: server_records.clone(),
    }))
    .await;
    let policies = waypost_core::config::RpcConfig::from_yaml(
        "rpc:\n  consumer:\n    retry: { strategy: fixed_interval, max_attempts: 3, base_delay_ms: 1 }\n",
    )
    .unwrap();
    let channel = Channel::direct(&fx.back_addr)
        .unwrap()
        .with_policies(Arc::new(waypost_core::fault::PolicySet::new(policies.consumer)))
        .with_interceptor(Recorder {
            records: client_records.clone(),
        })
        .with_timeout(Duration::from_millis(300));
    let client = BackClient::new(channel).unwrap().with_metadata("tenant", "acme");

    let seen = client.inspect().await.unwrap();
    assert_eq!(
        seen.from_client_layer.as_deref(),
        Some("seen"),
        "the client layer's metadata arrived"
    );
    assert_eq!(client.hold(1).await.unwrap(), 1);
    fx.started.recv().await.unwrap();
    let ran_before = fx.probe.ran.load(Ordering::SeqCst);
    let denied = client.with_metadata("deny", "1").inspect().await.unwrap_err();
    assert!(
        matches!(&denied, RpcError::PermissionDenied(m) if m == "tenant may not call"),
        "{denied:?}"
    );
    assert_eq!(
        fx.probe.ran.load(Ordering::SeqCst),
        ran_before,
        "a refused call never reaches the handler"
    );
    assert_eq!(client.hold(5000).await.unwrap_err().kind(), ErrorKind::Timeout);
    fx.started.recv().await.unwrap();
    fx.dropped.recv().await.unwrap();

    let outcomes = |records: &Records, side: Side| -> Vec<(String, Option<String>, Outcome)> {
        records
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.0 == side && r.4.is_some())
            .map(|r| {
                assert_eq!(r.1, "Back:1.0");
                (r.2.clone(), r.3.clone(), r.4.unwrap())
            })
            .collect()
    };
    let acme = || Some("acme".to_owned());
    // The refused call was tried once: refusals are never retried.
    assert_eq!(
        outcomes(&client_records, Side::Client),
        vec![
            ("inspect".to_owned(), acme(), Outcome::Ok),
            ("hold".to_owned(), acme(), Outcome::Ok),
            (
                "inspect".to_owned(),
                acme(),
                Outcome::Error(ErrorKind::PermissionDenied)
            ),
            ("hold".to_owned(), acme(), Outcome::Error(ErrorKind::Timeout)),
        ]
    );
    wait_until(
        Duration::from_secs(2),
        "the server layer saw the timed-out call end",
        || {
            let n = outcomes(&server_records, Side::Server).len();
            async move { n == 4 }
        },
    )
    .await;
    let server = outcomes(&server_records, Side::Server);
    assert_eq!(server[0], ("inspect".to_owned(), acme(), Outcome::Ok));
    assert_eq!(server[1], ("hold".to_owned(), acme(), Outcome::Ok));
    assert_eq!(
        server[2],
        (
            "inspect".to_owned(),
            acme(),
            Outcome::Error(ErrorKind::PermissionDenied)
        )
    );
    // The server dropped the timed-out call at its deadline (or on the client's Cancel).
    assert!(
        matches!(server[3].2, Outcome::Error(ErrorKind::Timeout) | Outcome::Cancelled),
        "{:?}",
        server[3]
    );
    let requests = server_records.lock().unwrap().iter().filter(|r| r.4.is_none()).count();
    assert_eq!(requests, 4, "one on_request per call: the refused call was not retried");
    fx.back.shutdown().await;
}

#[tokio::test]
async fn a_version_1_client_is_told_which_version_the_server_speaks() {
    let fx = back_server(ServerBuilder::new()).await;
    // A version-1 request, as a version-1 client writes it: a 22-byte header, then the
    // service key and method name.
    let mut request = vec![0x52, 0x50, 1, 1, 1, 0];
    request.extend_from_slice(&42u64.to_be_bytes());
    request.extend_from_slice(&1000u32.to_be_bytes());
    let body: Vec<u8> = [&[0u8, 8][..], b"Back:1.0", &[0, 7], b"inspect"].concat();
    request.extend_from_slice(&(body.len() as u32).to_be_bytes());
    request.extend_from_slice(&body);
    let mut sock = TcpStream::connect(&fx.back_addr).await.unwrap();
    sock.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .unwrap();
    // A version-1 response to request 42 with status 10 (protocol error), readable by v1.
    assert_eq!(&answer[0..4], &[0x52, 0x50, 1, 2]);
    assert_eq!(answer[5], 10);
    assert_eq!(&answer[6..14], &42u64.to_be_bytes());
    let message = std::str::from_utf8(&answer[22..]).unwrap();
    assert!(
        message.contains("protocol version 2") && message.contains("version 1"),
        "{message}"
    );
    fx.back.shutdown().await;
}

#[tokio::test]
async fn a_version_2_client_reports_a_version_1_server_clearly() {
    // A version-1 server closes a connection whose first frame has another version, without
    // answering; some other old peer might answer in its own version instead.
    for answers in [false, true] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let old_server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 512];
            let n = sock.read(&mut head).await.unwrap();
            assert!(n >= 3 && head[2] == 2, "the client speaks version 2");
            if answers {
                let mut v1 = vec![0x52, 0x50, 1, 2, 1, 10];
                v1.extend_from_slice(&1u64.to_be_bytes());
                v1.extend_from_slice(&[0; 8]);
                sock.write_all(&v1).await.unwrap();
            }
        });
        let client = BackClient::new(Channel::direct(&addr).unwrap()).unwrap();
        let error = client.inspect().await.unwrap_err();
        let text = error.to_string();
        if answers {
            assert!(
                matches!(&error, RpcError::Protocol(ProtocolError::VersionRejected(_))),
                "{error:?}"
            );
            assert!(text.contains("version 1") && text.contains("version 2"), "{text}");
        } else {
            assert_eq!(error.kind(), ErrorKind::ConnectionClosed, "{error:?}");
            assert!(text.contains("another protocol version"), "{text}");
        }
        old_server.await.unwrap();
    }
}

#[tokio::test]
async fn go_away_sends_new_calls_elsewhere_and_lets_calls_in_flight_finish() {
    let mut fx = back_server(ServerBuilder::new()).await;
    let pool = Arc::new(ConnectionPool::new(ClientOptions::default()));
    let channel = Channel::new(Arc::new(ClusterInvoker::direct(&fx.back_addr, pool.clone()).unwrap()));
    let client = BackClient::new(channel.with_timeout(Duration::from_secs(10))).unwrap();
    let conn = pool.get(&fx.back_addr, None).await.unwrap();
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.hold(300).await }
    });
    fx.started.recv().await.unwrap();
    let shutdown = tokio::spawn(fx.back.shutdown());
    wait_until(Duration::from_secs(2), "the client got GoAway", || {
        let going = conn.is_going_away();
        async move { going }
    })
    .await;
    assert!(!conn.accepts_calls(), "no new calls on a connection told to go away");
    assert_eq!(in_flight.await.unwrap().unwrap(), 300, "the call in flight completed");
    wait_until(Duration::from_secs(2), "the drained connection closed", || {
        let closed = conn.is_closed();
        async move { closed }
    })
    .await;
    assert!(shutdown.await.unwrap().drained);
    let started = Instant::now();
    // The next call opens a new connection, which the stopped server refuses.
    assert_eq!(client.inspect().await.unwrap_err().kind(), ErrorKind::Connect);
    assert!(ms(started.elapsed()) < 5000);
}
