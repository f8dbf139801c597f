//! tonic: protobuf over HTTP/2.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use tonic::{Request, Response, Status};

use super::{closed_loop, payload, spawn_server, Framework, Sample, Timing};

mod pb {
    tonic::include_proto!("echo");
}

use pb::echo_client::EchoClient;
use pb::echo_server::{Echo, EchoServer};
use pb::EchoMsg;

struct EchoImpl;

#[tonic::async_trait]
impl Echo for EchoImpl {
    async fn echo(&self, request: Request<EchoMsg>) -> Result<Response<EchoMsg>, Status> {
        Ok(Response::new(request.into_inner()))
    }
}

/// tonic 0.14.
pub struct Tonic;

impl Framework for Tonic {
    fn name(&self) -> String {
        "tonic/protobuf".to_owned()
    }

    fn serve(&self, listener: std::net::TcpListener) -> Box<dyn std::any::Any + Send> {
        spawn_server(listener, |listener| async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(EchoServer::new(EchoImpl))
                .serve_with_incoming(incoming)
                .await;
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
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("tonic endpoint")
                .tcp_nodelay(true)
                .connect()
                .await
                .expect("tonic connect");
            let client = EchoClient::new(channel);
            let body = payload(size);
            closed_loop(concurrency, timing, move || {
                let mut client = client.clone();
                let msg = EchoMsg { payload: body.clone() };
                async move { client.echo(msg).await.is_ok() }
            })
            .await
        })
    }
}
