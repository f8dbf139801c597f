//! This framework: one serializer, optionally with no-op layers, metrics, TLS or zstd
//! compression on both sides.

use std::net::SocketAddr;
use std::time::Duration;

use ::waypost::metrics_endpoint::MetricsEndpoint;
use tower::layer::util::{Identity, Stack};
use tower::limit::ConcurrencyLimitLayer;
use tower::timeout::TimeoutLayer;
use tower::util::MapRequestLayer;
use tower::ServiceBuilder;
use waypost_core::client::ClientOptions;
use waypost_core::config::{ClientTlsConfig, CompressionConfig, ConsumerConfig, ServerTlsConfig};
use waypost_core::fault::PolicySet;
use waypost_core::metrics::MetricsLayer;
use waypost_core::server::ServerBuilder;
use waypost_core::tls::{ClientTls, ServerTls};
use waypost_core::{Channel, SerializerKind};

use super::payload::Record;
use super::{echo_loop, tls_file, Framework, LoadFuture, Payload, PayloadKind, ServeFuture, Shape, Timing};

/// The echo service, with plain user types.
#[waypost_core::service(name = "Echo")]
pub trait Echo {
    /// Returns its bytes.
    async fn echo_bytes(&self, payload: Vec<u8>) -> Vec<u8>;
    /// Returns its bytes, as `Bytes` (large ones shared with the frames, never copied).
    async fn echo_shared(&self, payload: bytes::Bytes) -> bytes::Bytes;
    /// Returns its text.
    async fn echo_text(&self, payload: String) -> String;
    /// Returns its record.
    async fn echo_record(&self, payload: Record) -> Record;
}

/// The echo service: every method returns what it was given.
pub struct EchoImpl;

/// The echo service's server adapter (also what the HTTP/JSON rows call).
pub fn echo_server() -> EchoServer<EchoImpl> {
    EchoServer::new(EchoImpl)
}

impl Echo for EchoImpl {
    async fn echo_bytes(&self, payload: Vec<u8>) -> Vec<u8> {
        payload
    }

    async fn echo_shared(&self, payload: bytes::Bytes) -> bytes::Bytes {
        payload
    }

    async fn echo_text(&self, payload: String) -> String {
        payload
    }

    async fn echo_record(&self, payload: Record) -> Record {
        payload
    }
}

/// A timeout, a concurrency limit and a pass-through of `R`, innermost first.
type ThreeLayers<R> = Stack<MapRequestLayer<fn(R) -> R>, Stack<ConcurrencyLimitLayer, Stack<TimeoutLayer, Identity>>>;

/// The tower layers of the `+tower layers` rows, on each side: a timeout, a concurrency
/// limit and a pass-through layer, what a production stack typically starts from.
fn tower_layers<R: Send + 'static>() -> ServiceBuilder<ThreeLayers<R>> {
    ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(60)))
        .layer(ConcurrencyLimitLayer::new(100_000))
        .layer(MapRequestLayer::new((|call| call) as fn(R) -> R))
}

/// waypost with one serializer and what both sides add around every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcCore {
    /// The serializer.
    pub serializer: SerializerKind,
    /// The three tower layers of [`tower_layers`] on each side.
    pub tower: bool,
    /// The metrics interceptor on each side, recording into a Prometheus recorder.
    pub metrics: bool,
    /// TLS (server certificate only) between the two.
    pub tls: bool,
    /// Byte payloads as `bytes::Bytes` instead of `Vec<u8>`.
    pub shared_bytes: bool,
    /// zstd compression on both sides.
    pub zstd: bool,
}

/// zstd compression on, with its defaults (level 1, bodies of 1 KiB and more).
fn zstd_on() -> CompressionConfig {
    CompressionConfig {
        enabled: true,
        ..CompressionConfig::default()
    }
}

impl RpcCore {
    /// Plain, with `serializer`.
    pub fn plain(serializer: SerializerKind) -> Self {
        Self {
            serializer,
            tower: false,
            metrics: false,
            tls: false,
            shared_bytes: false,
            zstd: false,
        }
    }

    /// Reads what follows `waypost/` in a name: `bincode`, `bincode+tower layers`,
    /// `bincode+metrics`, `bincode+tls`, `bincode+Bytes`, `msgpack+zstd`.
    pub fn parse(name: &str) -> Option<Self> {
        let (serializer, extra) = name.split_once('+').map_or((name, None), |(s, e)| (s, Some(e)));
        let mut me = Self::plain(serializer.parse().ok()?);
        match extra {
            None => {}
            Some("metrics") => me.metrics = true,
            Some("tls") => me.tls = true,
            Some("Bytes") => me.shared_bytes = true,
            Some("tower layers") => me.tower = true,
            Some("zstd") => me.zstd = true,
            Some(_) => return None,
        }
        Some(me)
    }

    /// The metrics endpoint (installing the recorder) when metrics are on.
    async fn metrics_endpoint(self) -> Option<MetricsEndpoint> {
        match self.metrics {
            true => Some(MetricsEndpoint::start("127.0.0.1:0").await.expect("metrics endpoint")),
            false => None,
        }
    }
}

impl Framework for RpcCore {
    fn name(&self) -> String {
        let mut name = format!("waypost/{}", self.serializer);
        if self.tower {
            name += "+tower layers";
        }
        if self.metrics {
            name += "+metrics";
        }
        if self.tls {
            name += "+tls";
        }
        if self.shared_bytes {
            name += "+Bytes";
        }
        if self.zstd {
            name += "+zstd";
        }
        name
    }

    fn serve(&self, listener: std::net::TcpListener) -> ServeFuture {
        let me = *self;
        Box::pin(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let endpoint = me.metrics_endpoint().await;
            let mut builder = ServerBuilder::new().add_service(echo_server());
            if me.zstd {
                builder = builder.compression(zstd_on());
            }
            if me.metrics {
                builder = builder.interceptor(MetricsLayer::new());
            }
            if me.tls {
                let config = ServerTlsConfig {
                    cert: tls_file("server.pem"),
                    key: tls_file("server.key"),
                    client_ca: None,
                    handshake_timeout_ms: 10_000,
                    reload_check_ms: 0,
                };
                builder = builder.tls(ServerTls::load(&config).await.expect("server TLS"));
            }
            let server = match me.tower {
                true => builder.layer(tower_layers()).serve_listener(listener),
                false => builder.serve_listener(listener),
            };
            Box::new((server, endpoint)) as Box<dyn std::any::Any + Send>
        })
    }

    fn load(&self, addr: SocketAddr, payload: Payload, shape: Shape, timing: Timing) -> LoadFuture {
        let me = *self;
        Box::pin(async move {
            let _endpoint = me.metrics_endpoint().await;
            let mut options = ClientOptions::default();
            if me.tls {
                let config = ClientTlsConfig {
                    ca: Some(tls_file("ca.pem")),
                    server_name: Some("localhost".to_owned()),
                    ..ClientTlsConfig::default()
                };
                options.tls = Some(ClientTls::load(&config).await.expect("client TLS"));
            }
            // One channel (one connection pool) per connection.
            let clients: Vec<EchoClient> = (0..shape.connections)
                .map(|_| {
                    let mut channel = Channel::direct_with(addr.to_string(), options.clone())
                        .expect("a host:port address")
                        .with_serializer(me.serializer)
                        .with_timeout(Duration::from_secs(60));
                    if me.metrics {
                        channel = channel.with_interceptor(MetricsLayer::new());
                    }
                    if me.zstd {
                        let config = ConsumerConfig {
                            compression: zstd_on(),
                            ..ConsumerConfig::default()
                        };
                        channel = channel.with_policies(std::sync::Arc::new(PolicySet::new(config)));
                    }
                    if me.tower {
                        channel = channel.layer(tower_layers());
                    }
                    EchoClient::new(channel).expect("client")
                })
                .collect();
            match payload.kind {
                PayloadKind::Bytes if me.shared_bytes => {
                    echo_loop(
                        clients,
                        shape,
                        timing,
                        bytes::Bytes::from(payload.bytes()),
                        |c: EchoClient, body| async move { c.echo_shared(body).await.ok() },
                    )
                    .await
                }
                PayloadKind::Bytes => {
                    echo_loop(
                        clients,
                        shape,
                        timing,
                        payload.bytes(),
                        |c: EchoClient, body| async move { c.echo_bytes(body).await.ok() },
                    )
                    .await
                }
                PayloadKind::Text => {
                    echo_loop(
                        clients,
                        shape,
                        timing,
                        payload.text(),
                        |c: EchoClient, body| async move { c.echo_text(body).await.ok() },
                    )
                    .await
                }
                PayloadKind::Record => {
                    echo_loop(
                        clients,
                        shape,
                        timing,
                        payload.record(),
                        |c: EchoClient, body| async move { c.echo_record(body).await.ok() },
                    )
                    .await
                }
            }
        })
    }
}
