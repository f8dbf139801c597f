//! The reader task: completes whichever call or stream a frame names, answers pings, and closes
//! the connection (with the reason its calls report) when the server goes away or breaks the
//! protocol.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tracing::debug;

use super::state::{CloseReason, Shared, HEALTHY};
use crate::body::Body;
use crate::error::ProtocolError;
use crate::protocol::{flags, Credit, Header, MessageType, Status};
use crate::stream::Inbound;
use crate::transport::{FrameReader, OutFrame, ReadError};

/// The most calls in flight on a connection for its reader to let answered callers go early
/// (see `FrameReader::at_early_flush`).
pub(super) const EARLY_FLUSH_IN_FLIGHT: usize = 64;

pub(super) async fn read_loop<R: AsyncRead + Unpin>(
    shared: Arc<Shared>,
    mut reader: FrameReader<R>,
    tx: mpsc::Sender<OutFrame>,
) {
    let reason = loop {
        let frame = tokio::select! {
            biased;
            _ = shared.closed.cancelled() => return,
            frame = reader.next() => frame,
        };
        match frame {
            Ok(Some(frame)) => {
                shared.frames_read.fetch_add(1, Ordering::Relaxed);
                if shared.liveness.load(Ordering::Relaxed) != HEALTHY {
                    shared.heard.notify_one();
                }
                match frame.header.message_type {
                    MessageType::Response if frame.header.status == Status::UnsupportedVersion => {
                        let message = String::from_utf8_lossy(&frame.body.as_one()).into_owned();
                        debug!(addr = %shared.addr, %message, "the server refused our protocol version");
                        shared.close_for(CloseReason::VersionRejected(message));
                        return;
                    }
                    MessageType::Response => {
                        if frame.header.flags & flags::DECOMPRESSES != 0
                            && !shared.peer_decompresses.load(Ordering::Relaxed)
                        {
                            shared.peer_decompresses.store(true, Ordering::Relaxed);
                        }
                        let id = frame.header.request_id;
                        let (waiter, stream) = {
                            let mut pending = shared.pending();
                            match pending.calls.remove(&id) {
                                Some(waiter) => (Some(waiter), None),
                                None => (None, pending.streams.remove(&id)),
                            }
                        };
                        // No waiter: the call gave up already; the late reply is dropped.
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(frame);
                        } else if let Some(stream) = stream {
                            stream.end(frame, shared.max_frame_len);
                        }
                        shared.close_if_drained();
                        if reader.at_early_flush() && shared.in_flight.load(Ordering::Relaxed) <= EARLY_FLUSH_IN_FLIGHT
                        {
                            // The callers answered so far run and queue their next requests,
                            // which the writer sends before this reads on. Only with few calls
                            // in flight: with many, whole batches keep both ends busy, and
                            // breaking them up left a client that was the bottleneck (JSON,
                            // 256 outstanding) a quarter slower.
                            tokio::task::yield_now().await;
                        }
                    }
                    MessageType::GoAway => {
                        debug!(addr = %shared.addr, "the server sent GoAway; no new calls on this connection");
                        shared.going_away.store(true, Ordering::Release);
                        shared.close_if_drained();
                    }
                    MessageType::Ping => {
                        let pong = OutFrame::Frame {
                            header: Header::new(MessageType::Pong, frame.header.request_id),
                            body: Body::default(),
                        };
                        if tx.send(pong).await.is_err() {
                            break "writer stopped".to_owned();
                        }
                    }
                    MessageType::StreamItem => {
                        let pending = shared.pending();
                        let full = pending.streams.get(&frame.header.request_id).is_some_and(|slot| {
                            matches!(
                                slot.events.try_send(Inbound::Batch(frame.body)),
                                Err(mpsc::error::TrySendError::Full(_))
                            )
                        });
                        if full {
                            break "protocol violation: stream items beyond the credit granted".to_owned();
                        }
                    }
                    MessageType::Credit => {
                        let credit = match Credit::parse(&frame.body.as_one()) {
                            Ok(credit) => credit,
                            Err(e) => break format!("protocol violation: {e}"),
                        };
                        if let Some(slot) = shared.pending().streams.get(&frame.header.request_id) {
                            slot.window.grant(credit);
                        }
                    }
                    MessageType::Cancel => {
                        // The server's handler dropped the client's items: stop sending them.
                        if let Some(slot) = shared.pending().streams.get(&frame.header.request_id) {
                            slot.window.stop();
                        }
                    }
                    MessageType::Pong | MessageType::Extension(_) => {}
                    other => {
                        break format!("protocol violation: server sent a {other:?} frame");
                    }
                }
            }
            Ok(None) if !shared.heard_from_server() => break closed_unanswered("closed"),
            Ok(None) => break "closed by the server".to_owned(),
            Err(ReadError::Protocol(e @ ProtocolError::UnsupportedVersion(_))) => {
                shared.close_for(CloseReason::VersionRejected(e.to_string()));
                return;
            }
            Err(ReadError::Io(e)) if !shared.heard_from_server() => break closed_before_answering(&e),
            Err(e) => break format!("read failed: {e}"),
        }
    };
    shared.close(&reason);
}

/// Why a read failed before the server sent anything at all: its TLS refused this client, or
/// (any other failure) see [`closed_unanswered`].
pub(super) fn closed_before_answering(error: &std::io::Error) -> String {
    #[cfg(feature = "tls")]
    if crate::tls::is_refusal_alert(error) {
        return format!("refused by the server's TLS before it answered anything: {error}");
    }
    closed_unanswered(&format!("dropped ({error})"))
}

/// Why a connection ended before the server sent anything at all: most likely a peer that
/// does not speak our protocol version (a version-1 server closes such a connection silently).
pub(super) fn closed_unanswered(how: &str) -> String {
    format!(
        "{how} by the server before it answered anything (a server that speaks another protocol \
         version closes like this; this client speaks version {})",
        crate::protocol::PROTOCOL_VERSION
    )
}
