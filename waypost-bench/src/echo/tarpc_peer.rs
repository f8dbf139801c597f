//! tarpc over its TCP transport with bincode: its idiomatic configuration, plain user types.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::{client, context};

use super::payload::Record;
use super::{echo_loop, spawn_server, Framework, LoadFuture, Payload, PayloadKind, ServeFuture, Shape, Timing};

#[tarpc::service]
trait Echo {
    async fn bytes(payload: Vec<u8>) -> Vec<u8>;
    async fn text(payload: String) -> String;
    async fn record(payload: Record) -> Record;
}

#[derive(Clone)]
struct EchoImpl;

impl Echo for EchoImpl {
    async fn bytes(self, _: context::Context, payload: Vec<u8>) -> Vec<u8> {
        payload
    }

    async fn text(self, _: context::Context, payload: String) -> String {
        payload
    }

    async fn record(self, _: context::Context, payload: Record) -> Record {
        payload
    }
}

/// tarpc 0.38.
pub struct Tarpc;

fn ctx() -> context::Context {
    let mut ctx = context::current();
    ctx.deadline = Instant::now() + Duration::from_secs(60);
    ctx
}

impl Framework for Tarpc {
    fn name(&self) -> String {
        "tarpc/bincode".to_owned()
    }

    fn serve(&self, listener: std::net::TcpListener) -> ServeFuture {
        spawn_server(listener, |listener| async move {
            let mut incoming = tarpc::serde_transport::tcp::listen_on(listener, Bincode::default)
                .await
                .expect("tarpc listener");
            incoming.config_mut().max_frame_length(usize::MAX);
            while let Some(Ok(transport)) = incoming.next().await {
                tokio::spawn(
                    BaseChannel::with_defaults(transport)
                        .execute(EchoImpl.serve())
                        .for_each(|response| async move {
                            tokio::spawn(response);
                        }),
                );
            }
        })
    }

    fn load(&self, addr: SocketAddr, payload: Payload, shape: Shape, timing: Timing) -> LoadFuture {
        Box::pin(async move {
            let mut clients = Vec::new();
            for _ in 0..shape.connections {
                let mut connect = tarpc::serde_transport::tcp::connect(addr, Bincode::default);
                connect.config_mut().max_frame_length(usize::MAX);
                let transport = connect.await.expect("tarpc connect");
                let mut config = client::Config::default();
                config.max_in_flight_requests = 4096;
                config.pending_request_buffer = 4096;
                clients.push(EchoClient::new(config, transport).spawn());
            }
            match payload.kind {
                PayloadKind::Bytes => {
                    echo_loop(
                        clients,
                        shape,
                        timing,
                        payload.bytes(),
                        |c: EchoClient, body| async move { c.bytes(ctx(), body).await.ok() },
                    )
                    .await
                }
                PayloadKind::Text => {
                    echo_loop(
                        clients,
                        shape,
                        timing,
                        payload.text(),
                        |c: EchoClient, body| async move { c.text(ctx(), body).await.ok() },
                    )
                    .await
                }
                PayloadKind::Record => {
                    echo_loop(
                        clients,
                        shape,
                        timing,
                        payload.record(),
                        |c: EchoClient, body| async move { c.record(ctx(), body).await.ok() },
                    )
                    .await
                }
            }
        })
    }
}
