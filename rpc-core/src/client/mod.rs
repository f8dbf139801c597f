//! The client side: connections, the connection pool, the cluster invoker and the
//! [`Channel`] that the generated clients call through.
//!
//! # Layers
//!
//! * [`Connection`]: one multiplexed TCP connection (see its module docs).
//! * [`ConnectionPool`]: one connection per endpoint, replaced after it breaks.
//! * [`Invoker`]: turns an encoded call into a [`Reply`]. The [`ClusterInvoker`] picks an
//!   instance (a fixed address or the discovery cache) and applies retry, fail-over and outlier
//!   ejection.
//! * [`Channel`]: what a generated client holds: an invoker, the serializer and the consumer's
//!   policies. It encodes the arguments once, gives every call its deadline, and applies
//!   `fail_back` and `mock` with the client's local implementation.
//! * [`Consumer`]: all of the above built from configuration.

mod cluster;
mod connection;
mod consumer;
mod local;
mod pool;

pub use cluster::{ClusterInvoker, InstanceSource};
pub use connection::Connection;
pub use consumer::{Consumer, ConsumerError};
pub use pool::{ConnectionPool, Endpoint};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::time::Instant;
use tracing::{warn, Instrument};

use crate::balance::hash_serialized;
use crate::config::{LoadBalancerKind, TolerantKind};
use crate::error::RpcError;
use crate::fault::{MethodPolicy, PolicySet};
use crate::protocol::{encode_request_body, DEFAULT_MAX_FRAME_LEN};
use crate::reply::Reply;
use crate::serializer::SerializerKind;
use crate::server::{BoxFuture, Service};

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
    /// The policy the call runs under.
    pub policy: &'a MethodPolicy,
    /// The call's affinity key for `consistent_hash`.
    pub hash_key: Option<u64>,
}

/// Delivers encoded calls; the extension point for discovery, load balancing and fault
/// tolerance.
pub trait Invoker: Send + Sync + 'static {
    /// Sends the call and returns its reply, or the error that prevented one.
    fn invoke<'a>(&'a self, call: &'a CallRequest<'a>) -> BoxFuture<'a, Result<Reply, RpcError>>;
}

/// The local implementation a client calls for `fail_back` and `mock`: the service trait's
/// implementation wrapped in its generated server adapter.
pub type Fallback = Arc<dyn Service>;

/// What a generated client calls through: an [`Invoker`], a serializer and the consumer's
/// policies, plus per-client overrides of the timeout and the hash key.
///
/// Cheap to clone; clones share the invoker and its connections.
#[derive(Clone)]
pub struct Channel {
    invoker: Arc<dyn Invoker>,
    serializer: SerializerKind,
    policies: Arc<PolicySet>,
    timeout: Option<Duration>,
    hash_key: Option<u64>,
}

impl Channel {
    /// A channel over any invoker, with the default serializer (bincode) and policies (3 s
    /// timeout, no retry, fail fast, round robin).
    pub fn new(invoker: Arc<dyn Invoker>) -> Self {
        Self {
            invoker,
            serializer: SerializerKind::default(),
            policies: Arc::new(PolicySet::default()),
            timeout: None,
            hash_key: None,
        }
    }

    /// A channel to one fixed address (`host:port`), connecting on the first call.
    pub fn direct(addr: impl Into<String>) -> Self {
        Self::direct_with(addr, ClientOptions::default())
    }

    /// A channel to one fixed address with explicit connection options.
    pub fn direct_with(addr: impl Into<String>, options: ClientOptions) -> Self {
        let addr = addr.into();
        Self::new(Arc::new(ClusterInvoker::direct(
            &addr,
            Arc::new(ConnectionPool::new(options)),
        )))
    }

    /// The same channel encoding calls with `serializer`.
    pub fn with_serializer(mut self, serializer: SerializerKind) -> Self {
        self.serializer = serializer;
        self
    }

    /// The same channel with these policies (timeouts, retry, tolerance, balancing).
    pub fn with_policies(mut self, policies: Arc<PolicySet>) -> Self {
        self.policies = policies;
        self
    }

    /// The same channel with one timeout for every call, overriding the configured ones.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The same channel sending every call to the instance `key` hashes to under
    /// `consistent_hash` (instead of hashing each call's first argument).
    pub fn with_hash_key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.hash_key = Some(crate::balance::hash64(key.as_ref()));
        self
    }

    /// The serializer calls are encoded with.
    pub fn serializer(&self) -> SerializerKind {
        self.serializer
    }

    /// The policy of one method under this channel's configuration.
    pub fn policy(&self, service: &str, method: &str, idempotent: bool) -> MethodPolicy {
        self.policies.resolve(service, method, idempotent)
    }

    /// Encodes `args` (the tuple of a method's arguments) and performs the call under `policy`.
    ///
    /// `first_arg` is hashed for `consistent_hash` when no explicit hash key is set;
    /// `fallback` serves `mock` mode and `fail_back`. Generated clients call this; decode the
    /// reply with [`Reply::into_value`] or [`Reply::into_result`].
    pub async fn call<A, K>(
        &self,
        service: &str,
        method: &str,
        args: &A,
        first_arg: Option<&K>,
        policy: &MethodPolicy,
        fallback: Option<&Fallback>,
    ) -> Result<Reply, RpcError>
    where
        A: Serialize + ?Sized,
        K: Serialize + ?Sized,
    {
        let body = encode_request_body(service, method, self.serializer, args)?;
        let hash_key = match policy.load_balancer {
            LoadBalancerKind::ConsistentHash => self.hash_key.or_else(|| first_arg.map(hash_serialized)),
            _ => None,
        };
        let call = CallRequest {
            service,
            method,
            serializer: self.serializer,
            body,
            deadline: Instant::now() + self.timeout.unwrap_or(policy.timeout),
            policy,
            hash_key,
        };
        let span = tracing::debug_span!("rpc_client_call", service, method);
        async {
            if policy.mock {
                let local = fallback.ok_or_else(|| no_fallback(service, "mock"))?;
                return local::call_local(local.as_ref(), &call).await;
            }
            match self.invoker.invoke(&call).await {
                Err(e) if policy.tolerant == TolerantKind::FailBack => {
                    let local = fallback.ok_or_else(|| no_fallback(service, "fail_back"))?;
                    warn!(error = %e, "call failed; answering from the fallback");
                    local::call_local(local.as_ref(), &call).await
                }
                other => other,
            }
        }
        .instrument(span)
        .await
    }
}

fn no_fallback(service: &str, mode: &str) -> RpcError {
    RpcError::Remote(format!(
        "{service} is configured for {mode} but the client has no local implementation"
    ))
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("serializer", &self.serializer)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The policy a generated client cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientBuildError {
    /// `fail_safe` on a method whose result has no `Default`.
    #[error("{service}/{method}: fail_safe needs a result type that implements Default")]
    FailSafeWithoutDefault {
        /// Service key.
        service: String,
        /// Method name.
        method: String,
    },
    /// `fail_back` or `mock` without a local implementation.
    #[error("{service}/{method}: {mode} needs a local implementation (pass one to the client builder's fallback)")]
    FallbackMissing {
        /// Service key.
        service: String,
        /// Method name.
        method: String,
        /// `fail_back` or `mock`.
        mode: &'static str,
    },
}

/// Checks a resolved method policy against what the client can do; generated builders call it.
pub fn validate_policy(
    service: &str,
    method: &str,
    policy: &MethodPolicy,
    has_default: bool,
    has_fallback: bool,
) -> Result<(), ClientBuildError> {
    if policy.tolerant == TolerantKind::FailSafe && !has_default && !policy.mock {
        return Err(ClientBuildError::FailSafeWithoutDefault {
            service: service.to_owned(),
            method: method.to_owned(),
        });
    }
    let mode = if policy.mock {
        Some("mock")
    } else if policy.tolerant == TolerantKind::FailBack {
        Some("fail_back")
    } else {
        None
    };
    match mode {
        Some(mode) if !has_fallback => Err(ClientBuildError::FallbackMissing {
            service: service.to_owned(),
            method: method.to_owned(),
            mode,
        }),
        _ => Ok(()),
    }
}
