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

//!
//! Files: `state` (what the connection's tasks share: pending calls, open streams, why it
//! closed), `read` (the reader task), `keepalive` (pings and probes), `stream` (opening a
//! stream and pumping its items).

mod keepalive;
mod read;
mod state;
mod stream;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::ClientOptions;
use crate::body::Body;
use crate::compression::Compression;
use crate::error::RpcError;
use crate::protocol::{flags, Header, MessageType};
use crate::reply::Reply;
use crate::serializer::SerializerKind;
use crate::transport::{write_loop, FrameReader, OutFrame, WRITE_QUEUE};

use keepalive::{keepalive, Liveness};
use read::read_loop;
use state::{answer, Pending, PendingGuard, Shared, HEALTHY};
pub use stream::StreamOpen;

/// A connected, multiplexed client connection.
pub struct Connection {
    shared: Arc<Shared>,
    tx: mpsc::Sender<OutFrame>,
    _tasks: [AbortOnDropHandle<()>; 3],
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
    /// Returns the reply for [`Status::Ok`](crate::protocol::Status::Ok) and
    /// [`Status::ApplicationError`](crate::protocol::Status::ApplicationError); every other
    /// status becomes the matching [`RpcError`].
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

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.close("connection dropped");
    }
}
