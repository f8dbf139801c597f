//! The server: serves any number of [`Service`]s on one TCP listener.
//!
//! # Design
//!
//! * An accept loop hands each connection to its own task. A connection has a reader (the
//!   connection task itself) and a writer task joined by a bounded channel: the writer drains
//!   every frame that is ready and writes them with one syscall, so replies to pipelined calls
//!   are batched.
//! * Each request's handler is polled once in the connection task; one that finishes then
//!   (most do) has its reply batched with the others of the same read. One that has to wait
//!   continues in a task of its own, so the calls of one connection run concurrently and each
//!   reply goes back as soon as it is ready, in any order (see the connection module).
//! * A request frame that starts but does not complete within the frame timeout closes its
//!   connection; a connection without a request for the idle timeout is told to go away and
//!   closed; at most `max_connections` are served at once (more wait in a listen backlog of
//!   4096), and accept errors (out of file descriptors) back off with a throttled log.
//! * Large request bodies (64 KiB and more) are read under a server-wide byte budget: a body
//!   that does not fit waits (TCP pushes back on its sender) until calls holding others finish,
//!   and a read buffer that grew for one is given back once the frame is taken, so memory is
//!   bounded by the budget, not by connections times the largest frame.
//! * A server-wide semaphore bounds the calls in flight; a request that finds no permit is
//!   answered [`Status::Overloaded`](crate::protocol::Status::Overloaded) at once instead of
//!   queueing without bound. Limits per service and method, and adaptive load shedding (a
//!   concurrency limit found from the calls' latency, see the `shedding` module), refuse the
//!   same way, before the request's arguments are decoded.
//! * Each call runs inside its [`CallContext`](crate::context::CallContext) (metadata,
//!   deadline, peer, trace, extensions), which the handler reads with
//!   [`context::current`](crate::context::current).
//! * Middleware: the server's [interceptors](crate::interceptor) see every call before it
//!   runs (and may refuse it) and after it ends. They come before admission, on every front
//!   end (the `admission` module): a call refused for its token spends no concurrency permit,
//!   rate token or shedding room. Inside them and the limits, any `tower::Layer` added with
//!   [`ServerBuilder::layer`] wraps the call as a [`ServerCall`] answered by a
//!   [`Reply`](crate::Reply) (see the `call` module). With neither, a call costs nothing extra.
//! * A handler that panics yields an [`InternalError`](crate::protocol::Status::InternalError)
//!   reply for that call only. A call is dropped when its deadline passes, when its caller
//!   sends Cancel, or when its caller's connection closes: work for a caller who left stops
//!   and frees its concurrency permit. A malformed frame closes that connection only, with a
//!   logged protocol error; a peer of another protocol version gets one answer it can read
//!   before the connection closes.
//! * [`RunningServer::register`] registers every service in a registry at the bound port,
//!   and follows each one's rules there (their limits and shedding apply live); shutdown
//!   deregisters them first, so consumers stop picking this server while it drains.
//! * [`RunningServer::shutdown`] stops accepting, sends GoAway on every connection, answers
//!   new requests with [`ShuttingDown`](crate::protocol::Status::ShuttingDown), waits for the
//!   calls in flight up to the drain timeout, then cancels what is left and closes every
//!   connection. Dropping a
//!   [`RunningServer`] without shutting down cancels everything at once.
//! * Every served service answers the built-in [health method](crate::health): `serving`,
//!   or `draining` from the moment shutdown begins.
//! * Requests answered without running (unknown service or method, overloaded, shutting
//!   down, malformed) are counted by reason; connections open are a gauge
//!   (the [`crate::metrics`] module).
//!
//! # Files
//!
//! `builder` (options, services, layers; starting on a listener), `shared` (what every task
//! shares), `accept` (the listener and the accept loop), `connection` (the binary protocol's
//! connections), `http` (the HTTP/JSON front end), `admission` (the steps before a handler, for
//! every front end), `call` (the tower seam and the invocation of a handler), `finish`
//! (deadlines, panics, the end of a call), `stream` (streaming calls), `limits` and `shedding`
//! (admission limits), `running` (the calls of a connection), `running_server` (registration
//! and shutdown), `secure` (the TLS handshake).

mod accept;
mod admission;
mod builder;
mod call;
mod connection;
mod finish;
#[cfg(feature = "http")]
pub(crate) mod http;
mod limits;
mod running;
mod running_server;
#[cfg(feature = "tls")]
mod secure;
mod shared;
mod shedding;
mod stream;

pub use crate::service::{Service, StreamAnswer};
pub use accept::{listen, LISTEN_BACKLOG};
pub use builder::{ServerBuilder, ServerOptions};
pub use call::{Dispatch, DispatchFuture, ServerCall, ServerLayers, ServerStack};
pub use running_server::{Registration, RunningServer, ShutdownReport};
pub(crate) use shared::Shared;

/// After telling a connection to go away (the RPC protocol's GoAway, HTTP/2's GOAWAY) because
/// it is idle, how long a connection without calls in flight waits for its client to close it
/// before the server does.
const GO_AWAY_CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
