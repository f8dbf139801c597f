//! zstd compression over real TCP, counted on the wire by a proxy: negotiated per connection
//! (the first call of a connection goes plain, later ones compressed both ways), never sent
//! to a server that did not say it decodes it, off by default, and set per method.

use std::sync::Arc;

use waypost_core::config::{CompressionConfig, CompressionOverride, ConsumerConfig, MethodOverride, ServiceOverride};
use waypost_core::fault::PolicySet;
use waypost_core::server::{RunningServer, ServerBuilder};
use waypost_core::{Channel, SerializerKind};
use waypost_tests::proxy::FaultProxy;

#[waypost_core::service(name = "Records", version = "1.0")]
pub trait Records {
    /// Answers the record it got.
    async fn echo(&self, record: String) -> String;
    /// Answers the record's length.
    async fn size(&self, record: String) -> u64;
}

#[derive(Clone)]
struct Store;

impl Records for Store {
    async fn echo(&self, record: String) -> String {
        record
    }

    async fn size(&self, record: String) -> u64 {
        record.len() as u64
    }
}

/// A JSON-like record of about `kib` KiB, as a service would send.
fn record(kib: usize) -> String {
    let mut out = String::from("[");
    let mut i = 0;
    while out.len() < kib * 1024 {
        out.push_str(&format!(
            r#"{{"id":{i},"name":"user {i}","email":"user{i}@example.com","active":{},"tags":["a","b"]}},"#,
            i % 3 == 0
        ));
        i += 1;
    }
    out.push(']');
    out
}

fn on() -> CompressionConfig {
    CompressionConfig {
        enabled: true,
        ..CompressionConfig::default()
    }
}

async fn server(compression: CompressionConfig) -> (RunningServer, FaultProxy) {
    let server = ServerBuilder::new()
        .compression(compression)
        .add_service(RecordsServer::new(Store))
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy = FaultProxy::start(&server.local_addr().expect("addr").to_string()).await;
    (server, proxy)
}

fn client(addr: &str, config: ConsumerConfig) -> RecordsClient {
    let channel = Channel::direct(addr)
        .expect("channel")
        .with_policies(Arc::new(PolicySet::new(config)));
    RecordsClient::new(channel).expect("client")
}

/// Bytes each way that one call of `echo` with `body` put on the wire.
async fn echo_bytes(client: &RecordsClient, proxy: &FaultProxy, body: &str) -> (u64, u64) {
    let before = proxy.carried();
    assert_eq!(client.echo(body.to_owned()).await.expect("echo"), body);
    let after = proxy.carried();
    (after.0 - before.0, after.1 - before.1)
}

#[tokio::test]
async fn a_negotiated_connection_compresses_both_ways_after_its_first_call() {
    let (_server, proxy) = server(on()).await;
    let body = record(1024);
    let records = client(
        &proxy.endpoint(),
        ConsumerConfig {
            compression: on(),
            ..ConsumerConfig::default()
        },
    );
    // The first call cannot know the server decodes zstd: its request goes plain, and its
    // response (asked for compressed) comes back compressed.
    let (up, down) = echo_bytes(&records, &proxy, &body).await;
    assert!(up > body.len() as u64, "first request plain: {up}");
    assert!(down * 5 < body.len() as u64, "response compressed: {down}");
    let (up, down) = echo_bytes(&records, &proxy, &body).await;
    assert!(up * 5 < body.len() as u64, "later requests compressed: {up}");
    assert!(down * 5 < body.len() as u64, "and responses: {down}");
    // Small bodies stay plain.
    assert_eq!(records.size("short".to_owned()).await.expect("size"), 5);
}

#[tokio::test]
async fn off_by_default_and_per_method_and_a_server_without_it_answers_plain() {
    let body = record(256);
    // Default consumer: nothing compressed, even with a compressing server.
    let (_server, proxy) = server(on()).await;
    let plain = client(&proxy.endpoint(), ConsumerConfig::default());
    for _ in 0..2 {
        let (up, down) = echo_bytes(&plain, &proxy, &body).await;
        assert!(up > body.len() as u64 && down > body.len() as u64, "{up} {down}");
    }
    // A server with compression off still decodes compressed requests, and answers plain.
    let (_quiet, quiet_proxy) = server(CompressionConfig::default()).await;
    let asking = client(
        &quiet_proxy.endpoint(),
        ConsumerConfig {
            compression: on(),
            ..ConsumerConfig::default()
        },
    );
    let _ = echo_bytes(&asking, &quiet_proxy, &body).await;
    let (up, down) = echo_bytes(&asking, &quiet_proxy, &body).await;
    assert!(up * 5 < body.len() as u64, "request compressed: {up}");
    assert!(down > body.len() as u64, "response plain: {down}");
    // Per method: on for `size` only.
    let config = ConsumerConfig {
        services: [(
            "Records:1.0".to_owned(),
            ServiceOverride {
                methods: [(
                    "size".to_owned(),
                    MethodOverride {
                        compression: Some(CompressionOverride {
                            enabled: Some(true),
                            ..CompressionOverride::default()
                        }),
                        ..MethodOverride::default()
                    },
                )]
                .into(),
                ..ServiceOverride::default()
            },
        )]
        .into(),
        ..ConsumerConfig::default()
    };
    let per_method = client(&proxy.endpoint(), config);
    let _ = echo_bytes(&per_method, &proxy, &body).await;
    let (up, _) = echo_bytes(&per_method, &proxy, &body).await;
    assert!(up > body.len() as u64, "echo stays plain: {up}");
    let before = proxy.carried().0;
    assert_eq!(per_method.size(body.clone()).await.expect("size"), body.len() as u64);
    assert!((proxy.carried().0 - before) * 5 < body.len() as u64, "size compressed");
}

#[tokio::test]
async fn a_server_of_an_earlier_build_is_never_sent_a_compressed_body() {
    use waypost_core::protocol::{flags, Header, MessageType};
    use waypost_tests::earlier_build::EarlierBuild;
    // It answers every call with `0u64` and never says it decodes compressed bodies.
    let zero = SerializerKind::MsgPack.encode_body(&0u64).expect("encode").into_one();
    let server = EarlierBuild::start(Box::new(move |request: &Header| {
        (request.message_type == MessageType::Request).then(|| {
            let mut header = Header::new(MessageType::Response, request.request_id);
            header.serializer = request.serializer;
            (header, zero.clone())
        })
    }))
    .await;
    let records = client(
        server.addr(),
        ConsumerConfig {
            compression: on(),
            ..ConsumerConfig::default()
        },
    );
    let body = record(64);
    for _ in 0..5 {
        assert_eq!(records.size(body.clone()).await.expect("answered"), 0);
    }
    // Every call was answered, so the server recorded every request.
    let seen: Vec<u8> = server
        .received()
        .iter()
        .filter(|h| h.message_type == MessageType::Request)
        .map(|h| h.flags)
        .collect();
    assert_eq!(seen.len(), 5);
    assert!(
        seen.iter().all(|f| f & flags::COMPRESSED == 0),
        "no request was compressed: {seen:?}"
    );
    assert!(
        seen.iter().all(|f| f & flags::DECOMPRESSES != 0),
        "each asked for a compressed answer"
    );
}
