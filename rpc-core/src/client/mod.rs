//! The client side: connections, the connection pool, the call path and the [`Channel`] that
//! the generated clients call through.
//!
//! # The call path
//!
//! A call made through a generated client goes through these steps, each a module of its own:
//!
//! 1. [`Channel`]: builds the call's [`CallContext`](crate::context::CallContext) (its
//!    deadline: the method's timeout, never later than the deadline of the call being served
//!    when called from a handler; the channel's metadata; the trace), runs the client
//!    [interceptors](crate::interceptor), and encodes the request once.
//! 2. the channel's tower layers, when it has any ([`Channel::layer`]): the call as a
//!    [`ClientCall`]; the request is finished below them (see the `call` module).
//! 3. fallback step (module `fallback`): `mock` answers from the local implementation without the
//!    network; `fail_back` and `fail_safe` answer from the local implementation or the
//!    method's default value when the network failed.
//! 4. [`Invoker`]: the [`ClusterInvoker`] finds the instances (a fixed address or the
//!    discovery cache) and the service's route (balancer, per-instance health and
//!    connection slot), then:
//! 5. retry step (module `retry`): runs rounds of the fail-over step until one succeeds, the error
//!    is not retryable for the method, the attempts are spent, or the next pause would end
//!    after the deadline;
//! 6. fail-over step (module `failover`): takes candidates from the balancer one at a time; with
//!    fail-over on, a retryable failure moves on to the next candidate at once, each instance
//!    at most once per round; for an `#[idempotent]` call with hedging on, the hedging step
//!    (module `hedge`) instead, which also sends the call to the next candidate when the first
//!    is slow, the first answer winning;
//! 7. one attempt on one instance, bounded by the call's deadline and the attempt timeout,
//!    whose outcome feeds the instance's health (in-flight count, outlier ejection).
//!
//! The configuration's enums select these behaviours (see [`crate::fault::policy`]); a user
//! adds their own tower layers, [interceptors](crate::interceptor::Interceptor) and [balancers](crate::balance::LoadBalancer)
//! through the [`ConsumerBuilder`].
//!
//! # Connections
//!
//! * [`Connection`]: one multiplexed TCP connection (see its module docs).
//! * [`ConnectionPool`]: one connection per endpoint, replaced after it breaks or its server
//!   sends GoAway.
//! * [`Consumer`]: all of the above built from configuration.

mod call;
/// Public for the generated code's items re-exported under `__private`.
pub(crate) mod channel;
mod cluster;
mod connection;
mod consumer;
mod deliver;
mod failover;
mod fallback;
mod hedge;
mod methods;
mod pool;
mod retry;
mod route;

pub use crate::service::{LocalService, MethodDescriptor};
pub use call::{ClientCall, ClientLayer, ClientStack};
pub use channel::{Channel, ClientBuildError, StreamSettings};
pub use cluster::{ClusterInvoker, ClusterOptions, InstanceSource};
pub use connection::{Connection, StreamOpen};
pub use consumer::{Consumer, ConsumerBuilder, ConsumerError};
pub use pool::{ConnectionPool, Endpoint};
pub use route::{BalancerChoice, BalancerFactory};

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::body::Body;
use crate::config::ConsumerConfig;
use crate::context::MetadataLimits;
use crate::error::RpcError;
use crate::fault::MethodPolicy;
use crate::future::BoxFuture;
use crate::reply::Reply;
use crate::rules::ServiceRules;
use crate::schema::ServiceSchema;
use crate::serializer::SerializerKind;
use crate::stream::RawStream;

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
    /// After a call timed out, its connection's server must answer a ping within this, or
    /// calls avoid it until it answers (see the connection's module docs).
    pub probe_timeout: Duration,
    /// Bounds on each call's metadata; a call over them fails without being sent.
    pub metadata_limits: MetadataLimits,
    /// Connections to one provider at most (more open only while the bytes in flight call
    /// for them; see the pool).
    pub max_connections_per_endpoint: usize,
    /// TLS to providers (loaded from `rpc.consumer.tls` by the bootstraps); none: plain TCP.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::ClientTls>,
}

impl From<&ConsumerConfig> for ClientOptions {
    fn from(c: &ConsumerConfig) -> Self {
        Self {
            connect_timeout: Duration::from_millis(c.connect_timeout_ms),
            max_frame_len: c.max_frame_bytes,
            keepalive_interval: Duration::from_millis(c.keepalive_interval_ms),
            keepalive_timeout: Duration::from_millis(c.keepalive_timeout_ms),
            probe_timeout: Duration::from_millis(c.probe_timeout_ms),
            metadata_limits: MetadataLimits {
                max_entries: c.max_metadata_entries,
                max_bytes: c.max_metadata_bytes,
            },
            max_connections_per_endpoint: c.max_connections_per_provider,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self::from(&ConsumerConfig::default())
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
    /// The encoded request body (prefix, metadata and arguments).
    pub body: Body,
    /// When the caller stops waiting.
    pub deadline: Instant,
    /// The policy the call runs under.
    pub policy: &'a MethodPolicy,
    /// The call's affinity key for `consistent_hash`.
    pub hash_key: Option<u64>,
    /// The tag group the call asks for (its `route-tag` metadata).
    pub route_tag: Option<&'a str>,
}

/// Delivers encoded calls: the extension point below the channel (the [`ClusterInvoker`] is
/// the framework's own).
pub trait Invoker: Send + Sync + 'static {
    /// Sends the call and returns its reply, or the error that prevented one.
    fn invoke<'a>(&'a self, call: &'a CallRequest<'a>) -> BoxFuture<'a, Result<Reply, RpcError>>;

    /// Opens a stream (`call.body`: the request's prefix, the client's window, the arguments)
    /// on one instance, trying others as for a call while the stream has not started, and
    /// waits for its acceptance until `call.deadline`. An invoker that cannot stream fails
    /// with `Unsupported`.
    fn open_stream<'a>(
        &'a self,
        call: &'a CallRequest<'a>,
        open: &'a StreamOpen,
    ) -> BoxFuture<'a, Result<RawStream, RpcError>> {
        let _ = open;
        let error = RpcError::Unsupported(format!(
            "{}/{}: this invoker does not stream",
            call.service, call.method
        ));
        Box::pin(std::future::ready(Err(error)))
    }

    /// The routing rules in force for `service`, if the invoker follows any: the channel
    /// applies their timeout and balancer (the invoker applies the rest itself).
    fn rules(&self, service: &str) -> Option<Arc<ServiceRules>> {
        let _ = service;
        None
    }

    /// Learns the schema of `service` as this process calls it (a generated client declares
    /// its own when it is built), so an invoker that knows its providers' schemas can check
    /// them against it. `schema` builds it; it is called at most once per service.
    fn declare_schema(&self, service: &str, schema: fn() -> ServiceSchema) {
        let _ = (service, schema);
    }
}
