//! One accepted connection: read frames, run calls, write replies.
//!
//! Each request's handler is polled once right away, in this connection's task, inside the
//! call's context. A handler that finishes then (the common case: no I/O of its own) costs no
//! task, no timer and no channel send: its reply joins a batch that goes to the writer, as one
//! write, once every frame already read has been handled. A handler that has to wait gets a
//! task of its own, with the call's deadline, registered under its request id so that a
//! Cancel frame (or the connection's end) drops it; it sends its reply to the writer when it
//! is done, so slow calls never hold up fast ones and replies leave in any order. Either way a
//! panic in the handler fails that call only.
//!
//! When the server starts draining, the connection sends GoAway once and keeps serving the
//! calls in flight; requests that still arrive are answered `ShuttingDown`.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, warn, Instrument};

use super::admission::{rejected, Admitted, Arrival};
use super::call::{Invocation, ServerCall};
use super::finish::{call_span, drive, end_call_span, panicked, EndGuard};
use super::limits::CallPermit;
use super::running::{Registered, RunningCalls};
#[cfg(feature = "tls")]
use super::secure;
use super::stream::{StreamCall, StreamHost, Streams};
use super::{Shared, GO_AWAY_CLOSE_GRACE};
use crate::body::Body;
use crate::compression::{self, Compression};
use crate::context::{CallContext, PeerIdentity};
use crate::error::ProtocolError;
use crate::health::HEALTH_METHOD;
use crate::interceptor::Outcome;
use crate::metrics;
use crate::protocol::{flags, version_rejection, Credit, Frame, Header, MessageType, RequestBody, Status};
use crate::reply::Reply;
use crate::serializer::SerializerKind;
use crate::service::Service;
use crate::transport::{write_loop, FrameReader, OutFrame, Outgoing, ReadError, WRITE_QUEUE};

/// After the server aborts, how long a connection's writer may still write what is queued.
const WRITER_GRACE: Duration = Duration::from_millis(500);

/// Serves one connection until the peer leaves, breaks the protocol, goes idle, or the server
/// aborts. `slot` is the connection's share of the server's connection limit. With TLS the
/// handshake happens here, in the connection's own task, under the handshake timeout.
pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, slot: OwnedSemaphorePermit) {
    let slot = Slot::new(slot);
    #[cfg(feature = "http")]
    match first_bytes(&stream, &shared).await {
        FirstBytes::Http => {
            let _slot = slot;
            return super::http::serve(stream, peer, None, shared).await;
        }
        FirstBytes::Stalled => {
            warn!(%peer, "a request's first byte came without a second within the frame timeout; closing the connection");
            return;
        }
        FirstBytes::Rpc => {}
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = shared.tls.clone() {
        let Some((stream, identity)) = secure::accept(stream, peer, &tls).await else {
            return;
        };
        #[cfg(feature = "http")]
        if stream.get_ref().1.alpn_protocol().is_some() {
            // The client asked for HTTP (h2 or http/1.1) by ALPN.
            let _slot = slot;
            return super::http::serve(stream, peer, identity, shared).await;
        }
        let (read_half, write_half) = tokio::io::split(stream);
        return serve_halves(read_half, write_half, peer, identity, shared, slot).await;
    }
    let (read_half, write_half) = stream.into_split();
    serve_halves(read_half, write_half, peer, None, shared, slot).await
}

/// What a plain-TCP connection's first bytes say it speaks.
#[cfg(feature = "http")]
#[derive(Debug, PartialEq, Eq)]
enum FirstBytes {
    /// HTTP/1.1 or the HTTP/2 preface (see [`super::http`]).
    Http,
    /// Anything else: the RPC protocol, whose reader judges the bytes (and nothing at all, left
    /// to its idle handling).
    Rpc,
    /// One byte, and no second within the frame timeout: a request that never completes.
    Stalled,
}

/// What a plain-TCP connection's first two bytes say (see [`super::http`]). The first may take
/// up to the idle timeout, as for any request (a connection that sends nothing is left to the
/// protocol's idle handling, whose clock started at the accept, so it goes away after one idle
/// timeout, not two). A second that does not follow within the frame timeout, as the rest of
/// any request must, makes the connection [`FirstBytes::Stalled`]. Waiting for it costs little:
/// `peek` cannot wait for a byte beyond those it already sees, so it is retried after a pause
/// that doubles up to 50 ms. Over TLS, ALPN tells instead (see `serve`).
#[cfg(feature = "http")]
async fn first_bytes(stream: &TcpStream, shared: &Shared) -> FirstBytes {
    #[cfg(feature = "tls")]
    if shared.tls.is_some() {
        return FirstBytes::Rpc;
    }
    let mut first = [0u8; 2];
    match tokio::time::timeout(shared.idle_timeout, stream.peek(&mut first)).await {
        Ok(Ok(n)) if n >= first.len() => {}
        Ok(Ok(1)) => {
            let by = Instant::now() + shared.frame_timeout;
            let mut pause = Duration::from_millis(1);
            loop {
                match stream.peek(&mut first).await {
                    Ok(n) if n >= first.len() => break,
                    Ok(1) if Instant::now() + pause < by => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(50));
                    }
                    Ok(1) => return FirstBytes::Stalled,
                    _ => return FirstBytes::Rpc,
                }
            }
        }
        _ => return FirstBytes::Rpc,
    }
    if super::http::is_http(&first) {
        FirstBytes::Http
    } else {
        FirstBytes::Rpc
    }
}

/// Serves the protocol over a connection's two halves (plain TCP or TLS).
async fn serve_halves<R, W>(
    read_half: R,
    write_half: W,
    peer: SocketAddr,
    identity: Option<Arc<PeerIdentity>>,
    shared: Arc<Shared>,
    slot: Slot,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<OutFrame>(WRITE_QUEUE);
    let tracker = shared.calls.clone();
    let mut writer = AbortOnDropHandle::new(tokio::spawn(async move {
        // Only replies of calls that had to wait come as single frames; others may follow.
        if let Err(e) = write_loop(write_half, rx, move || tracker.len() > 1).await {
            debug!(error = %e, "write failed");
        }
    }));
    let conn = Conn {
        peer,
        identity,
        shared,
        tx,
        running: Arc::new(RunningCalls::default()),
        streams: Arc::new(Streams::default()),
        opened: slot.accepted,
        last_request_ms: AtomicU64::new(0),
    };
    let mut reader = FrameReader::new(read_half, conn.shared.max_frame_len, Some(conn.shared.frame_timeout))
        .with_budget(conn.shared.request_bytes.clone());
    // Replies that were ready at once, written together before the next socket read (and
    // early in a long read, see `FrameReader::at_early_flush`).
    let mut batch = Outgoing::default();
    // When GoAway went out (the server is draining, or the connection was idle).
    let mut went_away: Option<Instant> = None;
    // One timer for idleness and for closing after GoAway, reset only when it fires.
    let timer = tokio::time::sleep_until(slot.accepted + conn.shared.idle_timeout);
    tokio::pin!(timer);
    loop {
        let next = match reader.try_next() {
            Ok(Some(frame)) => Ok(Some(frame)),
            Ok(None) => {
                if !flush(&mut batch, &conn.tx).await {
                    break;
                }
                tokio::select! {
                    biased;
                    _ = conn.shared.abort.cancelled() => break,
                    _ = conn.shared.draining.cancelled(), if went_away.is_none() => {
                        batch.push_frame(Header::new(MessageType::GoAway, 0), Bytes::from_static(b"server shutting down"));
                        went_away = Some(Instant::now());
                        timer.as_mut().reset(Instant::now() + GO_AWAY_CLOSE_GRACE);
                        continue;
                    }
                    _ = &mut timer => {
                        let now = Instant::now();
                        let busy = conn.running.len() > 0;
                        match went_away {
                            // Told to go away, and did not: close once nothing runs here.
                            Some(_) if !busy => break,
                            Some(_) => timer.as_mut().reset(now + GO_AWAY_CLOSE_GRACE),
                            None => {
                                let idle = conn.idle_for(now);
                                if idle >= conn.shared.idle_timeout && !busy {
                                    debug!(%peer, ?idle, "idle connection: telling the client to go away");
                                    batch.push_frame(Header::new(MessageType::GoAway, 0), Bytes::from_static(b"idle connection"));
                                    went_away = Some(now);
                                    timer.as_mut().reset(now + GO_AWAY_CLOSE_GRACE);
                                } else {
                                    let left = conn.shared.idle_timeout.saturating_sub(idle);
                                    timer.as_mut().reset(now + left.max(Duration::from_millis(10)));
                                }
                            }
                        }
                        continue;
                    }
                    next = reader.next() => next,
                }
            }
            Err(e) => Err(e),
        };
        match next {
            Ok(Some(frame)) => {
                let held = reader.take_budget();
                if let Err(e) = conn.handle_frame(frame, held, &mut batch).await {
                    warn!(%peer, error = %e, "protocol error, closing connection");
                    break;
                }
                if reader.at_early_flush() {
                    if !flush(&mut batch, &conn.tx).await {
                        break;
                    }
                    // The writer (on this thread, with one worker) sends them now.
                    tokio::task::yield_now().await;
                }
            }
            Ok(None) => break,
            Err(ReadError::Protocol(e @ ProtocolError::UnsupportedVersion(_))) => {
                warn!(%peer, error = %e, "peer speaks another protocol version; answering once and closing");
                if let Some(rejection) = version_rejection(reader.buffered()) {
                    batch.push_encoded(&rejection);
                }
                break;
            }
            Err(ReadError::Protocol(e)) => {
                warn!(%peer, error = %e, "protocol error, closing connection");
                break;
            }
            Err(ReadError::Io(e)) => {
                debug!(%peer, error = %e, "read failed");
                break;
            }
        }
    }
    // The caller left (or broke the protocol): its calls still running have nobody to answer.
    let dropped = conn.running.cancel_all();
    if dropped > 0 {
        debug!(%peer, calls = dropped, "connection closed; dropped its running calls");
    }
    flush(&mut batch, &conn.tx).await;
    let abort = conn.shared.abort.clone();
    // The writer ends once every sender is gone: this one, and those of the dropped calls.
    drop(conn);
    // After the server's abort, the writer gets a moment to send what is queued (the
    // streams' shutting-down ends).
    tokio::select! {
        _ = &mut writer => {}
        _ = async {
            abort.cancelled().await;
            tokio::time::sleep(WRITER_GRACE).await;
        } => {}
    }
}

/// A connection's share of the server's connection limit, counted in
/// `rpc_server_connections` while it is held.
struct Slot {
    _permit: OwnedSemaphorePermit,
    /// When the connection was accepted: idleness counts from here, so the wait for its first
    /// bytes (the HTTP sniff, the TLS handshake) is part of it.
    accepted: Instant,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        metrics::server_connections(1.0);
        Self {
            _permit: permit,
            accepted: Instant::now(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::server_connections(-1.0);
    }
}

/// Hands the batch of ready replies to the writer; `false` once the writer is gone.
async fn flush(batch: &mut Outgoing, tx: &mpsc::Sender<OutFrame>) -> bool {
    if batch.is_empty() {
        return true;
    }
    tx.send(OutFrame::Encoded(batch.take())).await.is_ok()
}

/// What the calls of one connection share.
struct Conn {
    peer: SocketAddr,
    /// The client's verified certificate identity (mTLS).
    identity: Option<Arc<PeerIdentity>>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<OutFrame>,
    running: Arc<RunningCalls>,
    /// The streaming calls among them, by request id.
    streams: Arc<Streams>,
    opened: Instant,
    /// Milliseconds after `opened` when the last request arrived.
    last_request_ms: AtomicU64,
}

impl Conn {
    /// A request arrived at `now`.
    fn request_arrived(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.opened).as_millis() as u64;
        self.last_request_ms.store(ms, Ordering::Relaxed);
    }

    /// How long no request has arrived.
    fn idle_for(&self, now: Instant) -> Duration {
        let last = self.opened + Duration::from_millis(self.last_request_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }

    /// Handles one frame (`held`: the byte budget its body took, kept until the call is done);
    /// an error means the connection must close.
    async fn handle_frame(
        &self,
        frame: Frame,
        held: Option<OwnedSemaphorePermit>,
        batch: &mut Outgoing,
    ) -> Result<(), ProtocolError> {
        let header = frame.header;
        match header.message_type {
            MessageType::Request => {
                if let Some(reply) = self.start_call(header, frame.body, held).await {
                    let (header, body) = response(&header, reply, self.shared.compression);
                    batch.push_frame(header, body);
                }
                Ok(())
            }
            MessageType::Cancel => {
                if self.running.cancel(header.request_id) {
                    debug!(request_id = header.request_id, "call cancelled by its caller");
                }
                Ok(())
            }
            MessageType::Ping => {
                batch.push_frame(Header::new(MessageType::Pong, header.request_id), Bytes::new());
                Ok(())
            }
            MessageType::StreamItem => self.streams.item(header.request_id, frame.body),
            MessageType::StreamEnd => {
                self.streams.end(header.request_id);
                Ok(())
            }
            MessageType::Credit => self.streams.credit(header.request_id, &frame.body),
            MessageType::Pong => Ok(()),
            MessageType::Extension(kind) => {
                debug!(kind, "skipping an extension frame this server does not know");
                Ok(())
            }
            MessageType::Response => Err(ProtocolError::UnexpectedFrame("response")),
            MessageType::GoAway => Err(ProtocolError::UnexpectedFrame("go-away")),
        }
    }

    /// Runs the call as far as it goes without waiting. Returns its reply (or the reply
    /// refusing it) when there is one now; `None` when it continues in a task of its own.
    async fn start_call(&self, header: Header, body: Body, held: Option<OwnedSemaphorePermit>) -> Option<Reply> {
        let now = Instant::now();
        self.request_arrived(now);
        self.shared.activity.call_arrived();
        let begun = match self.begin(&header, body, now) {
            Ok(begun) => begun,
            Err(reply) => return Some(reply),
        };
        if header.flags & flags::STREAM != 0 {
            self.start_stream(header, begun, held).await
        } else {
            self.run_call(header, begun, held).await
        }
    }

    /// Takes a request that arrived at `now` through admission (see the `admission` module):
    /// it must parse and name a served service (the health method is answered here), the
    /// method must be served and called with its shape (a stream or not), then the
    /// interceptors and the limits admit it; only then are its arguments decompressed. The
    /// reply that answers or refuses it otherwise.
    fn begin(&self, header: &Header, body: Body, now: Instant) -> Result<Begun, Reply> {
        let shared = &self.shared;
        let rejected = |status: Status, message: String| rejected(Reply::failure(status, message));
        let serializer =
            SerializerKind::from_id(header.serializer).map_err(|e| rejected(Status::ProtocolError, e.to_string()))?;
        let request = RequestBody::parse(body, &shared.metadata_limits).map_err(|e| match e {
            ProtocolError::MetadataOverLimit { .. } | ProtocolError::InvalidMetadata(_) => {
                rejected(Status::InvalidMetadata, e.to_string())
            }
            e => rejected(Status::ProtocolError, e.to_string()),
        })?;
        let Some(service) = shared.services.get(request.service_str()) else {
            return Err(rejected(Status::ServiceNotFound, request.service_str().to_owned()));
        };
        let method = request.method_str();
        if method == HEALTH_METHOD {
            return Err(Reply::ok(serializer, &shared.health()));
        }
        shared.route(service.as_ref(), method)?;
        let streaming = header.flags & flags::STREAM != 0;
        match (streaming, service.stream_shape(method)) {
            (true, None) => {
                let message = format!("{}/{method} is not a streaming method", service.key());
                return Err(rejected(Status::Unsupported, message));
            }
            (false, Some(_)) => {
                let message = format!(
                    "{}/{method} is a streaming method; call it with a client that streams",
                    service.key()
                );
                return Err(rejected(Status::Unsupported, message));
            }
            _ => {}
        }
        let RequestBody {
            service: service_name,
            method,
            metadata,
            args,
        } = request;
        let deadline = (header.timeout_ms > 0).then(|| now + Duration::from_millis(u64::from(header.timeout_ms)));
        let arrival = Arrival {
            service_name,
            method,
            metadata,
            deadline,
            peer: self.peer,
            identity: self.identity.clone(),
            request_id: header.request_id,
            now,
            streaming,
            serializer,
        };
        let admitted = shared.admit(service.key(), arrival)?;
        let args = if header.flags & flags::COMPRESSED != 0 {
            match compression::decompress(&args, shared.max_frame_len) {
                Ok(args) => args.into(),
                Err(e) => {
                    admitted.refused(shared, Status::DecodeError);
                    return Err(Reply::failure(Status::DecodeError, format!("the arguments: {e}")));
                }
            }
        } else {
            args
        };
        Ok(Begun {
            service: service.clone(),
            serializer,
            admitted,
            args,
            deadline,
        })
    }

    /// Runs an admitted call: the tower layers (when there are any) and the handler (see
    /// [`Conn::start_call`]).
    async fn run_call(&self, header: Header, begun: Begun, held: Option<OwnedSemaphorePermit>) -> Option<Reply> {
        let shared = &self.shared;
        let Begun {
            service,
            serializer,
            admitted:
                Admitted {
                    mut ctx,
                    permit,
                    intercepted,
                },
            args,
            deadline,
        } = begun;
        // The call's span: the handler's log lines carry its service, method and trace id,
        // the trace continuing the caller's (see `context`).
        let span = call_span(&mut ctx);
        let started = Started {
            header,
            deadline,
            permit,
            held,
            intercepted,
        };
        let call = Invocation::new(
            shared.stack.as_ref(),
            ServerCall::new(ctx, serializer, args, service),
            intercepted,
        );
        self.drive(started, span, Box::pin(call)).await
    }

    /// Starts an admitted streaming call: its slot, its acceptance and its task (see the
    /// `stream` module). Returns the reply that refuses it, if one does.
    async fn start_stream(&self, header: Header, begun: Begun, held: Option<OwnedSemaphorePermit>) -> Option<Reply> {
        let shared = &self.shared;
        let (client_window, args) = match Credit::split_from(begun.args) {
            Ok(split) => split,
            Err(e) => {
                begun.admitted.refused(shared, Status::ProtocolError);
                return Some(Reply::failure(Status::ProtocolError, e.to_string()));
            }
        };
        let Begun {
            service,
            serializer,
            admitted: Admitted { mut ctx, permit, .. },
            deadline,
            ..
        } = begun;
        let span = call_span(&mut ctx);
        let call = StreamCall {
            service,
            ctx,
            serializer,
            args,
            client_window,
            header,
            deadline,
            permit,
            held,
        };
        let host = StreamHost {
            shared,
            streams: &self.streams,
            tx: &self.tx,
            window: shared.stream_window,
        };
        let task = call.start(host).await?;
        self.running.spawn(header.request_id, |registered| {
            shared.calls.spawn(
                async move {
                    let _registered = registered;
                    task.await;
                }
                .instrument(span),
            )
        });
        None
    }

    /// Polls a call once in this task: most finish here, and their reply is returned. One
    /// that has to wait continues in a task of its own, under its deadline, registered for
    /// cancellation; then `None`.
    async fn drive(&self, started: Started, span: tracing::Span, mut call: Pin<Box<Invocation>>) -> Option<Reply> {
        let request_id = started.header.request_id;
        let first = poll_fn(|cx| {
            let _in_span = span.enter();
            Poll::Ready(std::panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx))))
        })
        .await;
        let reply = match first {
            Ok(Poll::Ready(reply)) => reply,
            Err(panic) => panicked("", request_id, panic.as_ref()),
            Ok(Poll::Pending) => {
                let shared = &self.shared;
                let task = CallTask {
                    deadline: started.deadline,
                    header: started.header,
                    permit: started.permit,
                    held: started.held,
                    call: EndGuard {
                        shared: shared.clone(),
                        call,
                        intercepted: started.intercepted,
                        outcome: Outcome::Cancelled,
                    },
                    tx: self.tx.clone(),
                };
                self.running.spawn(request_id, |registered| {
                    shared.calls.spawn(task.run(registered).instrument(span))
                });
                return None;
            }
        };
        end_call_span(&span, &reply);
        let ctx = started.intercepted.then(|| call.as_mut().take_context()).flatten();
        Some(self.finish(ctx.as_ref(), reply))
    }

    /// Tells the interceptors (given `ctx` when there are any) how a call that ended at once
    /// ended; returns its reply.
    fn finish(&self, ctx: Option<&CallContext>, reply: Reply) -> Reply {
        if let Some(ctx) = ctx {
            self.shared
                .interceptors
                .on_response(ctx, Outcome::from_status(reply.status));
        }
        reply
    }
}

/// What a call that started running holds until it ends.
struct Started {
    header: Header,
    deadline: Option<Instant>,
    /// Its share of the server's concurrency limit.
    permit: CallPermit,
    /// The byte budget of a large request body.
    held: Option<OwnedSemaphorePermit>,
    /// Whether interceptors wait for its end.
    intercepted: bool,
}

/// A request that passed admission, with what its handler needs.
struct Begun {
    service: Arc<dyn Service>,
    serializer: SerializerKind,
    /// Its context and its share of the limits.
    admitted: Admitted,
    /// The encoded arguments (decompressed).
    args: Body,
    deadline: Option<Instant>,
}

/// A call that had to wait, in its own task.
struct CallTask {
    call: EndGuard,
    deadline: Option<Instant>,
    header: Header,
    permit: CallPermit,
    /// The byte budget of a large request body, given back when the call ends.
    held: Option<OwnedSemaphorePermit>,
    tx: mpsc::Sender<OutFrame>,
}

impl CallTask {
    /// Drives the call under its deadline and sends its reply. Dropped (cancelled) when the
    /// caller leaves: the handler's future, the permit and the registration go with it.
    async fn run(self, registered: Registered) {
        let CallTask {
            mut call,
            deadline,
            header,
            permit,
            held,
            tx,
        } = self;
        let _registered = registered;
        let _permits = (permit, held);
        let Some(reply) = drive(&mut call, deadline, header.request_id).await else {
            return;
        };
        let compression = call.shared.compression;
        drop(call);
        // The connection may be gone; the caller then no longer waits for this reply.
        let (header, body) = response(&header, reply, compression);
        let _ = tx.send(OutFrame::Frame { header, body }).await;
    }
}

/// The Response frame of `reply` to `request`: it says this server decodes compressed
/// requests, and its body is compressed when the request asked for that and `compression`
/// is on (see [`crate::compression`]).
fn response(request: &Header, reply: Reply, compression: Option<Compression>) -> (Header, Body) {
    let mut header = Header::new(MessageType::Response, request.request_id);
    header.serializer = request.serializer;
    header.status = reply.status;
    if compression::SUPPORTED {
        header.flags |= flags::DECOMPRESSES;
    }
    let packed = compression
        .filter(|_| request.flags & flags::DECOMPRESSES != 0)
        .and_then(|c| c.compress(&reply.body));
    match packed {
        Some(packed) => {
            header.flags |= flags::COMPRESSED;
            (header, packed.into())
        }
        None => (header, reply.body),
    }
}
