//! One accepted connection: read frames, run calls, write replies.
//!
//! Each request's handler is polled once right away, in this connection's task. A handler that
//! finishes then (the common case: no I/O of its own) costs no task, no timer and no channel
//! send: its reply joins a batch that goes to the writer, as one write, once every frame
//! already read has been handled. A handler that has to wait gets a task of its own, with the
//! call's deadline, and sends its reply to the writer when it is done, so slow calls never hold
//! up fast ones and replies leave in any order. Either way a panic in the handler fails that
//! call only.

use std::any::Any;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, error, warn, Instrument};

use super::Shared;
use crate::error::ProtocolError;
use crate::protocol::{encode_frame, Frame, Header, MessageType, RequestBody, Status};
use crate::reply::Reply;
use crate::serializer::SerializerKind;
use crate::server::BoxFuture;
use crate::transport::{write_loop, FrameReader, OutFrame, ReadError, WRITE_QUEUE};

/// Serves one connection until the peer leaves, breaks the protocol, or the server aborts.
pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let (read_half, write_half) = stream.into_split();
    let (tx, rx) = mpsc::channel::<OutFrame>(WRITE_QUEUE);
    let calls = shared.calls.clone();
    let mut writer = AbortOnDropHandle::new(tokio::spawn(async move {
        // Only replies of calls that had to wait come as single frames; others may follow.
        if let Err(e) = write_loop(write_half, rx, move || calls.len() > 1).await {
            debug!(error = %e, "write failed");
        }
    }));
    let mut reader = FrameReader::new(read_half, shared.max_frame_len, Some(shared.frame_timeout));
    // Replies that were ready at once, written together before the next socket read.
    let mut batch = BytesMut::new();
    loop {
        let next = match reader.try_next() {
            Ok(Some(frame)) => Ok(Some(frame)),
            Ok(None) => {
                if !flush(&mut batch, &tx).await {
                    break;
                }
                tokio::select! {
                    biased;
                    _ = shared.abort.cancelled() => return,
                    next = reader.next() => next,
                }
            }
            Err(e) => Err(e),
        };
        match next {
            Ok(Some(frame)) => {
                if let Err(e) = handle_frame(frame, &mut batch, &tx, &shared).await {
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
    flush(&mut batch, &tx).await;
    drop(tx);
    tokio::select! {
        _ = &mut writer => {}
        _ = shared.abort.cancelled() => {}
    }
}

/// Hands the batch of ready replies to the writer; `false` once the writer is gone.
async fn flush(batch: &mut BytesMut, tx: &mpsc::Sender<OutFrame>) -> bool {
    if batch.is_empty() {
        return true;
    }
    tx.send(OutFrame::Encoded(batch.split().freeze())).await.is_ok()
}

/// Handles one frame; an error means the connection must close.
async fn handle_frame(
    frame: Frame,
    batch: &mut BytesMut,
    tx: &mpsc::Sender<OutFrame>,
    shared: &Arc<Shared>,
) -> Result<(), ProtocolError> {
    let header = frame.header;
    match header.message_type {
        MessageType::Request => {
            if let Some(reply) = start_call(header, frame.body, tx, shared).await {
                encode_frame(
                    reply_header(header.request_id, header.serializer, &reply),
                    &reply.body,
                    batch,
                );
            }
            Ok(())
        }
        MessageType::Ping => {
            encode_frame(Header::new(MessageType::Pong, header.request_id), &[], batch);
            Ok(())
        }
        MessageType::Response => Err(ProtocolError::UnexpectedFrame("response")),
        MessageType::Pong => Err(ProtocolError::UnexpectedFrame("pong")),
    }
}

/// Runs the call as far as it goes without waiting. Returns its reply (or the reply refusing
/// it) when there is one now; `None` when it continues in a task of its own.
async fn start_call(
    header: Header,
    body: bytes::Bytes,
    tx: &mpsc::Sender<OutFrame>,
    shared: &Arc<Shared>,
) -> Option<Reply> {
    if shared.draining.is_cancelled() {
        return Some(Reply::failure(Status::ShuttingDown, "server is shutting down"));
    }
    let serializer = match SerializerKind::from_id(header.serializer) {
        Ok(s) => s,
        Err(e) => return Some(Reply::failure(Status::ProtocolError, e.to_string())),
    };
    let RequestBody { service, method, args } = match RequestBody::parse(body) {
        Ok(r) => r,
        Err(e) => return Some(Reply::failure(Status::ProtocolError, e.to_string())),
    };
    let (service_key, method) = match (std::str::from_utf8(&service), std::str::from_utf8(&method)) {
        (Ok(s), Ok(m)) => (s, m),
        _ => {
            return Some(Reply::failure(
                Status::ProtocolError,
                "service key or method name is not UTF-8",
            ))
        }
    };
    let Some(service) = shared.services.get(service_key) else {
        return Some(Reply::failure(Status::ServiceNotFound, service_key.to_owned()));
    };
    let Ok(permit) = shared.limit.clone().try_acquire_owned() else {
        return Some(Reply::failure(Status::Overloaded, "server concurrency limit reached"));
    };
    let panicked = |panic: Box<dyn Any + Send>| {
        let message = panic_message(panic.as_ref());
        error!(service = service_key, method, request_id = header.request_id, panic = %message, "handler panicked");
        Reply::failure(Status::InternalError, format!("handler panicked: {message}"))
    };
    let mut call = match std::panic::catch_unwind(AssertUnwindSafe(|| service.call(method, serializer, args))) {
        Ok(call) => call,
        Err(panic) => return Some(panicked(panic)),
    };
    // The first poll, in this task: most handlers finish here.
    let first = poll_fn(|cx| Poll::Ready(std::panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx))))).await;
    match first {
        Ok(Poll::Ready(reply)) => Some(reply),
        Err(panic) => Some(panicked(panic)),
        Ok(Poll::Pending) => {
            let span = tracing::debug_span!(
                "rpc_call",
                service = service_key,
                method,
                request_id = header.request_id
            );
            shared
                .calls
                .spawn(finish_call(call, header, permit, tx.clone(), shared.clone()).instrument(span));
            None
        }
    }
}

/// Drives a call that had to wait, under its deadline, and sends its reply.
async fn finish_call(
    call: BoxFuture<'static, Reply>,
    header: Header,
    permit: tokio::sync::OwnedSemaphorePermit,
    tx: mpsc::Sender<OutFrame>,
    shared: Arc<Shared>,
) {
    let _permit = permit;
    let run = AssertUnwindSafe(call).catch_unwind();
    let deadline = (header.timeout_ms > 0).then(|| Duration::from_millis(u64::from(header.timeout_ms)));
    let outcome = tokio::select! {
        biased;
        _ = shared.abort.cancelled() => return,
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
    // The connection may be gone; the caller then no longer waits for this reply.
    let _ = tx
        .send(OutFrame::Frame {
            header: reply_header(header.request_id, header.serializer, &reply),
            body: reply.body,
        })
        .await;
}

/// Runs `fut`, giving up (with `None`) once the deadline passes.
async fn with_deadline<F: std::future::Future>(fut: F, deadline: Option<Duration>) -> Option<F::Output> {
    match deadline {
        Some(d) => tokio::time::timeout(d, fut).await.ok(),
        None => Some(fut.await),
    }
}

fn reply_header(request_id: u64, serializer: u8, reply: &Reply) -> Header {
    let mut header = Header::new(MessageType::Response, request_id);
    header.serializer = serializer;
    header.status = reply.status;
    header
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
