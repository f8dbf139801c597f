//! This framework, once per serializer.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use rpc_core::server::ServerBuilder;
use rpc_core::{Channel, SerializerKind};
use serde_bytes::ByteBuf;

use super::{closed_loop, payload, Framework, Sample, Timing};

/// The echo service.
#[rpc_core::service(name = "Echo")]
pub trait Echo {
    /// Returns its argument.
    async fn echo(&self, payload: ByteBuf) -> ByteBuf;
}

struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(&self, payload: ByteBuf) -> ByteBuf {
        payload
    }
}

/// rpc-core with one serializer.
pub struct RpcCore(pub SerializerKind);

impl Framework for RpcCore {
    fn name(&self) -> String {
        format!("rpc-core/{}", self.0)
    }

    fn serve(&self, listener: std::net::TcpListener) -> Box<dyn std::any::Any + Send> {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        Box::new(
            ServerBuilder::new()
                .add_service(EchoServer::new(EchoImpl))
                .serve_listener(listener),
        )
    }

    fn load(
        &self,
        addr: SocketAddr,
        size: usize,
        concurrency: usize,
        timing: Timing,
    ) -> Pin<Box<dyn Future<Output = Sample> + Send>> {
        let serializer = self.0;
        Box::pin(async move {
            let channel = Channel::direct(addr.to_string())
                .expect("a host:port address")
                .with_serializer(serializer)
                .with_timeout(Duration::from_secs(30));
            let client = EchoClient::new(channel).expect("client");
            let body = ByteBuf::from(payload(size));
            closed_loop(concurrency, timing, move || {
                let (client, body) = (client.clone(), body.clone());
                async move { client.echo(body).await.is_ok() }
            })
            .await
        })
    }
}
