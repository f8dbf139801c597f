//! What a connection's tasks and calls share: the calls waiting for their replies and the open
//! streams (under one lock, with whether and why the connection closed), the server's
//! liveness as the keep-alive task last found it, and how each reply is turned into a result.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::error::{ProtocolError, RpcError};
use crate::protocol::{flags, Frame, MessageType, Status};
use crate::reply::Reply;
use crate::stream::{control_frame, Inbound, SendWindow};
use crate::transport::{send_control, OutFrame};

pub(super) struct Shared {
    pub(super) addr: String,
    pub(super) pending: Mutex<Pending>,
    pub(super) next_id: AtomicU64,
    /// Calls between sending and their end (answered, failed or given up), and open streams.
    pub(super) in_flight: AtomicUsize,
    /// Request bytes of those calls (the pool spreads load by it).
    pub(super) in_flight_bytes: AtomicUsize,
    /// Cancelled once the connection is closed for good.
    pub(super) closed: CancellationToken,
    /// Frames read so far. The keep-alive task notices reads by its change, so the reader
    /// does not read the clock for every frame.
    pub(super) frames_read: AtomicU64,
    /// The server sent GoAway: no new calls.
    pub(super) going_away: AtomicBool,
    /// Whether the server answers: [`HEALTHY`], [`PROBING`] or [`UNRESPONSIVE`].
    pub(super) liveness: AtomicU8,
    /// Asks the keep-alive task to probe the server now.
    pub(super) probe: Notify,
    /// Woken by the reader for every frame while the server is probed or unresponsive.
    pub(super) heard: Notify,
    /// The server said it decodes compressed requests (a response carried
    /// [`flags::DECOMPRESSES`]).
    pub(super) peer_decompresses: AtomicBool,
    /// Largest response body accepted, decompressed ones included.
    pub(super) max_frame_len: usize,
}

/// The server answers as far as anyone knows.
pub(super) const HEALTHY: u8 = 0;
/// A call timed out; a ping is checking the server.
pub(super) const PROBING: u8 = 1;
/// The server missed the probe; pings go on until it answers.
pub(super) const UNRESPONSIVE: u8 = 2;

#[derive(Default)]
pub(super) struct Pending {
    pub(super) calls: HashMap<u64, oneshot::Sender<Frame>>,
    /// Open streams, by request id.
    pub(super) streams: HashMap<u64, StreamSlot>,
    /// Why the connection closed, once it has.
    pub(super) closed: Option<CloseReason>,
    /// Why the waiting calls were failed while the connection stays open (the server missed
    /// a probe).
    pub(super) abandoned: Option<String>,
}

/// What the reader needs of an open stream.
pub(super) struct StreamSlot {
    /// Where its items and its end go.
    pub(super) events: mpsc::Sender<Inbound>,
    /// The room the server granted for the client's items; its first grant accepts the stream.
    pub(super) window: Arc<SendWindow>,
    /// `name:version` and method, for the errors that end it.
    pub(super) service: Box<str>,
    pub(super) method: Box<str>,
}

impl StreamSlot {
    /// The server's Response ended the stream (a body over `max_len` is refused).
    pub(super) fn end(self, frame: Frame, max_len: usize) {
        let end = answer(frame, &self.service, &self.method, Duration::ZERO, max_len);
        // The window leaves one place for the end.
        let _ = self.events.try_send(Inbound::End(end));
        self.window.stop();
    }
}

/// What a Response frame answers a call or stream of `service`'s `method` that waited
/// `waited`: the reply for [`Status::Ok`] and [`Status::ApplicationError`], else the matching
/// [`RpcError`] (the server giving up at the call's deadline is a timeout to the caller).
pub(super) fn answer(
    frame: Frame,
    service: &str,
    method: &str,
    waited: Duration,
    max_len: usize,
) -> Result<Reply, RpcError> {
    let body = match frame.header.flags & flags::COMPRESSED {
        0 => frame.body,
        _ => crate::compression::decompress(&frame.body, max_len)
            .map_err(|e| RpcError::Decode(format!("the reply of {service}/{method}: {e}")))?
            .into(),
    };
    let reply = Reply {
        status: frame.header.status,
        body,
    };
    match reply.status {
        Status::Ok | Status::ApplicationError => Ok(reply),
        Status::DeadlineExceeded => Err(RpcError::Timeout(waited)),
        _ => Err(reply.into_error(service, method)),
    }
}

/// Why a connection closed, as its calls report it.
#[derive(Clone)]
pub(super) enum CloseReason {
    /// Broken, closed by either side, or timed out: [`RpcError::ConnectionClosed`].
    Closed(String),
    /// The server refused our protocol version: [`ProtocolError::VersionRejected`].
    VersionRejected(String),
}

impl Shared {
    pub(super) fn pending(&self) -> MutexGuard<'_, Pending> {
        // The map stays consistent even if a holder panicked: every operation is one insert/remove.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether any frame at all has been read.
    pub(super) fn heard_from_server(&self) -> bool {
        self.frames_read.load(Ordering::Relaxed) > 0
    }

    /// Marks the connection closed and fails every pending call.
    pub(super) fn close(&self, reason: &str) {
        self.close_for(CloseReason::Closed(reason.to_owned()));
    }

    pub(super) fn close_for(&self, reason: CloseReason) {
        let dropped = {
            let mut pending = self.pending();
            if pending.closed.is_some() {
                return;
            }
            pending.closed = Some(reason);
            (std::mem::take(&mut pending.calls), std::mem::take(&mut pending.streams))
        };
        debug!(addr = %self.addr, failed_calls = dropped.0.len(), failed_streams = dropped.1.len(), "connection closed");
        stop_streams(dropped.1);
        drop(dropped.0);
        self.closed.cancel();
    }

    pub(super) fn closed_error(&self, sent: bool) -> RpcError {
        let (reason, abandoned) = {
            let pending = self.pending();
            (pending.closed.clone(), pending.abandoned.clone())
        };
        let closed = |reason: String| RpcError::ConnectionClosed {
            addr: self.addr.clone(),
            reason,
            sent,
        };
        match reason {
            Some(CloseReason::VersionRejected(message)) => RpcError::Protocol(ProtocolError::VersionRejected(message)),
            Some(CloseReason::Closed(reason)) => closed(reason),
            None => closed(abandoned.unwrap_or_else(|| "connection closed".to_owned())),
        }
    }

    /// A call sent on the connection timed out: probe the server, unless that is under way.
    pub(super) fn request_probe(&self) {
        if self
            .liveness
            .compare_exchange(HEALTHY, PROBING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.probe.notify_one();
        }
    }

    /// The server missed the probe: every waiting call fails now with `reason`; the
    /// connection stays open.
    pub(super) fn abandon_calls(&self, reason: String) {
        let dropped = {
            let mut pending = self.pending();
            pending.abandoned = Some(reason);
            (std::mem::take(&mut pending.calls), std::mem::take(&mut pending.streams))
        };
        stop_streams(dropped.1);
        drop(dropped.0);
    }

    /// After GoAway: closes the connection once no call is waiting on it.
    pub(super) fn close_if_drained(&self) {
        if !self.going_away.load(Ordering::Acquire) {
            return;
        }
        let idle = {
            let pending = self.pending();
            pending.calls.is_empty() && pending.streams.is_empty()
        };
        if idle {
            self.close("the server sent GoAway and every call on the connection has ended");
        }
    }
}

/// Stops the senders of streams whose connection failed them; their readers see the end of
/// their events and report the connection's error.
pub(super) fn stop_streams(streams: HashMap<u64, StreamSlot>) {
    for slot in streams.into_values() {
        slot.window.stop();
    }
}

/// Removes a call's pending entry when the call ends without its reply, and tells the server
/// (Cancel) when the request had been sent.
pub(super) struct PendingGuard<'a> {
    pub(super) shared: &'a Shared,
    pub(super) tx: &'a mpsc::Sender<OutFrame>,
    pub(super) id: u64,
    /// The call has not had its reply.
    pub(super) armed: bool,
    /// The request was handed to the writer.
    pub(super) sent: bool,
    /// The request's body length, counted in flight.
    pub(super) bytes: usize,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.shared.in_flight_bytes.fetch_sub(self.bytes, Ordering::Relaxed);
        if !self.armed {
            return;
        }
        let waiting = self.shared.pending().calls.remove(&self.id).is_some();
        if waiting && self.sent && !self.shared.closed.is_cancelled() {
            send_control(self.tx, control_frame(MessageType::Cancel, self.id));
        }
        self.shared.close_if_drained();
    }
}
