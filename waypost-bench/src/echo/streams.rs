//! Streams, this framework against tonic: a server stream read as fast as it comes (`+server`:
//! each item counts as a call; no clock is read per item, so its latencies read 0), and a bidirectional
//! ping-pong (`+bidi`: each item sent back before the next goes, its latency the round trip).
//! Items are `Vec<u8>` on both sides (prost's type for `bytes`), made afresh for every item.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use waypost_core::server::ServerBuilder;
use waypost_core::{Channel, Streaming};

use super::pb;
use super::{measure_window, spawn_server, Framework, LoadFuture, Payload, Phase, ServeFuture, Shape, Timing};

/// The stream benchmark's service, with plain user types.
#[waypost_core::service(name = "StreamBench")]
pub trait StreamBench {
    /// Items of `size` bytes without end.
    async fn feed(&self, size: u32) -> Streaming<Vec<u8>>;
    /// Each item back as it arrives.
    async fn ping_pong(&self, items: Streaming<Vec<u8>>) -> Streaming<Vec<u8>>;
}

struct StreamBenchImpl;

impl StreamBench for StreamBenchImpl {
    async fn feed(&self, size: u32) -> Streaming<Vec<u8>> {
        Streaming::from_stream(futures_util::stream::repeat_with(move || vec![7u8; size as usize]))
    }

    async fn ping_pong(&self, items: Streaming<Vec<u8>>) -> Streaming<Vec<u8>> {
        Streaming::from_results(items)
    }
}

struct TonicStreams;

type TonicItems = BoxStream<'static, Result<pb::BytesMsg, tonic::Status>>;

#[tonic::async_trait]
impl pb::stream_bench_server::StreamBench for TonicStreams {
    type FeedStream = TonicItems;
    type PingPongStream = TonicItems;

    async fn feed(
        &self,
        request: tonic::Request<pb::FeedRequest>,
    ) -> Result<tonic::Response<TonicItems>, tonic::Status> {
        let size = request.into_inner().size as usize;
        let items = futures_util::stream::repeat_with(move || {
            Ok(pb::BytesMsg {
                payload: vec![7u8; size],
            })
        });
        Ok(tonic::Response::new(items.boxed()))
    }

    async fn ping_pong(
        &self,
        request: tonic::Request<tonic::Streaming<pb::BytesMsg>>,
    ) -> Result<tonic::Response<TonicItems>, tonic::Status> {
        Ok(tonic::Response::new(request.into_inner().boxed()))
    }
}

/// Which way the items go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The server streams; the client reads.
    Server,
    /// Each item goes to the server and back.
    Bidi,
}

impl Mode {
    fn suffix(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Bidi => "bidi",
        }
    }
}

/// The stream frameworks by name: `waypost/stream+server`, `waypost/stream+bidi`,
/// `tonic/stream+server`, `tonic/stream+bidi`.
pub fn framework(name: &str) -> Option<Box<dyn Framework>> {
    let (framework, mode) = name.split_once("/stream+")?;
    let mode = match mode {
        "server" => Mode::Server,
        "bidi" => Mode::Bidi,
        _ => return None,
    };
    match framework {
        "waypost" => Some(Box::new(RpcStreams(mode))),
        "tonic" => Some(Box::new(Tonic(mode))),
        _ => None,
    }
}

/// This framework's streams.
pub struct RpcStreams(pub Mode);

impl Framework for RpcStreams {
    fn name(&self) -> String {
        format!("waypost/stream+{}", self.0.suffix())
    }

    fn serve(&self, listener: std::net::TcpListener) -> ServeFuture {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let server = ServerBuilder::new()
                .add_service(StreamBenchServer::new(StreamBenchImpl))
                .serve_listener(listener);
            Box::new(server) as Box<dyn std::any::Any + Send>
        })
    }

    fn load(&self, addr: SocketAddr, payload: Payload, shape: Shape, timing: Timing) -> LoadFuture {
        let mode = self.0;
        Box::pin(async move {
            let clients: Vec<StreamBenchClient> = (0..shape.connections)
                .map(|_| {
                    let channel = Channel::direct(addr.to_string()).expect("a host:port address");
                    StreamBenchClient::new(channel).expect("client")
                })
                .collect();
            let mut lanes = Vec::new();
            for client in &clients {
                for _ in 0..shape.concurrency {
                    lanes.push(match mode {
                        Mode::Server => {
                            let items = client.feed(payload.size as u32).await.expect("feed starts");
                            Lane::Reader(items.map(|item| item.is_ok()).boxed())
                        }
                        Mode::Bidi => {
                            let (tx, rx) = mpsc::channel::<Vec<u8>>(1);
                            let replies = client.ping_pong(receiver(rx)).await.expect("ping-pong starts");
                            Lane::PingPong(tx, replies.map(Result::ok).boxed())
                        }
                    });
                }
            }
            run_lanes(lanes, payload, timing).await
        })
    }
}

/// tonic's streams (its defaults: HTTP/2 flow control windows, message limits raised).
pub struct Tonic(pub Mode);

impl Framework for Tonic {
    fn name(&self) -> String {
        format!("tonic/stream+{}", self.0.suffix())
    }

    fn serve(&self, listener: std::net::TcpListener) -> ServeFuture {
        spawn_server(listener, move |listener| async move {
            let incoming =
                tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |s| {
                    s.inspect(|s| {
                        let _ = s.set_nodelay(true);
                    })
                });
            let service = pb::stream_bench_server::StreamBenchServer::new(TonicStreams)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20);
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        })
    }

    fn load(&self, addr: SocketAddr, payload: Payload, shape: Shape, timing: Timing) -> LoadFuture {
        let mode = self.0;
        Box::pin(async move {
            let mut lanes = Vec::new();
            for _ in 0..shape.connections {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .expect("tonic endpoint")
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .expect("tonic connect");
                let client = pb::stream_bench_client::StreamBenchClient::new(channel)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20);
                for _ in 0..shape.concurrency {
                    let mut client = client.clone();
                    lanes.push(match mode {
                        Mode::Server => {
                            let request = pb::FeedRequest {
                                size: payload.size as u32,
                            };
                            let items = client.feed(request).await.expect("feed starts").into_inner();
                            Lane::Reader(items.map(|item| item.is_ok()).boxed())
                        }
                        Mode::Bidi => {
                            let (tx, rx) = mpsc::channel::<Vec<u8>>(1);
                            let requests = receiver(rx).map(|payload| pb::BytesMsg { payload });
                            let replies = client.ping_pong(requests).await.expect("ping-pong starts").into_inner();
                            Lane::PingPong(tx, replies.map(|r| r.ok().map(|m| m.payload)).boxed())
                        }
                    });
                }
            }
            run_lanes(lanes, payload, timing).await
        })
    }
}

/// The items `rx` receives, as a stream.
fn receiver<T: Send + 'static>(rx: mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

/// One open stream of the load.
enum Lane {
    /// A server stream: whether each item came without error.
    Reader(BoxStream<'static, bool>),
    /// A ping-pong: where items go, and what comes back.
    PingPong(mpsc::Sender<Vec<u8>>, BoxStream<'static, Option<Vec<u8>>>),
}

/// Drives every lane through warm-up and window; an item that arrives in the window counts.
async fn run_lanes(lanes: Vec<Lane>, payload: Payload, timing: Timing) -> super::Sample {
    let phase = Phase::default();
    let failed = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = lanes
        .into_iter()
        .map(|lane| {
            let (phase, failed, body) = (phase.clone(), failed.clone(), payload.bytes());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 16);
                match lane {
                    Lane::Reader(mut items) => {
                        while !phase.stopped() {
                            if items.next().await != Some(true) {
                                failed.store(true, Ordering::Relaxed);
                                break;
                            }
                            if phase.measuring() {
                                latencies.push(0);
                            }
                        }
                    }
                    Lane::PingPong(tx, mut replies) => {
                        let mut body = body;
                        while !phase.stopped() {
                            let started = Instant::now();
                            if tx.send(body).await.is_err() {
                                failed.store(true, Ordering::Relaxed);
                                break;
                            }
                            match replies.next().await {
                                Some(Some(reply)) => body = reply,
                                _ => {
                                    failed.store(true, Ordering::Relaxed);
                                    break;
                                }
                            }
                            if phase.measuring() {
                                latencies.push(micros(started.elapsed()));
                            }
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    let sample = measure_window(&phase, timing, async move {
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap_or_default());
        }
        all
    })
    .await;
    assert!(!failed.load(Ordering::Relaxed), "a benchmark stream failed");
    sample
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}
