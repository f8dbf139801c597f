//! The client side: connections, the connection pool, invokers and the [`Channel`] that the
//! generated clients call through.
//!
//! # Layers
//!
//! * [`Connection`]: one multiplexed TCP connection (see its module docs).
//! * [`ConnectionPool`]: one connection per endpoint, replaced after it breaks.
//! * [`Invoker`]: turns an encoded call into a [`Reply`]. [`DirectInvoker`] calls one fixed
//!   address; discovery-backed invokers pick an instance per call.
//! * [`Channel`]: what a generated client holds: an invoker plus the serializer and default
//!   timeout. It encodes the arguments once and gives every call a deadline.

mod connection;
mod consumer;
mod discovery;
mod pool;

pub use connection::Connection;
pub use consumer::{Consumer, ConsumerError};
pub use discovery::DiscoveryInvoker;
pub use pool::ConnectionPool;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::RpcError;
use crate::protocol::{encode_request_body, DEFAULT_MAX_FRAME_LEN};
use crate::reply::Reply;
use crate::serializer::SerializerKind;
use crate::server::BoxFuture;

/// Default time a call may take, connect included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// Tunables of client connections.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Longest a TCP connect may take.
    pub connect_timeout: Duration,
    /// Largest response body accepted; a larger one closes the connection.
    pub max_frame_len: usize,
    /// A connection with nothing read for this long sends a ping.
    pub keepalive_interval: Duration,
    /// A connection whose ping gets no answer within this time is closed.
    pub keepalive_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// One encoded call on its way to an instance.
#[derive(Debug, Clone)]
pub struct CallRequest<'a> {
    /// Service key, `name:version`.
    pub service: &'a str,
    /// Method name.
    pub method: &'a str,
    /// Serializer the body was encoded with; the reply comes back in it too.
    pub serializer: SerializerKind,
    /// The encoded request body (routing prefix and arguments).
    pub body: Bytes,
    /// When the caller stops waiting.
    pub deadline: Instant,
    /// Whether the method is marked idempotent (safe to run twice).
    pub idempotent: bool,
}

/// Delivers encoded calls; the extension point for discovery, load balancing and fault
/// tolerance.
pub trait Invoker: Send + Sync + 'static {
    /// Sends the call and returns its reply, or the error that prevented one.
    fn invoke<'a>(&'a self, call: &'a CallRequest<'a>) -> BoxFuture<'a, Result<Reply, RpcError>>;
}

/// Calls one fixed address through a connection pool.
pub struct DirectInvoker {
    addr: String,
    pool: Arc<ConnectionPool>,
}

impl DirectInvoker {
    /// Calls `addr` (`host:port`) with connections from `pool`.
    pub fn new(addr: impl Into<String>, pool: Arc<ConnectionPool>) -> Self {
        Self {
            addr: addr.into(),
            pool,
        }
    }
}

impl Invoker for DirectInvoker {
    fn invoke<'a>(&'a self, call: &'a CallRequest<'a>) -> BoxFuture<'a, Result<Reply, RpcError>> {
        Box::pin(async move {
            let conn = self.pool.get(&self.addr, Some(call.deadline)).await?;
            conn.call(
                call.service,
                call.method,
                call.serializer,
                call.body.clone(),
                call.deadline,
            )
            .await
        })
    }
}

/// What a generated client calls through: an [`Invoker`], a serializer and a default timeout.
///
/// Cheap to clone; clones share the invoker and its connections.
#[derive(Clone)]
pub struct Channel {
    invoker: Arc<dyn Invoker>,
    serializer: SerializerKind,
    timeout: Duration,
}

impl Channel {
    /// A channel over any invoker, with the default serializer (bincode) and timeout (3 s).
    pub fn new(invoker: Arc<dyn Invoker>) -> Self {
        Self {
            invoker,
            serializer: SerializerKind::default(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A channel to one fixed address (`host:port`), connecting on the first call.
    pub fn direct(addr: impl Into<String>) -> Self {
        Self::direct_with(addr, ClientOptions::default())
    }

    /// A channel to one fixed address with explicit connection options.
    pub fn direct_with(addr: impl Into<String>, options: ClientOptions) -> Self {
        Self::new(Arc::new(DirectInvoker::new(
            addr,
            Arc::new(ConnectionPool::new(options)),
        )))
    }

    /// The same channel encoding calls with `serializer`.
    pub fn with_serializer(mut self, serializer: SerializerKind) -> Self {
        self.serializer = serializer;
        self
    }

    /// The same channel with a different per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The serializer calls are encoded with.
    pub fn serializer(&self) -> SerializerKind {
        self.serializer
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Encodes `args` (the tuple of a method's arguments) and performs the call.
    ///
    /// Generated clients call this; decode the reply with [`Reply::into_value`] or
    /// [`Reply::into_result`].
    pub async fn invoke<A: Serialize + ?Sized>(
        &self,
        service: &str,
        method: &str,
        args: &A,
        idempotent: bool,
    ) -> Result<Reply, RpcError> {
        let body = encode_request_body(service, method, self.serializer, args)?;
        let call = CallRequest {
            service,
            method,
            serializer: self.serializer,
            body,
            deadline: Instant::now() + self.timeout,
            idempotent,
        };
        let span = tracing::debug_span!("rpc_client_call", service, method);
        let result = self.invoker.invoke(&call).instrument(span).await;
        if let Err(e) = &result {
            tracing::debug!(service, method, error = %e, "call failed");
        }
        result
    }
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("serializer", &self.serializer)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
