//! Streaming calls over real TCP (and TLS): the three shapes, back-pressure, cancellation
//! each way, deadline and idle timeout, a typed error mid-stream, shutdown during a stream,
//! a provider process killed mid-stream, and what a peer that cannot stream answers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;
use waypost_core::client::{ClientOptions, StreamSettings};
use waypost_core::config::{ClientTlsConfig, ServerTlsConfig};
use waypost_core::server::{RunningServer, ServerBuilder};
use waypost_core::stream::StreamWindow;
use waypost_core::tls::{ClientTls, ServerTls};
use waypost_core::{Channel, ErrorKind, RpcError};
use waypost_testkit::pki::TestPki;
use waypost_tests::feed::{FeedClient, FeedError, FeedImpl, FeedServer};
use waypost_tests::{wait_until, TestServiceClient, TestServiceImpl, TestServiceServer};

/// Long enough for a loaded machine, short enough that a hang shows.
const WAIT: Duration = Duration::from_secs(10);

async fn serve<L: waypost_core::server::ServerLayers>(
    feed: FeedImpl,
    builder: ServerBuilder<L>,
) -> (RunningServer, String) {
    let server = builder
        .add_service(FeedServer::new(feed))
        .add_service(TestServiceServer::new(TestServiceImpl::default()))
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = server.local_addr().expect("local addr").to_string();
    (server, addr)
}

fn client(addr: &str) -> FeedClient {
    FeedClient::new(Channel::direct(addr).expect("channel")).expect("client")
}

fn client_with(addr: &str, settings: StreamSettings) -> FeedClient {
    let channel = Channel::direct(addr).expect("channel").with_stream_settings(settings);
    FeedClient::new(channel).expect("client")
}

/// Every item of `stream` until its end, failing on an error.
async fn collect<T>(stream: waypost_core::Streaming<T>) -> Vec<T> {
    tokio::time::timeout(WAIT, stream.map(|item| item.expect("an item")).collect())
        .await
        .expect("the stream ended in time")
}

/// The three shapes against `client`.
async fn three_shapes(client: &FeedClient) {
    let counted = collect(client.count(500, 0).await.expect("count starts")).await;
    assert_eq!(counted, (0..500).collect::<Vec<u64>>());

    let sum = client
        .sum(u64::MAX, futures_util::stream::iter((1..=100u64).filter(|n| *n != 13)))
        .await
        .expect("sum");
    assert_eq!(sum, 5050 - 13);

    // Bidirectional, in lock step: each answer arrives before the next message is sent.
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(1);
    let mut replies = client
        .chat("re: ".to_owned(), tokio_stream(rx))
        .await
        .expect("chat starts");
    for word in ["one", "two", "three"] {
        tx.send(word.to_owned()).await.expect("send");
        let reply = tokio::time::timeout(WAIT, replies.next())
            .await
            .expect("a reply in time");
        assert_eq!(reply.expect("a reply").expect("no error"), format!("re: {word}"));
    }
    drop(tx);
    assert!(
        tokio::time::timeout(WAIT, replies.next())
            .await
            .expect("the end")
            .is_none(),
        "the server ends its stream once the client's ends"
    );
}

/// A stream of what `rx` receives.
fn tokio_stream<T: Send + 'static>(rx: tokio::sync::mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

#[tokio::test]
async fn the_three_shapes_over_tcp() {
    let (_server, addr) = serve(FeedImpl::default(), ServerBuilder::new()).await;
    three_shapes(&client(&addr)).await;
}

#[tokio::test]
async fn the_three_shapes_over_tls() {
    let pki = TestPki::new();
    let tls = ServerTls::load(&ServerTlsConfig {
        cert: pki.server.cert.clone(),
        key: pki.server.key.clone(),
        client_ca: Some(pki.ca.ca()),
        handshake_timeout_ms: 2_000,
        reload_check_ms: 0,
    })
    .await
    .expect("server TLS");
    let (_server, addr) = serve(FeedImpl::default(), ServerBuilder::new().tls(tls)).await;
    let options = ClientOptions {
        tls: Some(
            ClientTls::load(&ClientTlsConfig {
                ca: Some(pki.ca.ca()),
                cert: Some(pki.client.cert.clone()),
                key: Some(pki.client.key.clone()),
                server_name: None,
            })
            .await
            .expect("client TLS"),
        ),
        ..ClientOptions::default()
    };
    let feed = FeedClient::new(Channel::direct_with(&addr, options).expect("channel")).expect("client");
    three_shapes(&feed).await;
}

#[tokio::test]
async fn a_typed_error_ends_a_stream_after_its_items() {
    let (_server, addr) = serve(FeedImpl::default(), ServerBuilder::new()).await;
    let items: Vec<_> = client(&addr).faulty(3).await.expect("starts").collect().await;
    assert_eq!(items.len(), 4, "{items:?}");
    for (i, item) in items[..3].iter().enumerate() {
        assert_eq!(item.as_ref().expect("an item"), &(i as u64));
    }
    match &items[3] {
        Err(RpcError::Application(FeedError::FailedAt(3))) => {}
        other => panic!("expected the typed error, got {other:?}"),
    }
    // A client stream's handler that fails answers the typed error as the call's result.
    let refused = client(&addr).sum(10, futures_util::stream::iter([1u64, 13, 2])).await;
    assert!(
        matches!(refused, Err(RpcError::Application(FeedError::Refused(13)))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_slow_reader_holds_back_the_writer() {
    let feed = FeedImpl::default();
    let stats = feed.stats.clone();
    let (_server, addr) = serve(feed, ServerBuilder::new()).await;
    // Bounded by messages: 16 items of 1 KiB.
    let window = StreamWindow {
        messages: 16,
        bytes: 1 << 20,
    };
    let settings = StreamSettings {
        window,
        ..StreamSettings::default()
    };
    let mut blobs = client_with(&addr, settings).blobs(1024).await.expect("starts");
    let mut read = 0u64;
    for _ in 0..40 {
        let blob = blobs.next().await.expect("an item").expect("no error");
        assert_eq!(blob.len(), 1024);
        read += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let produced = stats.produced.load(Ordering::SeqCst);
        assert!(
            produced <= read + u64::from(window.messages),
            "the server produced {produced} items for a reader of {read} with a window of {}",
            window.messages
        );
    }
    // Bounded by bytes: 16 KiB of 1 KiB items.
    drop(blobs);
    wait_until(WAIT, "the first stream is dropped", || async {
        stats.dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    let before = stats.produced.load(Ordering::SeqCst);
    let window = StreamWindow {
        messages: 10_000,
        bytes: 16 * 1024,
    };
    let settings = StreamSettings {
        window,
        ..StreamSettings::default()
    };
    let mut blobs = client_with(&addr, settings).blobs(1024).await.expect("starts");
    for read in 1..=40u64 {
        blobs.next().await.expect("an item").expect("no error");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let produced = stats.produced.load(Ordering::SeqCst) - before;
        assert!(
            produced <= read + 16 + 1,
            "{produced} items produced for {read} read within 16 KiB"
        );
    }
}

#[tokio::test]
async fn a_stream_nobody_reads_does_not_hold_up_calls_on_its_connection() {
    let (_server, addr) = serve(FeedImpl::default(), ServerBuilder::new()).await;
    let channel = Channel::direct(&addr).expect("channel");
    let feed = FeedClient::new(channel.clone()).expect("client");
    let calls = TestServiceClient::new(channel).expect("client");
    // 64 KiB items, never read: the window fills and the stream waits.
    let _unread = feed.blobs(64 * 1024).await.expect("starts");
    for value in 0..50 {
        let started = Instant::now();
        assert_eq!(calls.echo(value).await.expect("echo"), value);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a call waited {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_server_side() {
    let feed = FeedImpl::default();
    let stats = feed.stats.clone();
    let (_server, addr) = serve(feed, ServerBuilder::new()).await;
    let mut blobs = client(&addr).blobs(16).await.expect("starts");
    for _ in 0..5 {
        blobs.next().await.expect("an item").expect("no error");
    }
    drop(blobs);
    wait_until(WAIT, "the handler's stream is dropped", || async {
        stats.dropped.load(Ordering::SeqCst) == 1
    })
    .await;
}

/// A client stream without end that notices when it is dropped.
fn endless_numbers(
    dropped: Arc<std::sync::atomic::AtomicBool>,
) -> impl futures_util::Stream<Item = u64> + Send + 'static {
    struct Flag(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let flag = Flag(dropped);
    futures_util::stream::iter(0u64..).map(move |n| {
        let _ = &flag;
        n
    })
}

#[tokio::test]
async fn a_handler_that_drops_its_input_stops_the_client_sending() {
    let (_server, addr) = serve(FeedImpl::default(), ServerBuilder::new()).await;
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sum = client(&addr)
        .sum(4, endless_numbers(dropped.clone()))
        .await
        .expect("sum of the first four");
    assert_eq!(sum, 6);
    wait_until(WAIT, "the client's input stream is dropped", || async {
        dropped.load(Ordering::SeqCst)
    })
    .await;
}

#[tokio::test]
async fn the_deadline_covers_the_whole_stream_and_the_idle_timeout_each_wait() {
    let feed = FeedImpl::default();
    let stats = feed.stats.clone();
    let (_server, addr) = serve(feed, ServerBuilder::new()).await;
    // An endless stream, an item every 20 ms, a 400 ms deadline.
    let started = Instant::now();
    let feed_client = client(&addr).with_timeout(Duration::from_millis(400));
    let items: Vec<_> = feed_client.count(u64::MAX, 20).await.expect("starts").collect().await;
    let took = started.elapsed();
    let (last, ok) = items.split_last().expect("items");
    assert!(ok.len() >= 3, "items before the deadline: {}", ok.len());
    assert!(matches!(last, Err(e) if e.kind() == ErrorKind::Timeout), "{last:?}");
    assert!(
        took < Duration::from_secs(3),
        "the stream outlived its deadline: {took:?}"
    );
    wait_until(WAIT, "the server drops the stream", || async {
        stats.dropped.load(Ordering::SeqCst) == 1
    })
    .await;

    // Items 1 s apart, a 200 ms idle timeout.
    let settings = StreamSettings {
        idle_timeout: Some(Duration::from_millis(200)),
        ..StreamSettings::default()
    };
    let started = Instant::now();
    let mut slow = client_with(&addr, settings).count(5, 1_000).await.expect("starts");
    let first = tokio::time::timeout(WAIT, slow.next())
        .await
        .expect("an answer")
        .expect("one");
    assert!(matches!(&first, Err(e) if e.kind() == ErrorKind::Timeout), "{first:?}");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "idle for {:?}",
        started.elapsed()
    );
    assert!(slow.next().await.is_none(), "nothing follows the timeout");
}

#[tokio::test]
async fn shutdown_lets_streams_run_until_the_drain_timeout_then_ends_them() {
    let (server, addr) = serve(
        FeedImpl::default(),
        ServerBuilder::new().drain_timeout(Duration::from_millis(500)),
    )
    .await;
    let mut counting = client(&addr).count(u64::MAX, 10).await.expect("starts");
    counting.next().await.expect("an item").expect("no error");
    let shutdown = tokio::spawn(server.shutdown());
    // Items keep coming while the server drains...
    let started = Instant::now();
    let mut during_drain = 0;
    let end = loop {
        match tokio::time::timeout(WAIT, counting.next()).await.expect("no hang") {
            Some(Ok(_)) => during_drain += 1,
            Some(Err(e)) => break e,
            None => panic!("the stream ended without saying why"),
        }
    };
    // ...then the stream ends with shutting-down.
    assert!(during_drain >= 10, "{during_drain} items during the drain");
    assert_eq!(end.kind(), ErrorKind::ShuttingDown, "{end}");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "ended after {:?}",
        started.elapsed()
    );
    tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("shutdown ends")
        .expect("shutdown");
}

#[tokio::test]
async fn a_unary_call_of_a_stream_method_and_a_stream_of_a_unary_one_are_refused_clearly() {
    let (_server, addr) = serve(FeedImpl::default(), ServerBuilder::new()).await;
    let channel = Channel::direct(&addr).expect("channel");
    // What an older client (that cannot stream) gets for a streaming method.
    let method = waypost_core::client::MethodDescriptor::dynamic("Feed:1.0", "count");
    let policy = channel.policy("Feed:1.0", "count", false);
    let unary = channel.call(method, &(3u64, 0u64), None::<&()>, &policy, None).await;
    let error = unary.expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::Unsupported, "{error}");
    assert!(error.to_string().contains("streaming method"), "{error}");
    // A stream of a plain method.
    let method = waypost_core::client::MethodDescriptor::dynamic("TestService:1.0", "echo");
    let policy = channel.policy("TestService:1.0", "echo", false);
    let stream = channel.open_stream(method, &(1u64,), None::<&()>, &policy, None).await;
    let error = stream.expect_err("refused");
    assert_eq!(error.kind(), ErrorKind::Unsupported, "{error}");
    assert!(error.to_string().contains("not a streaming method"), "{error}");
}

/// Records what an interceptor saw: `request` at a start, the outcome at an end.
#[derive(Clone, Default)]
struct Seen(Arc<std::sync::Mutex<Vec<String>>>);

impl waypost_core::Interceptor for Seen {
    fn on_request(&self, ctx: &mut waypost_core::context::CallContext) -> Result<(), RpcError> {
        self.0.lock().unwrap().push(format!("{} start", ctx.method()));
        Ok(())
    }

    fn on_response(&self, ctx: &waypost_core::context::CallContext, outcome: waypost_core::Outcome) {
        self.0.lock().unwrap().push(format!(
            "{} {}",
            ctx.method(),
            waypost_core::metrics::outcome_label(outcome)
        ));
    }
}

impl Seen {
    fn log(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn tokens_and_interceptors_see_a_stream_start_and_end() {
    let on_server = Seen::default();
    let builder = ServerBuilder::new()
        .interceptor(waypost_core::auth::BearerTokens::new(["alpha"]))
        .interceptor(on_server.clone());
    let (_server, addr) = serve(FeedImpl::default(), builder).await;
    let refused = client(&addr).count(3, 0).await.expect_err("no token");
    assert_eq!(refused.kind(), ErrorKind::Unauthenticated, "{refused}");

    let on_client = Seen::default();
    let channel = Channel::direct(&addr)
        .expect("channel")
        .with_metadata("authorization", "Bearer alpha")
        .with_interceptor(on_client.clone());
    let feed = FeedClient::new(channel).expect("client");
    assert_eq!(collect(feed.count(3, 0).await.expect("starts")).await, vec![0, 1, 2]);
    let failed: Vec<_> = feed.faulty(1).await.expect("starts").collect().await;
    assert!(failed.last().is_some_and(Result::is_err));
    let mut dropped = feed.count(u64::MAX, 5).await.expect("starts");
    dropped.next().await.expect("an item").expect("no error");
    drop(dropped);
    let expected = [
        "count start",
        "count ok",
        "faulty start",
        "faulty application_error",
        "count start",
        "count cancelled",
    ];
    assert_eq!(on_client.log(), expected);
    wait_until(
        WAIT,
        "the server's interceptor sees the cancelled stream end",
        || async { on_server.log().len() == expected.len() },
    )
    .await;
    assert_eq!(on_server.log(), expected);
}

/// A `test-provider` process (serving `Feed`) on the in-memory registry; `extra_server` adds
/// lines under `rpc.server`.
async fn provider(extra_server: &str) -> waypost_tests::process::ProviderProcess {
    let yaml = format!(
        "rpc:\n  server:\n    host: 127.0.0.1\n    port: 0\n{extra_server}  registry: {{ type: memory, root: \"{}\" }}\n",
        waypost_tests::servers::unique_root("streams")
    );
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_test-provider"));
    waypost_tests::process::ProviderProcess::start(binary, &yaml).await
}

/// Items of 64 KiB without end, as fast as they are taken.
fn endless_chunks() -> impl futures_util::Stream<Item = Vec<u8>> + Send + 'static {
    futures_util::stream::repeat_with(|| vec![1u8; 64 * 1024])
}

#[tokio::test]
async fn a_provider_killed_mid_stream_ends_every_stream_with_an_error() {
    let mut provider = provider("").await;
    let feed = client(&format!("127.0.0.1:{}", provider.port));
    let mut streams = Vec::new();
    for _ in 0..10 {
        let mut counting = feed.count(u64::MAX, 5).await.expect("starts");
        for expected in 0..5u64 {
            assert_eq!(counting.next().await.expect("an item").expect("no error"), expected);
        }
        streams.push(counting);
    }
    let upload = tokio::spawn({
        let feed = feed.clone();
        async move { feed.upload(endless_chunks()).await }
    });
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(1);
    let mut chat = feed.chat(String::new(), tokio_stream(rx)).await.expect("chat starts");
    tx.send("hello".to_owned()).await.expect("send");
    assert_eq!(chat.next().await.expect("a reply").expect("no error"), "hello");
    provider.kill().await;
    let killed = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut kinds = std::collections::BTreeSet::new();
    for mut stream in streams {
        let error = loop {
            match tokio::time::timeout(WAIT, stream.next())
                .await
                .expect("the stream ends, no hang")
            {
                Some(Ok(_)) => continue,
                Some(Err(e)) => break e,
                None => panic!("a stream ended as if it were complete"),
            }
        };
        kinds.insert(format!("{:?}", error.kind()));
        slowest = slowest.max(killed.elapsed());
        assert!(stream.next().await.is_none(), "nothing after the error");
    }
    let uploaded = tokio::time::timeout(WAIT, upload)
        .await
        .expect("the upload ends, no hang")
        .expect("task");
    let error = uploaded.expect_err("the upload fails");
    kinds.insert(format!("{:?}", error.kind()));
    let chatted = tokio::time::timeout(WAIT, chat.next())
        .await
        .expect("the chat ends, no hang");
    let error = chatted.expect("an end").expect_err("the chat fails");
    kinds.insert(format!("{:?}", error.kind()));
    let slowest = slowest.max(killed.elapsed());
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        vec!["ConnectionClosed".to_owned()]
    );
    assert!(
        slowest < Duration::from_secs(2),
        "the last stream noticed after {slowest:?}"
    );
    waypost_tests::load::report(
        "streams: provider SIGKILLed mid-stream",
        serde_json::json!({
            "streams": 12,
            "shapes": "10 server streams (an item every 5 ms), 1 client stream (64 KiB chunks), 1 bidirectional",
            "ended_with_an_error": 12,
            "error": "ConnectionClosed",
            "hung": 0,
            "last_stream_ended_after_ms": slowest.as_millis() as u64,
        }),
    );
}

#[tokio::test]
async fn ten_thousand_concurrent_streams_on_one_provider_lose_nothing() {
    const STREAMS: usize = 10_000;
    const ITEMS: u64 = 20;
    let provider = provider("    max_concurrent_calls: 20000\n").await;
    // The test is about losing nothing, not about how fast 10,000 starts are accepted: on a
    // loaded two-core machine that can pass the default 3 s, so each stream may take 30 s.
    let feed = client(&format!("127.0.0.1:{}", provider.port)).with_timeout(Duration::from_secs(30));
    let (rss_before, _) = provider.memory_kib();
    let started = Instant::now();
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let slowest_start_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks: Vec<_> = (0..STREAMS)
        .map(|_| {
            let (feed, open, slowest_start_ms) = (feed.clone(), open.clone(), slowest_start_ms.clone());
            tokio::spawn(async move {
                let stream = feed.count(ITEMS, 100).await.expect("starts");
                slowest_start_ms.fetch_max(started.elapsed().as_millis() as u64, Ordering::SeqCst);
                open.fetch_add(1, Ordering::SeqCst);
                let items: Vec<u64> = stream.map(|item| item.expect("no error")).collect().await;
                items == (0..ITEMS).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut peak_open = 0;
    let mut rss_peak = rss_before;
    while !tasks.iter().all(|t| t.is_finished()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the streams did not end within 60 s"
        );
        peak_open = peak_open.max(open.load(Ordering::SeqCst));
        rss_peak = rss_peak.max(provider.memory_kib().0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    let mut complete = 0;
    for task in tasks {
        complete += usize::from(task.await.expect("task"));
    }
    assert_eq!(complete, STREAMS, "every stream got its {ITEMS} items in order");
    let per_stream_kib = (rss_peak.saturating_sub(rss_before)) as f64 / STREAMS as f64;
    waypost_tests::load::report(
        "streams: 10,000 concurrent streams on one provider",
        serde_json::json!({
            "streams": STREAMS,
            "items_each": ITEMS,
            "items_received": STREAMS as u64 * ITEMS,
            "items_lost": 0,
            "streams_open_at_once_at_least": peak_open,
            "last_stream_accepted_after_ms": slowest_start_ms.load(Ordering::SeqCst),
            "provider_rss_before_mib": rss_before / 1024,
            "provider_rss_peak_mib": rss_peak / 1024,
            "provider_memory_per_stream_kib": (per_stream_kib * 10.0).round() / 10.0,
            "elapsed_ms": elapsed.as_millis() as u64,
        }),
    );
}

#[tokio::test]
async fn a_slow_reader_keeps_the_senders_memory_within_twice_the_window() {
    let provider = provider("").await;
    let window = StreamWindow {
        messages: 65_536,
        bytes: 4 << 20,
    };
    let settings = StreamSettings {
        window,
        ..StreamSettings::default()
    };
    let feed = client_with(&format!("127.0.0.1:{}", provider.port), settings);
    // Warm the provider up with a stream read at full speed, so its allocator has what an
    // unthrottled stream takes.
    let fast: Vec<_> = feed.blobs(64 * 1024).await.expect("starts").take(2_000).collect().await;
    assert!(fast.iter().all(Result::is_ok));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (rss_before, _) = provider.memory_kib();
    // The reader takes a 64 KiB item every 2 ms (32 MB/s); the writer makes them at
    // gigabytes a second.
    let mut blobs = feed.blobs(64 * 1024).await.expect("starts");
    let started = Instant::now();
    let mut rss_peak = rss_before;
    let mut read = 0u64;
    while started.elapsed() < Duration::from_secs(3) {
        blobs.next().await.expect("an item").expect("no error");
        read += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
        rss_peak = rss_peak.max(provider.memory_kib().0);
    }
    let growth_kib = rss_peak.saturating_sub(rss_before);
    let window_kib = u64::from(window.bytes) / 1024;
    assert!(
        growth_kib <= 2 * window_kib,
        "the provider grew {growth_kib} KiB for a slow reader with a window of {window_kib} KiB"
    );
    let reader_mb_per_s = (read * 64 * 1024) as f64 / started.elapsed().as_secs_f64() / 1e6;
    waypost_tests::load::report(
        "streams: a slow reader",
        serde_json::json!({
            "window_kib": window_kib,
            "item_kib": 64,
            "reader_mb_per_s": reader_mb_per_s.round(),
            "provider_rss_growth_kib": growth_kib,
            "bound_kib": 2 * window_kib,
        }),
    );
}

#[tokio::test]
async fn a_server_of_the_previous_build_refuses_streams_clearly_and_sees_no_stream_frame() {
    use waypost_core::protocol::{flags, Header, MessageType, Status};
    use waypost_tests::earlier_build::EarlierBuild;
    // It answers a request flagged as a stream `Unsupported`, as that build's admission did.
    let server = EarlierBuild::start(Box::new(|request: &Header| {
        (request.message_type == MessageType::Request && request.flags & flags::STREAM != 0).then(|| {
            let mut header = Header::new(MessageType::Response, request.request_id);
            header.status = Status::Unsupported;
            let message = bytes::Bytes::from_static(b"streaming calls are not supported by this server");
            (header, message)
        })
    }))
    .await;
    let feed = client(server.addr());
    let started = Instant::now();
    let refused = feed
        .sum(10, futures_util::stream::iter(0..100u64))
        .await
        .expect_err("refused");
    assert_eq!(refused.kind(), ErrorKind::Unsupported, "{refused}");
    assert!(refused.to_string().contains("not supported"), "{refused}");
    let refused = feed.count(3, 0).await.expect_err("refused");
    assert_eq!(refused.kind(), ErrorKind::Unsupported, "{refused}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused after {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let received: Vec<MessageType> = server.received().iter().map(|h| h.message_type).collect();
    assert_eq!(
        received,
        vec![MessageType::Request, MessageType::Request],
        "only the two requests"
    );
}

#[tokio::test]
async fn a_stream_fails_over_before_it_starts() {
    use waypost_core::client::{ClusterInvoker, ConnectionPool, InstanceSource};
    use waypost_core::registry::ServiceInstance;
    let (_server, addr) = serve(FeedImpl::default(), ServerBuilder::new()).await;
    let live: u16 = addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("port");
    let dead = waypost_tests::ports::free_port();
    let instances = vec![
        ServiceInstance::new("Feed", "1.0", "127.0.0.1", dead),
        ServiceInstance::new("Feed", "1.0", "127.0.0.1", live),
    ];
    let invoker = ClusterInvoker::new(
        InstanceSource::Fixed(Arc::from(instances)),
        Arc::new(ConnectionPool::new(ClientOptions::default())),
        Arc::new(waypost_core::fault::InstanceHealth::default()),
    );
    let feed = FeedClient::new(Channel::new(Arc::new(invoker))).expect("client");
    for _ in 0..4 {
        assert_eq!(
            collect(feed.count(3, 0).await.expect("starts on the live instance")).await,
            vec![0, 1, 2]
        );
    }
}

/// `curl` posting `body` to `url`, its output as it streams (`-N`), with the status last.
async fn curl_stream(url: String, body: &'static str) -> (String, u16) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-N",
                "-w",
                "\n%{http_code}",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
            ])
            .args(["--data", body, &url])
            .output()
            .expect("curl (scripts/setup installs it)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        (body.to_owned(), status.parse().unwrap_or(0))
    })
    .await
    .unwrap()
}

/// An NDJSON stream that outlasts the idle timeout and the grace after it (2.8 s against 0.2 s
/// and 2 s) keeps its connection: a response counts as activity until its body is sent.
#[tokio::test]
async fn an_ndjson_stream_longer_than_the_idle_timeout_is_answered_whole() {
    let builder = ServerBuilder::new().idle_timeout(Duration::from_millis(200));
    let (_server, addr) = serve(FeedImpl::default(), builder).await;
    let (body, status) = curl_stream(format!("http://{addr}/Feed/count"), r#"{"count": 8, "delay_ms": 350}"#).await;
    assert_eq!((status, body.as_str()), (200, "0\n1\n2\n3\n4\n5\n6\n7\n"));
}

#[tokio::test]
async fn http_json_answers_a_server_stream_as_ndjson() {
    let (_server, addr) = serve(FeedImpl::default(), ServerBuilder::new()).await;
    let (body, status) = curl_stream(format!("http://{addr}/Feed/count"), r#"{"count": 3, "delay_ms": 5}"#).await;
    assert_eq!((status, body.as_str()), (200, "0\n1\n2\n"));
    let (body, status) = curl_stream(format!("http://{addr}/Feed/faulty"), "[2]").await;
    assert_eq!(status, 200);
    assert_eq!(body, "0\n1\n{\"error\":{\"FailedAt\":2}}\n");
    // A method that takes a stream is for the RPC protocol.
    let (body, status) = curl_stream(format!("http://{addr}/Feed/sum"), "[3]").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("invalid_argument") && body.contains("takes a stream"),
        "{body}"
    );
    // The OpenAPI document describes the server stream and leaves the others out.
    let (body, status) = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", &format!("http://{addr}/openapi.json")])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        (body.to_owned(), status.parse::<u16>().unwrap_or(0))
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).expect("json");
    let count = &doc["paths"]["/Feed:1.0/count"]["post"]["responses"]["200"]["content"];
    assert!(count["application/x-ndjson"].is_object(), "{count}");
    assert!(doc["paths"]["/Feed:1.0/sum"].is_null());
    assert!(doc["paths"]["/Feed:1.0/chat"].is_null());
}

#[tokio::test]
async fn python_reads_ndjson_lines_as_they_come_and_its_leaving_cancels_the_stream() {
    let feed = FeedImpl::default();
    let stats = feed.stats.clone();
    let (_server, addr) = serve(feed, ServerBuilder::new()).await;
    // Reads three lines of an endless stream with the standard library, then leaves.
    let script = format!(
        r#"
import json, urllib.request
request = urllib.request.Request("http://{addr}/Feed/count", data=json.dumps({{"count": 18446744073709551615, "delay_ms": 10}}).encode(), headers={{"Content-Type": "application/json"}})
with urllib.request.urlopen(request, timeout=10) as answer:
    assert answer.headers["Content-Type"] == "application/x-ndjson", answer.headers["Content-Type"]
    print([json.loads(answer.readline()) for _ in range(3)])
"#
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", &script])
            .output()
            .expect("python3")
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[0, 1, 2]");
    wait_until(WAIT, "the handler's stream is dropped once the client left", || async {
        stats.dropped.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn large_items_several_to_a_frame_arrive_whole_both_ways() {
    let (_server, addr) = serve(FeedImpl::default(), ServerBuilder::new()).await;
    let feed = client(&addr);
    // 20,000-byte items: three or so share a frame, each byte string a piece of its own.
    let blobs: Vec<Vec<u8>> = feed
        .blobs(20_000)
        .await
        .expect("starts")
        .take(50)
        .map(|item| item.expect("no error"))
        .collect()
        .await;
    assert_eq!(blobs.len(), 50);
    assert!(blobs.iter().all(|b| b.len() == 20_000 && b.iter().all(|&x| x == 7)));
    let chunks = futures_util::stream::iter((0..50).map(|i| vec![i as u8; 20_000 + i]));
    let total = feed.upload(chunks).await.expect("upload");
    assert_eq!(total, (0..50).map(|i| 20_000 + i as u64).sum::<u64>());
}

#[tokio::test]
async fn tower_layers_on_both_sides_see_each_stream_start() {
    use waypost_core::client::{ClientCall, ClientStack};
    use waypost_core::server::ServerCall;
    let on_server = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = on_server.clone();
    let builder = ServerBuilder::new().layer(tower::layer::layer_fn(move |inner| {
        let counted = counted.clone();
        tower::util::MapRequest::new(inner, move |call: ServerCall| {
            if call.is_stream() {
                counted.fetch_add(1, Ordering::SeqCst);
            }
            call
        })
    }));
    let (_server, addr) = serve(FeedImpl::default(), builder).await;
    let on_client = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = on_client.clone();
    let channel = Channel::direct(&addr)
        .expect("channel")
        .layer(tower::layer::layer_fn(move |inner: ClientStack| {
            let counted = counted.clone();
            tower::util::MapRequest::new(inner, move |call: ClientCall| {
                if call.is_stream() {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                call
            })
        }));
    three_shapes(&FeedClient::new(channel).expect("client")).await;
    assert_eq!(
        on_client.load(Ordering::SeqCst),
        3,
        "one start per stream on the client"
    );
    assert_eq!(
        on_server.load(Ordering::SeqCst),
        3,
        "one start per stream on the server"
    );
}
