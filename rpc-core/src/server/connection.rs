//! One accepted connection: read frames, run calls concurrently, write replies.

use std::any::Any;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, error, warn, Instrument};

use super::Shared;
use crate::error::ProtocolError;
use crate::protocol::{Frame, Header, MessageType, RequestBody, Status};
use crate::reply::Reply;
use crate::serializer::SerializerKind;
use tokio_util::task::AbortOnDropHandle;

use crate::transport::{write_loop, FrameReader, OutFrame, ReadError, WRITE_QUEUE};

/// Serves one connection until the peer leaves, breaks the protocol, or the server aborts.
pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let (read_half, write_half) = stream.into_split();
    let (tx, rx) = mpsc::channel::<OutFrame>(WRITE_QUEUE);
    let mut writer = AbortOnDropHandle::new(tokio::spawn(async move {
        if let Err(e) = write_loop(write_half, rx).await {
            debug!(error = %e, "write failed");
        }
    }));
    let mut reader = FrameReader::new(read_half, shared.max_frame_len, Some(shared.frame_timeout));
    loop {
        let next = tokio::select! {
            biased;
            _ = shared.abort.cancelled() => return,
            next = reader.next() => next,
        };
        match next {
            Ok(Some(frame)) => {
                if let Err(e) = handle_frame(frame, &tx, &shared).await {
                    warn!(%peer, error = %e, "protocol error, closing connection");
                    return;
                }
            }
            Ok(None) => break,
            Err(ReadError::Protocol(e)) => {
                warn!(%peer, error = %e, "protocol error, closing connection");
                return;
            }
            Err(ReadError::Io(e)) => {
                debug!(%peer, error = %e, "read failed");
                break;
            }
        }
    }
    // The peer stopped sending: let the calls still running answer, then close.
    drop(tx);
    tokio::select! {
        _ = &mut writer => {}
        _ = shared.abort.cancelled() => {}
    }
}

/// Handles one frame; an error means the connection must close.
async fn handle_frame(frame: Frame, tx: &mpsc::Sender<OutFrame>, shared: &Arc<Shared>) -> Result<(), ProtocolError> {
    let header = frame.header;
    match header.message_type {
        MessageType::Request => {
            if let Some(refusal) = start_call(header, frame.body, tx, shared) {
                send_reply(tx, header.request_id, header.serializer, refusal).await;
            }
            Ok(())
        }
        MessageType::Ping => {
            let _ = tx
                .send(OutFrame {
                    header: Header::new(MessageType::Pong, header.request_id),
                    body: Bytes::new(),
                })
                .await;
            Ok(())
        }
        MessageType::Response => Err(ProtocolError::UnexpectedFrame("response")),
        MessageType::Pong => Err(ProtocolError::UnexpectedFrame("pong")),
    }
}

/// Spawns the call, or returns the reply that refuses it.
fn start_call(header: Header, body: Bytes, tx: &mpsc::Sender<OutFrame>, shared: &Arc<Shared>) -> Option<Reply> {
    if shared.draining.is_cancelled() {
        return Some(Reply::failure(Status::ShuttingDown, "server is shutting down"));
    }
    let serializer = match SerializerKind::from_id(header.serializer) {
        Ok(s) => s,
        Err(e) => return Some(Reply::failure(Status::ProtocolError, e.to_string())),
    };
    let request = match RequestBody::parse(body) {
        Ok(r) => r,
        Err(e) => return Some(Reply::failure(Status::ProtocolError, e.to_string())),
    };
    let (service_key, method) = match (request.service_str(), request.method_str()) {
        (Ok(s), Ok(m)) => (s, m),
        (Err(e), _) | (_, Err(e)) => return Some(Reply::failure(Status::ProtocolError, e.to_string())),
    };
    let Some(service) = shared.services.get(service_key) else {
        return Some(Reply::failure(Status::ServiceNotFound, service_key.to_owned()));
    };
    let Ok(permit) = shared.limit.clone().try_acquire_owned() else {
        return Some(Reply::failure(Status::Overloaded, "server concurrency limit reached"));
    };
    let span = tracing::debug_span!(
        "rpc_call",
        service = service_key,
        method,
        request_id = header.request_id
    );
    let service = service.clone();
    let method = method.to_owned();
    let tx = tx.clone();
    let abort = shared.abort.clone();
    shared.calls.spawn(
        async move {
            let _permit = permit;
            let run = AssertUnwindSafe(async { service.call(&method, serializer, request.args).await }).catch_unwind();
            let deadline = (header.timeout_ms > 0).then(|| Duration::from_millis(u64::from(header.timeout_ms)));
            let outcome = tokio::select! {
                biased;
                _ = abort.cancelled() => return,
                outcome = with_deadline(run, deadline) => outcome,
            };
            let reply = match outcome {
                Some(Ok(reply)) => reply,
                Some(Err(panic)) => {
                    let message = panic_message(panic.as_ref());
                    error!(panic = %message, "handler panicked");
                    Reply::failure(Status::InternalError, format!("handler panicked: {message}"))
                }
                None => {
                    debug!("deadline passed, call abandoned");
                    Reply::failure(Status::DeadlineExceeded, "deadline exceeded on the server")
                }
            };
            send_reply(&tx, header.request_id, header.serializer, reply).await;
        }
        .instrument(span),
    );
    None
}

/// Runs `fut`, giving up (with `None`) once the deadline passes.
async fn with_deadline<F: std::future::Future>(fut: F, deadline: Option<Duration>) -> Option<F::Output> {
    match deadline {
        Some(d) => tokio::time::timeout(d, fut).await.ok(),
        None => Some(fut.await),
    }
}

async fn send_reply(tx: &mpsc::Sender<OutFrame>, request_id: u64, serializer: u8, reply: Reply) {
    let mut header = Header::new(MessageType::Response, request_id);
    header.serializer = serializer;
    header.status = reply.status;
    // The connection may be gone; the caller then no longer waits for this reply.
    let _ = tx
        .send(OutFrame {
            header,
            body: reply.body,
        })
        .await;
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
