//! One multiplexed TCP connection to an endpoint.
//!
//! Many calls share the connection. Each call takes a fresh request id, parks a oneshot sender
//! in the pending map under that id, and hands its frame to the writer task. The reader task
//! completes whichever pending call a response names, in whatever order responses arrive.
//! A call that gives up (deadline, or its future dropped) removes its entry, so late replies
//! are discarded and nothing accumulates.
//!
//! A call that gives up before its reply (its deadline passed, or its future was dropped) sends
//! a Cancel frame with its request id, so the server drops the handler instead of working for
//! nobody.
//!
//! When the connection breaks (read or write error, protocol violation, keep-alive timeout),
//! it is marked closed under the pending map's lock and every pending sender is dropped, so
//! every waiting call fails at once with [`RpcError::ConnectionClosed`]; a call that arrives
//! afterwards fails without being sent, and the pool replaces the connection on the next call.
//! A server that answers with a version rejection fails every call with
//! [`ProtocolError::VersionRejected`](crate::ProtocolError::VersionRejected) instead.
//!
//! A GoAway from the server marks the connection as leaving: it takes no new calls (the pool
//! opens another connection for them), the calls in flight complete, and it closes once the
//! last of them has.
//!
//! A keep-alive task sends a ping when nothing has been read for the idle interval and closes
//! the connection when no frame at all arrives within the ping timeout.
//!
//! A call that times out after it was sent makes the keep-alive task check the server at once:
//! a ping that must be answered within the probe timeout. A server that is frozen (stopped,
//! a VM stalled, a pause) keeps its TCP connection and its registry key, and would take every
//! call sent to it until their deadlines; one that misses the probe is marked unresponsive:
//! the calls waiting on it fail at once, the pool's endpoint tells the balancer to avoid it
//! (see [`Connection::is_suspect`]), and the connection stays open, pinging, so the first
//! answer (the process resumed) makes it healthy again. Probing spends pings, never a user's
//! call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn, Instrument};

use super::ClientOptions;
use crate::body::Body;
use crate::compression::Compression;
use crate::error::{ProtocolError, RpcError};
use crate::metrics;
use crate::protocol::{flags, Credit, Frame, Header, MessageType, Status};
use crate::reply::Reply;
use crate::serializer::SerializerKind;
use crate::stream::{control_frame, send_items, Grant, Inbound, ItemStream, RawStream, SendWindow, Sent, StreamWindow};
use crate::transport::{send_control, write_loop, FrameReader, OutFrame, ReadError, WRITE_QUEUE};

/// A connected, multiplexed client connection.
pub struct Connection {
    shared: Arc<Shared>,
    tx: mpsc::Sender<OutFrame>,
    _tasks: [AbortOnDropHandle<()>; 3],
}

struct Shared {
    addr: String,
    pending: Mutex<Pending>,
    next_id: AtomicU64,
    /// Calls between sending and their end (answered, failed or given up), and open streams.
    in_flight: AtomicUsize,
    /// Request bytes of those calls (the pool spreads load by it).
    in_flight_bytes: AtomicUsize,
    /// Cancelled once the connection is closed for good.
    closed: CancellationToken,
    /// Frames read so far. The keep-alive task notices reads by its change, so the reader
    /// does not read the clock for every frame.
    frames_read: AtomicU64,
    /// The server sent GoAway: no new calls.
    going_away: AtomicBool,
    /// Whether the server answers: [`HEALTHY`], [`PROBING`] or [`UNRESPONSIVE`].
    liveness: AtomicU8,
    /// Asks the keep-alive task to probe the server now.
    probe: Notify,
    /// Woken by the reader for every frame while the server is probed or unresponsive.
    heard: Notify,
    /// The server said it decodes compressed requests (a response carried
    /// [`flags::DECOMPRESSES`]).
    peer_decompresses: AtomicBool,
    /// Largest response body accepted, decompressed ones included.
    max_frame_len: usize,
}

/// The server answers as far as anyone knows.
const HEALTHY: u8 = 0;
/// A call timed out; a ping is checking the server.
const PROBING: u8 = 1;
/// The server missed the probe; pings go on until it answers.
const UNRESPONSIVE: u8 = 2;

#[derive(Default)]
struct Pending {
    calls: HashMap<u64, oneshot::Sender<Frame>>,
    /// Open streams, by request id.
    streams: HashMap<u64, StreamSlot>,
    /// Why the connection closed, once it has.
    closed: Option<CloseReason>,
    /// Why the waiting calls were failed while the connection stays open (the server missed
    /// a probe).
    abandoned: Option<String>,
}

/// What the reader needs of an open stream.
struct StreamSlot {
    /// Where its items and its end go.
    events: mpsc::Sender<Inbound>,
    /// The room the server granted for the client's items; its first grant accepts the stream.
    window: Arc<SendWindow>,
    /// `name:version` and method, for the errors that end it.
    service: Box<str>,
    method: Box<str>,
}

impl StreamSlot {
    /// The server's Response ended the stream (a body over `max_len` is refused).
    fn end(self, frame: Frame, max_len: usize) {
        let end = answer(frame, &self.service, &self.method, Duration::ZERO, max_len);
        // The window leaves one place for the end.
        let _ = self.events.try_send(Inbound::End(end));
        self.window.stop();
    }
}

/// What a Response frame answers a call or stream of `service`'s `method` that waited
/// `waited`: the reply for [`Status::Ok`] and [`Status::ApplicationError`], else the matching
/// [`RpcError`] (the server giving up at the call's deadline is a timeout to the caller).
fn answer(frame: Frame, service: &str, method: &str, waited: Duration, max_len: usize) -> Result<Reply, RpcError> {
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
enum CloseReason {
    /// Broken, closed by either side, or timed out: [`RpcError::ConnectionClosed`].
    Closed(String),
    /// The server refused our protocol version: [`ProtocolError::VersionRejected`].
    VersionRejected(String),
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        // The map stays consistent even if a holder panicked: every operation is one insert/remove.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether any frame at all has been read.
    fn heard_from_server(&self) -> bool {
        self.frames_read.load(Ordering::Relaxed) > 0
    }

    /// Marks the connection closed and fails every pending call.
    fn close(&self, reason: &str) {
        self.close_for(CloseReason::Closed(reason.to_owned()));
    }

    fn close_for(&self, reason: CloseReason) {
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

    fn closed_error(&self, sent: bool) -> RpcError {
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
    fn request_probe(&self) {
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
    fn abandon_calls(&self, reason: String) {
        let dropped = {
            let mut pending = self.pending();
            pending.abandoned = Some(reason);
            (std::mem::take(&mut pending.calls), std::mem::take(&mut pending.streams))
        };
        stop_streams(dropped.1);
        drop(dropped.0);
    }

    /// After GoAway: closes the connection once no call is waiting on it.
    fn close_if_drained(&self) {
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
fn stop_streams(streams: HashMap<u64, StreamSlot>) {
    for slot in streams.into_values() {
        slot.window.stop();
    }
}

/// Removes a call's pending entry when the call ends without its reply, and tells the server
/// (Cancel) when the request had been sent.
struct PendingGuard<'a> {
    shared: &'a Shared,
    tx: &'a mpsc::Sender<OutFrame>,
    id: u64,
    /// The call has not had its reply.
    armed: bool,
    /// The request was handed to the writer.
    sent: bool,
    /// The request's body length, counted in flight.
    bytes: usize,
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

/// The TLS handshake with the provider at `addr`, by `limit`. Its failure is a connect error
/// that says why (the certificate, the name, or a server that does not speak TLS).
#[cfg(feature = "tls")]
async fn handshake(
    stream: TcpStream,
    addr: &str,
    tls: &crate::tls::ClientTls,
    limit: Instant,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, RpcError> {
    let failed = |message: String| RpcError::Connect {
        addr: addr.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, message),
    };
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let name = tls.server_name(host).map_err(|e| failed(format!("TLS: {e}")))?;
    match tokio::time::timeout_at(limit, tls.connector().connect(name, stream)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(failed(
            "TLS handshake failed: the server closed the connection (does it serve TLS?)".to_owned(),
        )),
        Ok(Err(e)) => Err(failed(format!("TLS handshake failed: {e}"))),
        Err(_) => Err(failed("TLS handshake timed out".to_owned())),
    }
}

impl Connection {
    /// Connects to `addr`, giving up at `deadline` or after the configured connect timeout.
    pub async fn connect(addr: &str, options: &ClientOptions, deadline: Option<Instant>) -> Result<Self, RpcError> {
        let mut limit = Instant::now() + options.connect_timeout;
        if let Some(d) = deadline {
            limit = limit.min(d);
        }
        let stream = match tokio::time::timeout_at(limit, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(RpcError::Connect {
                    addr: addr.to_owned(),
                    source,
                })
            }
            Err(_) => {
                return Err(RpcError::Connect {
                    addr: addr.to_owned(),
                    source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
                })
            }
        };
        let _ = stream.set_nodelay(true);
        #[cfg(feature = "tls")]
        if let Some(tls) = &options.tls {
            let stream = handshake(stream, addr, tls, limit).await?;
            let (read_half, write_half) = tokio::io::split(stream);
            return Ok(Self::from_halves(read_half, write_half, addr.to_owned(), options));
        }
        let (read_half, write_half) = stream.into_split();
        Ok(Self::from_halves(read_half, write_half, addr.to_owned(), options))
    }

    fn from_halves<R, W>(read_half: R, write_half: W, addr: String, options: &ClientOptions) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let shared = Arc::new(Shared {
            addr: addr.clone(),
            pending: Mutex::new(Pending::default()),
            next_id: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
            in_flight_bytes: AtomicUsize::new(0),
            closed: CancellationToken::new(),
            frames_read: AtomicU64::new(0),
            going_away: AtomicBool::new(false),
            liveness: AtomicU8::new(HEALTHY),
            probe: Notify::new(),
            heard: Notify::new(),
            peer_decompresses: AtomicBool::new(false),
            max_frame_len: options.max_frame_len,
        });
        let span = tracing::debug_span!("rpc_client_conn", %addr);
        let reader = tokio::spawn(
            read_loop(
                shared.clone(),
                FrameReader::new(read_half, options.max_frame_len, None),
                tx.clone(),
            )
            .instrument(span.clone()),
        );
        let writer_shared = shared.clone();
        let writer = tokio::spawn(
            async move {
                tokio::select! {
                    result = write_loop(write_half, rx, || writer_shared.in_flight.load(Ordering::Relaxed) > 1) => {
                        let reason = match result {
                            Ok(()) => "writer stopped".to_owned(),
                            Err(e) => format!("write failed: {e}"),
                        };
                        writer_shared.close(&reason);
                    }
                    _ = writer_shared.closed.cancelled() => {}
                }
            }
            .instrument(span.clone()),
        );
        let keepalive = tokio::spawn(
            keepalive(
                shared.clone(),
                tx.clone(),
                Liveness {
                    interval: options.keepalive_interval,
                    timeout: options.keepalive_timeout,
                    probe_timeout: options.probe_timeout,
                },
            )
            .instrument(span),
        );
        Self {
            shared,
            tx,
            _tasks: [
                AbortOnDropHandle::new(reader),
                AbortOnDropHandle::new(writer),
                AbortOnDropHandle::new(keepalive),
            ],
        }
    }

    /// The endpoint this connection goes to.
    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// Whether the connection has closed; a closed connection never reopens.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    /// Whether the server sent GoAway (the connection takes no new calls).
    pub fn is_going_away(&self) -> bool {
        self.shared.going_away.load(Ordering::Acquire)
    }

    /// Whether calls should avoid the connection's server: a call on it timed out and the
    /// server has not answered since (being probed, or unresponsive).
    pub fn is_suspect(&self) -> bool {
        self.shared.liveness.load(Ordering::Acquire) != HEALTHY && !self.is_closed()
    }

    /// Whether new calls may use the connection: open, and not told to go away.
    pub fn accepts_calls(&self) -> bool {
        !self.is_closed() && !self.is_going_away()
    }

    /// Request bytes of the calls in flight.
    pub fn in_flight_bytes(&self) -> usize {
        self.shared.in_flight_bytes.load(Ordering::Relaxed)
    }

    /// Number of calls waiting for their reply.
    pub fn pending_calls(&self) -> usize {
        self.shared.pending().calls.len()
    }

    /// Closes the connection, failing every pending call.
    pub fn close(&self) {
        self.shared.close("closed by the client");
    }

    /// Sends one request and waits for its reply until `deadline`; with `compression`, the
    /// arguments go compressed once the server said it decodes them, and a compressed reply
    /// is asked for (see [`crate::compression`]).
    ///
    /// Returns the reply for [`Status::Ok`] and [`Status::ApplicationError`]; every other status
    /// becomes the matching [`RpcError`].
    pub async fn call(
        &self,
        service: &str,
        method: &str,
        serializer: SerializerKind,
        body: Body,
        deadline: Instant,
        compression: Option<Compression>,
    ) -> Result<Reply, RpcError> {
        let shared = &*self.shared;
        let mut compressed = 0;
        let body = match compression {
            None => body,
            Some(c) => {
                compressed = flags::DECOMPRESSES;
                let packed = shared
                    .peer_decompresses
                    .load(Ordering::Relaxed)
                    .then(|| c.compress_request(&body))
                    .flatten();
                match packed {
                    Some((packed, flag)) => {
                        compressed |= flag;
                        packed
                    }
                    None => body,
                }
            }
        };
        let body_len = body.len();
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply_rx) = oneshot::channel();
        {
            let mut pending = shared.pending();
            if pending.closed.is_some() {
                drop(pending);
                return Err(shared.closed_error(false));
            }
            pending.calls.insert(id, reply_tx);
        }
        let mut guard = PendingGuard {
            shared,
            tx: &self.tx,
            id,
            armed: true,
            sent: false,
            bytes: body_len,
        };
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        shared.in_flight_bytes.fetch_add(body_len, Ordering::Relaxed);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut header = Header::new(MessageType::Request, id);
        header.serializer = serializer.id();
        header.timeout_ms = u32::try_from(remaining.as_millis()).unwrap_or(u32::MAX).max(1);
        header.flags |= compressed;
        let exchange = async {
            if self.tx.send(OutFrame::Frame { header, body }).await.is_err() {
                return Err(shared.closed_error(false));
            }
            guard.sent = true;
            reply_rx.await.map_err(|_| shared.closed_error(true))
        };
        let outcome = tokio::time::timeout_at(deadline, exchange).await;
        let frame = match outcome {
            Ok(Ok(frame)) => {
                guard.armed = false;
                drop(guard);
                frame
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                if guard.sent {
                    shared.request_probe();
                }
                return Err(RpcError::Timeout(remaining));
            }
        };
        answer(frame, service, method, remaining, shared.max_frame_len)
    }
}

/// What opening a stream takes besides its request.
pub struct StreamOpen {
    /// The client's items, when the method takes a stream; taken when the server accepts.
    pub input: std::sync::Mutex<Option<ItemStream>>,
    /// The client's receive window for the server's items.
    pub window: StreamWindow,
    /// When the whole stream must have ended; none: no limit.
    pub deadline: Option<Instant>,
    /// The longest wait between two of the server's items (or its end); none: no limit.
    pub idle_timeout: Option<Duration>,
}

impl Connection {
    /// Opens a stream: sends the request (`body`: its prefix, then the client's window, then
    /// the arguments) and waits, until `accept_by`, for the server to accept it. Then the
    /// client's items (if any) go out from a task of their own as the server's credit allows,
    /// and the returned stream yields the server's items and the call's end; it keeps the
    /// connection open while it lasts. Dropping it cancels the call.
    pub(crate) async fn open_stream(
        self: &Arc<Self>,
        service: &str,
        method: &str,
        serializer: SerializerKind,
        body: Body,
        open: &StreamOpen,
        accept_by: Instant,
    ) -> Result<RawStream, RpcError> {
        let asked = Instant::now();
        let shared = &self.shared;
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (events, rx) = mpsc::channel(open.window.credit().messages as usize + 1);
        let window = Arc::new(SendWindow::default());
        {
            let mut pending = shared.pending();
            if pending.closed.is_some() {
                drop(pending);
                return Err(shared.closed_error(false));
            }
            let slot = StreamSlot {
                events: events.clone(),
                window: window.clone(),
                service: service.into(),
                method: method.into(),
            };
            pending.streams.insert(id, slot);
        }
        // An open stream counts as a call in flight (the writer gathers frames while more
        // may follow).
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let registration = StreamRegistration {
            shared: shared.clone(),
            id,
        };
        let closed_by = shared.clone();
        let mut raw = RawStream::new(
            rx,
            Grant::new(self.tx.clone(), id, open.window),
            Arc::new(move || closed_by.closed_error(true)),
            "client",
        );
        let mut header = Header::new(MessageType::Request, id);
        header.serializer = serializer.id();
        header.flags = flags::STREAM;
        header.timeout_ms = match open.deadline {
            Some(d) => u32::try_from(d.saturating_duration_since(Instant::now()).as_millis())
                .unwrap_or(u32::MAX)
                .max(1),
            None => 0,
        };
        if self.tx.send(OutFrame::Frame { header, body }).await.is_err() {
            return Err(shared.closed_error(false));
        }
        // Why a stream ended before it was accepted: the server's refusal, or the connection's end.
        let refusal = |raw: &mut RawStream| match futures_util::StreamExt::next(raw).now_or_never() {
            Some(Some(crate::stream::StreamEvent::End(Err(e)))) => e,
            Some(Some(_)) => RpcError::internal("the server ended the stream before accepting it"),
            _ => shared.closed_error(true),
        };
        let refused = tokio::select! {
            biased;
            accepted = window.accepted() => (!accepted).then(|| refusal(&mut raw)),
            _ = futures_util::StreamExt::next(&mut raw) => Some(refusal(&mut raw)),
            _ = tokio::time::sleep_until(accept_by) => {
                shared.request_probe();
                Some(RpcError::Timeout(asked.elapsed()))
            }
        };
        if let Some(error) = refused {
            return Err(error);
        }
        let input = open.input.lock().unwrap_or_else(PoisonError::into_inner).take();
        let sender = input.map(|input| {
            let pump = ItemPump {
                input,
                window,
                tx: self.tx.clone(),
                events: events.downgrade(),
                id,
                serializer: serializer.id(),
            };
            AbortOnDropHandle::new(tokio::spawn(pump.run()))
        });
        drop(events);
        Ok(raw
            .with_timeouts(open.deadline, open.idle_timeout)
            .owning((registration, sender, self.clone())))
    }
}

/// Forgets a stream's slot when its reader goes.
struct StreamRegistration {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for StreamRegistration {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        let slot = self.shared.pending().streams.remove(&self.id);
        if let Some(slot) = slot {
            slot.window.stop();
        }
        self.shared.close_if_drained();
    }
}

/// Sends a client's items, then its StreamEnd.
struct ItemPump {
    input: ItemStream,
    window: Arc<SendWindow>,
    tx: mpsc::Sender<OutFrame>,
    /// The stream's events, to end it when an item cannot be encoded.
    events: mpsc::WeakSender<Inbound>,
    id: u64,
    serializer: u8,
}

impl ItemPump {
    async fn run(mut self) {
        match send_items(
            &mut self.input,
            &self.window,
            &self.tx,
            self.id,
            self.serializer,
            "client",
        )
        .await
        {
            Sent::All => {
                let _ = self.tx.send(control_frame(MessageType::StreamEnd, self.id)).await;
            }
            Sent::Ended(reply) => {
                // An item could not be encoded: the call fails here and is cancelled there.
                if let Some(events) = self.events.upgrade() {
                    let error = RpcError::Encode(reply.message());
                    let _ = events.try_send(Inbound::End(Err(error)));
                }
            }
            Sent::Stopped => {}
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.close("connection dropped");
    }
}

/// The most calls in flight on a connection for its reader to let answered callers go early
/// (see `FrameReader::at_early_flush`).
const EARLY_FLUSH_IN_FLIGHT: usize = 64;

async fn read_loop<R: AsyncRead + Unpin>(shared: Arc<Shared>, mut reader: FrameReader<R>, tx: mpsc::Sender<OutFrame>) {
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
fn closed_before_answering(error: &std::io::Error) -> String {
    #[cfg(feature = "tls")]
    if crate::tls::is_refusal_alert(error) {
        return format!("refused by the server's TLS before it answered anything: {error}");
    }
    closed_unanswered(&format!("dropped ({error})"))
}

/// Why a connection ended before the server sent anything at all: most likely a peer that
/// does not speak our protocol version (a version-1 server closes such a connection silently).
fn closed_unanswered(how: &str) -> String {
    format!(
        "{how} by the server before it answered anything (a server that speaks another protocol \
         version closes like this; this client speaks version {})",
        crate::protocol::PROTOCOL_VERSION
    )
}

/// The keep-alive task's settings.
struct Liveness {
    /// A ping goes out when nothing has been read for this long...
    interval: Duration,
    /// ...and the connection closes when it gets no answer within this.
    timeout: Duration,
    /// A probe (after a call timed out) must be answered within this.
    probe_timeout: Duration,
}

/// Pings when nothing has been read for `interval`; closes the connection when a ping gets
/// no frame at all back within `timeout`. Reads are noticed at the ticks (every half of the
/// shorter of the two), by the change of the frame counter. Probes the server when a call
/// asks for it (see the module docs).
async fn keepalive(shared: Arc<Shared>, tx: mpsc::Sender<OutFrame>, liveness: Liveness) {
    let Liveness {
        interval,
        timeout,
        probe_timeout,
    } = liveness;
    let period = (interval.min(timeout) / 2).max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut frames_seen = shared.frames_read.load(Ordering::Relaxed);
    let mut last_read = Instant::now();
    let mut ping_sent_at: Option<Instant> = None;
    let mut ping_id = 0u64;
    loop {
        tokio::select! {
            _ = shared.closed.cancelled() => return,
            _ = ticker.tick() => {}
            _ = shared.probe.notified() => {
                if probe(&shared, &tx, &mut ping_id, probe_timeout).await.is_none() {
                    return;
                }
                (frames_seen, last_read, ping_sent_at) = (shared.frames_read.load(Ordering::Relaxed), Instant::now(), None);
                continue;
            }
        }
        let now = Instant::now();
        let frames = shared.frames_read.load(Ordering::Relaxed);
        if frames != frames_seen {
            (frames_seen, last_read) = (frames, now);
        }
        if let Some(sent) = ping_sent_at {
            if last_read > sent {
                ping_sent_at = None;
            } else if now.duration_since(sent) >= timeout {
                shared.close(&format!("no answer to ping within {timeout:?}"));
                return;
            }
        }
        if ping_sent_at.is_none() && now.duration_since(last_read) >= interval {
            ping_id = ping_id.wrapping_add(1);
            if !send_ping(&tx, ping_id, now + timeout).await {
                // The writer stopped, or could not take a ping for the whole timeout.
                shared.close(&format!("no room to send a ping within {timeout:?}"));
                return;
            }
            ping_sent_at = Some(now);
        }
    }
}

/// Queues a ping, waiting for room in the write queue until `until`; false when the writer
/// has stopped or the queue stayed full.
async fn send_ping(tx: &mpsc::Sender<OutFrame>, id: u64, until: Instant) -> bool {
    let ping = OutFrame::Frame {
        header: Header::new(MessageType::Ping, id),
        body: Body::default(),
    };
    matches!(tokio::time::timeout_at(until, tx.send(ping)).await, Ok(Ok(())))
}

/// Checks the server after a call timed out: a ping answered within `within` leaves it
/// healthy. Otherwise it is unresponsive: the waiting calls fail now, and pings go on (the
/// wait doubling up to eight times `within`) until any frame arrives. `None` once the
/// connection has closed.
async fn probe(shared: &Shared, tx: &mpsc::Sender<OutFrame>, ping_id: &mut u64, within: Duration) -> Option<()> {
    if ping_answered(shared, tx, ping_id, within).await? {
        shared.liveness.store(HEALTHY, Ordering::Release);
        return Some(());
    }
    shared.liveness.store(UNRESPONSIVE, Ordering::Release);
    let reason = format!("the provider did not answer a ping within {within:?} after a call timed out");
    let waiting = shared.pending().calls.len();
    warn!(addr = %shared.addr, waiting, "{reason}; calls avoid it until it answers");
    metrics::client_ejection(&shared.addr);
    shared.abandon_calls(reason);
    let since = Instant::now();
    let mut wait = within;
    loop {
        if ping_answered(shared, tx, ping_id, wait).await? {
            info!(addr = %shared.addr, after = ?since.elapsed(), "the provider answers again");
            shared.pending().abandoned = None;
            shared.liveness.store(HEALTHY, Ordering::Release);
            return Some(());
        }
        wait = (wait * 2).min(within * 8);
    }
}

/// Sends a ping and waits up to `within` for any frame from the server; `None` once the
/// connection has closed.
async fn ping_answered(
    shared: &Shared,
    tx: &mpsc::Sender<OutFrame>,
    ping_id: &mut u64,
    within: Duration,
) -> Option<bool> {
    let before = shared.frames_read.load(Ordering::Acquire);
    let deadline = Instant::now() + within;
    *ping_id = ping_id.wrapping_add(1);
    if !send_ping(tx, *ping_id, deadline).await {
        return match shared.closed.is_cancelled() {
            true => None,
            false => Some(false),
        };
    }
    loop {
        if shared.frames_read.load(Ordering::Acquire) != before {
            return Some(true);
        }
        tokio::select! {
            _ = shared.closed.cancelled() => return None,
            _ = shared.heard.notified() => {}
            _ = tokio::time::sleep_until(deadline) => {
                return Some(shared.frames_read.load(Ordering::Acquire) != before);
            }
        }
    }
}
