//! Hostile bytes on the RPC port while a well-behaved client keeps calling: every bad
//! connection is closed with a logged protocol error, nothing large is allocated, and the good
//! client never fails.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use waypost_core::server::ServerBuilder;
use waypost_core::Channel;
use waypost_tests::load::{ms, report, resident_bytes, Load};
use waypost_tests::{wait_until, TestServiceClient, TestServiceImpl, TestServiceServer};

/// Collects log lines written by the server.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap()).matches(needle).count()
    }
}

/// A request header written byte by byte (protocol version 2 layout), so the test does not
/// trust the encoder it tests.
fn header(magic: u16, body_len: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&magic.to_be_bytes());
    h.push(waypost_core::protocol::PROTOCOL_VERSION);
    h.push(1); // request
    h.push(1); // bincode
    h.push(0); // status
    h.push(0); // flags
    h.push(0); // reserved
    h.extend_from_slice(&7u64.to_be_bytes());
    h.extend_from_slice(&0u32.to_be_bytes());
    h.extend_from_slice(&body_len.to_be_bytes());
    h
}

/// Sends `bytes` on a fresh connection, then waits for the server to close it; returns how
/// long that took, or `None` when it stayed open past `patience`.
async fn attack(addr: &str, bytes: &[u8], patience: Duration) -> Option<Duration> {
    let mut sock = TcpStream::connect(addr).await.ok()?;
    let _ = sock.write_all(bytes).await;
    let sent = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(patience, sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(sent.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_connections_are_closed_and_a_good_client_keeps_getting_answers() {
    let logs = Logs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .with_ansi(false)
        .init();
    let frame_timeout = Duration::from_millis(500);
    let server = ServerBuilder::new()
        .add_service(TestServiceServer::new(TestServiceImpl::labeled("good")))
        .frame_timeout(frame_timeout)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let client = TestServiceClient::new(Channel::direct(&addr).unwrap()).unwrap();
    client.owner(0).await.unwrap();
    let rss_before = resident_bytes();
    let load = Load::start(&client, 4, Duration::from_millis(1));
    let patience = Duration::from_secs(5);

    // Random bytes (never starting with the magic).
    let mut random_closed = 0;
    for _ in 0..100 {
        let mut bytes: Vec<u8> = (0..64 * 1024).map(|_| fastrand::u8(..)).collect();
        bytes[0] = 0x00;
        random_closed += usize::from(attack(&addr, &bytes, patience).await.is_some());
    }
    // A wrong magic.
    let mut magic_closed = 0;
    for _ in 0..50 {
        magic_closed += usize::from(attack(&addr, &header(0xbeef, 10), patience).await.is_some());
    }
    // A header announcing a body of 4 GiB.
    let mut huge_closed = 0;
    for _ in 0..50 {
        huge_closed += usize::from(attack(&addr, &header(0x5250, u32::MAX), patience).await.is_some());
    }
    let rss_after_huge = resident_bytes();
    // A truncated frame, then silence: closed once the frame timeout passes.
    let mut truncated = Vec::new();
    let stalls: Vec<_> = (0..20)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move {
                let mut bytes = header(0x5250, 100);
                bytes.extend_from_slice(&[0u8; 10]);
                attack(&addr, &bytes, patience).await
            })
        })
        .collect();
    for s in stalls {
        truncated.push(s.await.unwrap().expect("a truncated frame's connection stayed open"));
    }
    // Thousands of connections opened and dropped.
    let churn = 2000;
    for _ in 0..churn {
        if let Ok(sock) = TcpStream::connect(&addr).await {
            drop(sock);
        }
    }
    wait_until(
        Duration::from_secs(5),
        "the server is left with the good client's connection",
        || {
            let n = server.open_connections();
            async move { n == 1 }
        },
    )
    .await;
    let stats = load.stop().await;
    let rss_after = resident_bytes();

    assert_eq!(random_closed, 100);
    assert_eq!(magic_closed, 50);
    assert_eq!(huge_closed, 50);
    let slowest_truncated = *truncated.iter().max().unwrap();
    assert!(
        slowest_truncated >= frame_timeout - Duration::from_millis(50),
        "{slowest_truncated:?}"
    );
    assert!(
        slowest_truncated < frame_timeout + Duration::from_secs(1),
        "{slowest_truncated:?}"
    );
    stats.assert_none_failed();
    let growth = rss_after_huge
        .saturating_sub(rss_before)
        .max(rss_after.saturating_sub(rss_before));
    assert!(growth < 64 << 20, "resident memory grew by {} MiB", growth >> 20);
    let logged = logs.count("protocol error");
    assert!(logged >= 220, "{logged} protocol errors logged for 220 bad connections");
    report(
        "hostile bytes on the RPC port",
        serde_json::json!({
            "random_byte_connections": 100, "wrong_magic": 50, "header_announcing_4_gib": 50,
            "truncated_then_silent": 20, "opened_and_dropped": churn,
            "bad_connections_closed": random_closed + magic_closed + huge_closed + truncated.len(),
            "protocol_errors_logged": logged,
            "truncated_closed_after_ms": ms(slowest_truncated),
            "good_client_calls": stats.calls(), "good_client_failed": stats.failed(),
            "rss_growth_kib": growth >> 10,
        }),
    );
    server.shutdown().await;
}

#[tokio::test]
async fn arguments_with_a_lying_length_prefix_get_a_decode_error_not_an_abort() {
    use waypost_core::protocol::{encode_frame, FrameDecoder, Header, MessageType, Status};

    let server = ServerBuilder::new()
        .add_service(TestServiceServer::new(TestServiceImpl::default()))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr().unwrap().to_string();
    // A valid prefix for `concat` (no metadata), then a bincode string claiming 2^60 bytes.
    let mut body = Vec::new();
    for part in ["TestService:1.0", "concat"] {
        body.extend_from_slice(&(part.len() as u16).to_be_bytes());
        body.extend_from_slice(part.as_bytes());
    }
    body.extend_from_slice(&2u32.to_be_bytes()); // metadata block: 2 bytes,
    body.extend_from_slice(&0u16.to_be_bytes()); // zero entries
    body.push(0xff);
    body.extend_from_slice(&(1u64 << 60).to_le_bytes());
    let mut header = Header::new(MessageType::Request, 1);
    header.serializer = 1;
    let mut frame = bytes::BytesMut::new();
    encode_frame(header, &body, &mut frame);
    let mut sock = TcpStream::connect(&addr).await.unwrap();
    sock.write_all(&frame).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    let mut decoder = FrameDecoder::default();
    let reply = loop {
        if let Some(f) = decoder.decode(&mut buf).unwrap() {
            break f;
        }
        assert!(
            sock.read_buf(&mut buf).await.unwrap() > 0,
            "the server closed instead of answering"
        );
    };
    assert_eq!(reply.header.status, Status::DecodeError);
    let client = TestServiceClient::new(Channel::direct(&addr).unwrap()).unwrap();
    assert_eq!(client.echo(3).await.unwrap(), 3, "the server is still up");
    server.shutdown().await;
}
