//! volo-thrift: its default configuration (framed TTHeader binary protocol, pooled
//! connections), `binary` payloads as `Bytes` and strings as `FastStr`, as volo users write.

use std::net::SocketAddr;

use super::{echo_loop, Framework, LoadFuture, Payload, PayloadKind, ServeFuture, Shape, Timing};

mod generated {
    #![allow(missing_docs, clippy::all, unused)]
    include!(concat!(env!("OUT_DIR"), "/volo_echo.rs"));
}

use generated::volo_echo::echo::{Echo, EchoClient, EchoClientBuilder, EchoServer, Item, Record};

struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo_bytes(&self, payload: pilota::Bytes) -> Result<pilota::Bytes, volo_thrift::ServerError> {
        Ok(payload)
    }

    async fn echo_text(&self, payload: pilota::FastStr) -> Result<pilota::FastStr, volo_thrift::ServerError> {
        Ok(payload)
    }

    async fn echo_record(&self, payload: Record) -> Result<Record, volo_thrift::ServerError> {
        Ok(payload)
    }
}

fn record(payload: &Payload) -> Record {
    let r = payload.record();
    Record {
        id: r.id as i64,
        name: r.name.into(),
        tags: r.tags.into_iter().map(Into::into).collect(),
        items: r
            .items
            .into_iter()
            .map(|i| Item {
                sku: i.sku as i64,
                qty: i.qty as i32,
                price: i.price,
            })
            .collect(),
    }
}

/// volo-thrift 0.12.
pub struct Volo;

impl Framework for Volo {
    fn name(&self) -> String {
        "volo-thrift".to_owned()
    }

    fn serve(&self, listener: std::net::TcpListener) -> ServeFuture {
        super::spawn_server(listener, |listener| async move {
            let incoming = volo::net::incoming::DefaultIncoming::from(listener);
            let _ = EchoServer::new(EchoImpl).run(incoming).await;
        })
    }

    fn load(&self, addr: SocketAddr, payload: Payload, shape: Shape, timing: Timing) -> LoadFuture {
        Box::pin(async move {
            let clients: Vec<EchoClient> = (0..shape.connections)
                .map(|_| EchoClientBuilder::new("echo").address(addr).build())
                .collect();
            match payload.kind {
                PayloadKind::Bytes => {
                    echo_loop(
                        clients,
                        shape,
                        timing,
                        pilota::Bytes::from(payload.bytes()),
                        |c: EchoClient, body| async move { c.echo_bytes(body).await.ok() },
                    )
                    .await
                }
                PayloadKind::Text => {
                    echo_loop(
                        clients,
                        shape,
                        timing,
                        pilota::FastStr::from(payload.text()),
                        |c: EchoClient, body| async move { c.echo_text(body).await.ok() },
                    )
                    .await
                }
                PayloadKind::Record => {
                    echo_loop(
                        clients,
                        shape,
                        timing,
                        record(&payload),
                        |c: EchoClient, body| async move { c.echo_record(body).await.ok() },
                    )
                    .await
                }
            }
        })
    }
}
