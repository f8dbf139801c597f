//! The TLS side of accepting a connection: the handshake under its timeout, the verified
//! client identity, and a clear answer to a client that speaks plain RPC to a TLS port.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tracing::debug;

use crate::context::PeerIdentity;
use crate::metrics;
use crate::protocol::{encode_frame, Header, MessageType, Status, HEADER_LEN, MAGIC};
use crate::tls::ServerTls;

/// The connection after a completed handshake (all of it within the handshake timeout) and the client's verified identity (mTLS), or
/// `None` when the connection is closed instead.
pub(super) async fn accept(
    mut stream: TcpStream,
    peer: SocketAddr,
    tls: &ServerTls,
) -> Option<(TlsStream<TcpStream>, Option<Arc<PeerIdentity>>)> {
    let limit = tls.handshake_timeout();
    let deadline = Instant::now() + limit;
    match tokio::time::timeout_at(deadline, speaks_plain_rpc(&stream)).await {
        Ok(true) => {
            refuse_plain(&mut stream, peer, deadline).await;
            return None;
        }
        Ok(false) => {}
        Err(_) => {
            metrics::tls_handshake_failed();
            debug!(%peer, ?limit, "the client sent nothing before the handshake timeout");
            return None;
        }
    }
    match tokio::time::timeout_at(deadline, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => {
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| crate::tls::identity_of(cert))
                .map(Arc::new);
            Some((stream, identity))
        }
        Ok(Err(e)) => {
            metrics::tls_handshake_failed();
            debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            metrics::tls_handshake_failed();
            debug!(%peer, ?limit, "TLS handshake timed out");
            None
        }
    }
}

/// Whether the first bytes the client sent are this protocol's magic rather than a TLS record.
async fn speaks_plain_rpc(stream: &TcpStream) -> bool {
    let mut start = [0u8; 2];
    matches!(stream.peek(&mut start).await, Ok(2)) && u16::from_be_bytes(start) == MAGIC
}

/// Answers the first request of a plain-text client with an error that says TLS is required.
async fn refuse_plain(stream: &mut TcpStream, peer: SocketAddr, deadline: Instant) {
    metrics::tls_handshake_failed();
    let mut raw = [0u8; HEADER_LEN];
    let request_id = match tokio::time::timeout_at(deadline, stream.read_exact(&mut raw)).await {
        Ok(Ok(_)) => Header::parse(&raw, usize::MAX).map(|h| h.request_id).unwrap_or(0),
        _ => return,
    };
    debug!(%peer, "a plain-text client called a TLS port");
    let mut header = Header::new(MessageType::Response, request_id);
    header.status = Status::Unsupported;
    let mut out = bytes::BytesMut::new();
    encode_frame(
        header,
        b"this server requires TLS: configure rpc.consumer.tls to call it",
        &mut out,
    );
    let _ = tokio::time::timeout_at(deadline, stream.write_all(&out)).await;
    let _ = stream.shutdown().await;
}
