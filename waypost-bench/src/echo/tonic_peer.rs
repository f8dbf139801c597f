//! tonic: protobuf over HTTP/2, its idiomatic configuration (message size limits raised for
//! the 1 MiB rows); optionally over TLS (rustls with ring, server certificate only).

use std::net::SocketAddr;

use tonic::{Request, Response, Status};

use super::{
    echo_loop, spawn_server, tls_file, Framework, LoadFuture, Payload, PayloadKind, ServeFuture, Shape, Timing,
};

use super::pb;
use pb::echo_client::EchoClient;
use pb::echo_server::{Echo, EchoServer};

/// Largest message either side accepts.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

struct EchoImpl;

#[tonic::async_trait]
impl Echo for EchoImpl {
    async fn echo_bytes(&self, request: Request<pb::BytesMsg>) -> Result<Response<pb::BytesMsg>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    async fn echo_text(&self, request: Request<pb::TextMsg>) -> Result<Response<pb::TextMsg>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    async fn echo_record(&self, request: Request<pb::Record>) -> Result<Response<pb::Record>, Status> {
        Ok(Response::new(request.into_inner()))
    }
}

fn record(payload: &Payload) -> pb::Record {
    let r = payload.record();
    pb::Record {
        id: r.id,
        name: r.name,
        tags: r.tags,
        items: r
            .items
            .into_iter()
            .map(|i| pb::Item {
                sku: i.sku,
                qty: i.qty,
                price: i.price,
            })
            .collect(),
    }
}

/// tonic 0.14.
pub struct Tonic {
    /// Over TLS.
    pub tls: bool,
}

impl Framework for Tonic {
    fn name(&self) -> String {
        if self.tls {
            "tonic/protobuf+tls"
        } else {
            "tonic/protobuf"
        }
        .to_owned()
    }

    fn serve(&self, listener: std::net::TcpListener) -> ServeFuture {
        let tls = self.tls;
        spawn_server(listener, move |listener| async move {
            // `Server::tcp_nodelay` only reaches sockets tonic accepts itself: set it here, or
            // small responses wait for delayed ACKs (about 40 ms each).
            let incoming =
                tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |s| {
                    s.inspect(|s| {
                        let _ = s.set_nodelay(true);
                    })
                });
            let service = EchoServer::new(EchoImpl)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
            let mut builder = tonic::transport::Server::builder();
            if tls {
                let identity = tonic::transport::Identity::from_pem(
                    std::fs::read(tls_file("server.pem")).expect("server.pem"),
                    std::fs::read(tls_file("server.key")).expect("server.key"),
                );
                builder = builder
                    .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                    .expect("tonic TLS");
            }
            let _ = builder.add_service(service).serve_with_incoming(incoming).await;
        })
    }

    fn load(&self, addr: SocketAddr, payload: Payload, shape: Shape, timing: Timing) -> LoadFuture {
        let tls = self.tls;
        Box::pin(async move {
            let mut clients = Vec::new();
            for _ in 0..shape.connections {
                let scheme = if tls { "https" } else { "http" };
                let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
                    .expect("tonic endpoint")
                    .tcp_nodelay(true);
                if tls {
                    let ca =
                        tonic::transport::Certificate::from_pem(std::fs::read(tls_file("ca.pem")).expect("ca.pem"));
                    endpoint = endpoint
                        .tls_config(
                            tonic::transport::ClientTlsConfig::new()
                                .ca_certificate(ca)
                                .domain_name("localhost"),
                        )
                        .expect("tonic client TLS");
                }
                let channel = endpoint.connect().await.expect("tonic connect");
                clients.push(
                    EchoClient::new(channel)
                        .max_decoding_message_size(MAX_MESSAGE)
                        .max_encoding_message_size(MAX_MESSAGE),
                );
            }
            match payload.kind {
                PayloadKind::Bytes => {
                    echo_loop(
                        clients,
                        shape,
                        timing,
                        payload.bytes(),
                        |mut c: EchoClient<_>, b| async move {
                            let msg = pb::BytesMsg { payload: b };
                            c.echo_bytes(msg).await.ok().map(|r| r.into_inner().payload)
                        },
                    )
                    .await
                }
                PayloadKind::Text => {
                    echo_loop(
                        clients,
                        shape,
                        timing,
                        payload.text(),
                        |mut c: EchoClient<_>, b| async move {
                            let msg = pb::TextMsg { payload: b };
                            c.echo_text(msg).await.ok().map(|r| r.into_inner().payload)
                        },
                    )
                    .await
                }
                PayloadKind::Record => echo_loop(
                    clients,
                    shape,
                    timing,
                    record(&payload),
                    |mut c: EchoClient<_>, msg| async move { c.echo_record(msg).await.ok().map(|r| r.into_inner()) },
                )
                .await,
            }
        })
    }
}
