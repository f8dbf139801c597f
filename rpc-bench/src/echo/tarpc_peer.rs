//! tarpc over its TCP transport with bincode.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_bytes::ByteBuf;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::{client, context};

use super::{closed_loop, payload, spawn_server, Framework, Sample, Timing};

#[tarpc::service]
trait Echo {
    async fn echo(payload: ByteBuf) -> ByteBuf;
}

#[derive(Clone)]
struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(self, _: context::Context, payload: ByteBuf) -> ByteBuf {
        payload
    }
}

/// tarpc 0.38.
pub struct Tarpc;

impl Framework for Tarpc {
    fn name(&self) -> String {
        "tarpc/bincode".to_owned()
    }

    fn serve(&self, listener: std::net::TcpListener) -> Box<dyn std::any::Any + Send> {
        spawn_server(listener, |listener| async move {
            let mut incoming = tarpc::serde_transport::tcp::listen_on(listener, Bincode::default)
                .await
                .expect("tarpc listener");
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

    fn load(
        &self,
        addr: SocketAddr,
        size: usize,
        concurrency: usize,
        timing: Timing,
    ) -> Pin<Box<dyn Future<Output = Sample> + Send>> {
        Box::pin(async move {
            let transport = tarpc::serde_transport::tcp::connect(addr, Bincode::default)
                .await
                .expect("tarpc connect");
            let mut config = client::Config::default();
            config.max_in_flight_requests = 4096;
            config.pending_request_buffer = 4096;
            let client = EchoClient::new(config, transport).spawn();
            let body = ByteBuf::from(payload(size));
            closed_loop(concurrency, timing, move || {
                let (client, body) = (client.clone(), body.clone());
                async move {
                    let mut ctx = context::current();
                    ctx.deadline = Instant::now() + Duration::from_secs(30);
                    client.echo(ctx, body).await.is_ok()
                }
            })
            .await
        })
    }
}
