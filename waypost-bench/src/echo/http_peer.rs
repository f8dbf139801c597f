//! HTTP/JSON: the record echoed through this framework's HTTP ingress, and through an axum
//! handler doing the same work (read `[record]` as JSON, answer `record` as JSON), over
//! HTTP/1.1 keep-alive (one connection per outstanding call, as HTTP/1.1 clients do) and
//! HTTP/2 (one connection, a stream per call). The client is hyper's; it encodes each request
//! and decodes each answer into a `Record`, as a caller would.

use std::net::SocketAddr;

use axum::routing::post;
use axum::Json;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use waypost_core::server::ServerBuilder;

use super::payload::Record;
use super::waypost::echo_server;
use super::{echo_loop, spawn_server, Framework, LoadFuture, Payload, PayloadKind, ServeFuture, Shape, Timing};

/// Which HTTP server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// This framework's HTTP/JSON ingress (on its RPC port).
    RpcCore,
    /// An axum router with one JSON handler.
    Axum,
}

/// The HTTP/JSON echo of the record, by `server`, over HTTP/2 when `h2`, else HTTP/1.1.
#[derive(Debug, Clone, Copy)]
pub struct Http {
    /// The server.
    pub server: Server,
    /// HTTP/2 (prior knowledge) rather than HTTP/1.1.
    pub h2: bool,
}

/// The path both servers answer: this framework's route for `Echo::echo_record`.
const PATH: &str = "/Echo/echo_record";

async fn axum_echo(Json((record,)): Json<(Record,)>) -> Json<Record> {
    Json(record)
}

/// A connection's way to send requests.
#[derive(Clone)]
enum Sender {
    H1(std::sync::Arc<tokio::sync::Mutex<http1::SendRequest<Full<Bytes>>>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

async fn connect(addr: SocketAddr, h2: bool) -> Sender {
    let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    if h2 {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await.expect("h2 handshake");
        tokio::spawn(conn);
        Sender::H2(sender)
    } else {
        let (sender, conn) = http1::handshake(io).await.expect("http1 handshake");
        tokio::spawn(conn);
        Sender::H1(std::sync::Arc::new(tokio::sync::Mutex::new(sender)))
    }
}

/// One call: the record posted as `[record]`, the answer read back as a record.
async fn call(sender: Sender, record: Record) -> Option<Record> {
    let body = serde_json::to_vec(&(record,)).ok()?;
    let request = Request::post(PATH)
        .header("content-type", "application/json")
        .header("host", "bench")
        .body(Full::new(Bytes::from(body)))
        .ok()?;
    let response = match sender {
        Sender::H1(sender) => sender.lock().await.send_request(request).await.ok()?,
        Sender::H2(mut sender) => sender.send_request(request).await.ok()?,
    };
    if !response.status().is_success() {
        return None;
    }
    let bytes = response.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&bytes).ok()
}

impl Framework for Http {
    fn name(&self) -> String {
        let server = match self.server {
            Server::RpcCore => "waypost/http",
            Server::Axum => "axum",
        };
        format!("{server}+{}", if self.h2 { "h2" } else { "http1.1" })
    }

    fn supports(&self, kind: PayloadKind) -> bool {
        kind == PayloadKind::Record
    }

    fn serve(&self, listener: std::net::TcpListener) -> ServeFuture {
        match self.server {
            Server::RpcCore => Box::pin(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let server = ServerBuilder::new().add_service(echo_server()).serve_listener(listener);
                Box::new(server) as Box<dyn std::any::Any + Send>
            }),
            Server::Axum => spawn_server(listener, |listener| async move {
                let app = axum::Router::new().route(PATH, post(axum_echo));
                let _ = axum::serve(listener, app).await;
            }),
        }
    }

    fn load(&self, addr: SocketAddr, payload: Payload, shape: Shape, timing: Timing) -> LoadFuture {
        let h2 = self.h2;
        Box::pin(async move {
            // HTTP/1.1 has one call in flight per connection: a connection per caller.
            let (connections, shape) = match h2 {
                true => (shape.connections, shape),
                false => (
                    shape.connections * shape.concurrency,
                    Shape {
                        connections: shape.connections * shape.concurrency,
                        concurrency: 1,
                    },
                ),
            };
            let mut senders = Vec::with_capacity(connections);
            for _ in 0..connections {
                senders.push(connect(addr, h2).await);
            }
            echo_loop(senders, shape, timing, payload.record(), call).await
        })
    }
}
