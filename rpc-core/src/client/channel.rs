//! [`Channel`]: what a generated client calls through.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use serde::Serialize;
use tokio::time::Instant;
use tower::ServiceExt;

use super::call::{ClientCall, ClientLayer, ClientLayers, ClientStack, ClientStreamParts};
use super::deliver::{deliver, end_client_span, start_call};
use super::{CallRequest, ClientOptions, ClusterInvoker, ConnectionPool, Invoker, StreamOpen};
use crate::balance::{hash_serialized, LoadBalancerKind};
use crate::context::{self, CallContext, Metadata, MetadataLimits, Side, TraceContext, TRACEPARENT};
use crate::error::RpcError;
use crate::fault::{Fallback, MethodPolicy, PolicySet};
use crate::health::{Health, HEALTH_METHOD};
use crate::interceptor::{Interceptor, Interceptors, Outcome};
use crate::protocol::{encode_request_body, encode_request_prefix, Status};
use crate::reply::Reply;
use crate::rules::ROUTE_TAG;
use crate::schema::{MethodPrints, SCHEMA_METADATA};
use crate::serializer::SerializerKind;
use crate::service::{LocalService, MethodDescriptor};
use crate::stream::{ItemStream, RawStream, StreamWindow};
use tracing::Instrument;

/// What a generated client holds, behind one `Arc` so that cloning the client is one
/// reference count: its channel, each method's resolved policy, and the local implementation.
pub struct ClientParts {
    /// The channel calls go through.
    pub channel: Channel,
    /// Each method's policy, in declaration order.
    pub policies: Arc<[MethodPolicy]>,
    /// The local implementation for `fail_back` and `mock`.
    pub local: Option<LocalService>,
}

impl std::fmt::Debug for ClientParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientParts")
            .field("channel", &self.channel)
            .field("policies", &self.policies)
            .field("local", &self.local.is_some())
            .finish()
    }
}

/// What a generated client calls through: an [`Invoker`], a serializer, the consumer's
/// policies, interceptors and tower layers, plus per-client overrides (timeout, hash key,
/// metadata).
///
/// Cheap to clone; clones share the invoker and its connections.
#[derive(Clone)]
pub struct Channel {
    invoker: Arc<dyn Invoker>,
    serializer: SerializerKind,
    policies: Arc<PolicySet>,
    interceptors: Interceptors,
    layers: ClientLayers,
    metadata: Metadata,
    metadata_limits: MetadataLimits,
    timeout: Option<Duration>,
    hash_key: Option<u64>,
    streams: StreamSettings,
    /// The fingerprints of the declared services' methods, by service key: sent with calls
    /// encoded by a fixed-schema serializer (see [`crate::schema::SCHEMA_METADATA`]).
    prints: Arc<DashMap<String, Arc<MethodPrints>>>,
}

/// How a channel's streams run: `rpc.consumer.stream_window`, `stream_timeout_ms` and
/// `stream_idle_timeout_ms` in the configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamSettings {
    /// The items of the server's stream taken ahead of the reader.
    pub window: StreamWindow,
    /// When the whole stream must have ended, from its start (a client's `with_timeout`
    /// overrides it); none: no limit.
    pub timeout: Option<Duration>,
    /// The longest wait for the server's next item; none: no limit.
    pub idle_timeout: Option<Duration>,
}

impl From<&crate::config::ConsumerConfig> for StreamSettings {
    fn from(c: &crate::config::ConsumerConfig) -> Self {
        let millis = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
        Self {
            window: c.stream_window,
            timeout: millis(c.stream_timeout_ms),
            idle_timeout: millis(c.stream_idle_timeout_ms),
        }
    }
}

impl Channel {
    /// A channel over any invoker, with the default serializer (msgpack) and policies (3 s
    /// timeout, no retry, fail fast, round robin).
    pub fn new(invoker: Arc<dyn Invoker>) -> Self {
        Self {
            invoker,
            serializer: SerializerKind::default(),
            policies: Arc::new(PolicySet::default()),
            interceptors: Interceptors::default(),
            layers: ClientLayers::default(),
            metadata: Metadata::new(),
            metadata_limits: MetadataLimits::default(),
            timeout: None,
            hash_key: None,
            streams: StreamSettings::default(),
            prints: Arc::default(),
        }
    }

    /// The same channel running streams with these settings.
    pub fn with_stream_settings(mut self, settings: StreamSettings) -> Self {
        self.streams = settings;
        self
    }

    /// A channel to one fixed address, `host:port`.
    pub fn direct(addr: impl Into<String>) -> Result<Self, ClientBuildError> {
        Self::direct_with(addr, ClientOptions::default())
    }

    /// A channel to one fixed address with explicit connection options.
    pub fn direct_with(addr: impl Into<String>, options: ClientOptions) -> Result<Self, ClientBuildError> {
        let limits = options.metadata_limits;
        let invoker = ClusterInvoker::direct(&addr.into(), Arc::new(ConnectionPool::new(options)))?;
        Ok(Self::new(Arc::new(invoker)).with_metadata_limits(limits))
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

    /// The same channel sending `key: value` in the metadata of every call.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key, value);
        self
    }

    /// The same channel sending every entry of `entries` in the metadata of every call.
    pub fn with_metadata_map<K: Into<String>, V: Into<String>>(
        mut self,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.metadata.extend(entries);
        self
    }

    /// The same channel with `interceptor` seeing every call, inside the interceptors it has
    /// (see [`crate::interceptor`]).
    pub fn with_interceptor<I: Interceptor>(mut self, interceptor: I) -> Self {
        self.interceptors = self.interceptors.with(Arc::new(interceptor));
        self
    }

    /// The same channel with these interceptors (outermost first), replacing the ones it has.
    pub fn with_interceptors(mut self, interceptors: Interceptors) -> Self {
        self.interceptors = interceptors;
        self
    }

    /// The same channel with a `tower::Layer` wrapping every call, inside the layers it has
    /// (the first added is the outermost), over `tower::Service<ClientCall, Response = Reply>`:
    /// tower's own (`TimeoutLayer`, `ConcurrencyLimitLayer`, a `ServiceBuilder` stack) or the
    /// user's. The layers run inside the interceptors and above fallback, retry, fail-over,
    /// balancing and the connection; the request is finished below them, so the metadata and
    /// deadline they set are the ones sent. A layer's error reaches the caller as the error
    /// table says ([`RpcError::from_layer_error`]).
    pub fn layer(mut self, layer: impl ClientLayer) -> Self {
        self.layers = self.layers.with(layer);
        self
    }

    /// The same channel with these bounds on each call's metadata.
    pub fn with_metadata_limits(mut self, limits: MetadataLimits) -> Self {
        self.metadata_limits = limits;
        self
    }

    /// The serializer calls are encoded with.
    pub fn serializer(&self) -> SerializerKind {
        self.serializer
    }

    /// The metadata every call carries.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Tells the invoker the schema of `service` as this process calls it (built by `schema`,
    /// at most once per service), so providers' schemas are checked against it; generated
    /// client builders call it.
    pub fn declare_schema(&self, service: &str, schema: fn() -> crate::schema::ServiceSchema) {
        self.invoker.declare_schema(service, schema);
        if !self.prints.contains_key(service) {
            let prints = Arc::new(MethodPrints::of(service, &schema()));
            self.prints.entry(service.to_owned()).or_insert(prints);
        }
    }

    /// Checks that the configuration's method overrides for `service` name methods among
    /// `methods`; generated client builders call it.
    pub fn check_method_overrides(&self, service: &str, methods: &[MethodDescriptor]) -> Result<(), ClientBuildError> {
        let names: Vec<&str> = methods.iter().map(|m| m.name).collect();
        match self.policies.unknown_methods(service, &names).into_iter().next() {
            Some(method) => Err(ClientBuildError::UnknownMethod {
                service: service.to_owned(),
                method,
                known: names.join(", "),
            }),
            None => Ok(()),
        }
    }

    /// The policy of one method under this channel's configuration.
    pub fn policy(&self, service: &str, method: &str, idempotent: bool) -> MethodPolicy {
        self.policies.resolve(service, method, idempotent)
    }

    /// Asks a provider of `service` (the one the balancer picks; use a direct channel to
    /// ask a given instance) how it is: the built-in [health method](crate::health).
    pub async fn health(&self, service: &str) -> Result<Health, RpcError> {
        let method = MethodDescriptor::dynamic(service, HEALTH_METHOD);
        let policy = self.policy(service, HEALTH_METHOD, true);
        let reply = self.call(method, &(), None::<&()>, &policy, None).await?;
        reply.into_value(self.serializer)
    }

    /// Performs a call of `method` with `args` (the tuple of its arguments) under `policy`.
    ///
    /// `first_arg` is hashed for `consistent_hash` when no explicit hash key is set; `local`
    /// serves `mock` and `fail_back`. Generated clients call this; decode the reply with
    /// [`Reply::into_value`] or [`Reply::into_result`].
    pub async fn call<A, K>(
        &self,
        method: &MethodDescriptor,
        args: &A,
        first_arg: Option<&K>,
        policy: &MethodPolicy,
        local: Option<&LocalService>,
    ) -> Result<Reply, RpcError>
    where
        A: Serialize + ?Sized,
        K: Serialize + ?Sized,
    {
        let overridden = self.with_rules(method, policy);
        let policy = overridden.as_ref().unwrap_or(policy);
        let started = Instant::now();
        let deadline = started + self.timeout.unwrap_or(policy.timeout);
        let mut ctx = self.begin(method, Some(deadline), started)?;
        let hash_key = self.hash_key_of(policy, first_arg);
        let plan = Plan {
            method,
            policy,
            hash_key,
            local,
        };
        let (result, ctx) = match self.layers.stack() {
            None => {
                let result = self.send(&mut ctx, args, plan).await;
                (result, Some(ctx))
            }
            Some(stack) => {
                let kept = (!self.interceptors.is_empty()).then(|| ctx.clone());
                (self.send_through(stack, ctx, args, plan).await, kept)
            }
        };
        let result = match result {
            Ok(reply) if reply.status == Status::SchemaMismatch => {
                Err(self.explained(method, reply.into_error(method.service, method.name)))
            }
            Err(e) => Err(self.explained(method, e)),
            ok => ok,
        };
        if let Some(ctx) = ctx.filter(|_| !self.interceptors.is_empty()) {
            let outcome = Outcome::from_result(&result, |reply| reply.status == Status::ApplicationError);
            self.interceptors.on_response(&ctx, outcome);
        }
        result
    }

    /// `error`, and when it is a schema mismatch, with the first difference between the
    /// provider's types and the ones this channel declared.
    fn explained(&self, method: &MethodDescriptor, error: RpcError) -> RpcError {
        match (error, self.prints.get(method.service)) {
            (RpcError::SchemaMismatch(mut mismatch), Some(prints)) => {
                prints.explain(&mut mismatch);
                RpcError::SchemaMismatch(mismatch)
            }
            (error, _) => error,
        }
    }

    /// The policy as the service's rules change it (timeout, balancer, hedging; an explicit
    /// timeout in code still wins), when they do.
    fn with_rules(&self, method: &MethodDescriptor, policy: &MethodPolicy) -> Option<MethodPolicy> {
        let rules = self.invoker.rules(method.service)?;
        rules.changes_policy().then(|| rules.apply(method.name, policy))
    }

    /// The call's affinity key under `consistent_hash`: the channel's, or its first argument's
    /// hash.
    fn hash_key_of<K: Serialize + ?Sized>(&self, policy: &MethodPolicy, first_arg: Option<&K>) -> Option<u64> {
        match policy.load_balancer {
            LoadBalancerKind::ConsistentHash => self.hash_key.or_else(|| first_arg.map(hash_serialized)),
            _ => None,
        }
    }

    /// The context of a call or stream starting at `started`: the channel's metadata, the
    /// deadline, the trace (the served call's, the one the metadata names, or a new one),
    /// then the interceptors' say.
    fn begin(
        &self,
        method: &MethodDescriptor,
        deadline: Option<Instant>,
        started: Instant,
    ) -> Result<CallContext, RpcError> {
        let mut ctx = CallContext::new(
            Side::Client,
            Bytes::from_static(method.service.as_bytes()),
            Bytes::from_static(method.name.as_bytes()),
            self.metadata.clone(),
            deadline,
            started,
        );
        // A call from inside a handler: never outlive the call being served; continue its trace.
        // Otherwise continue the trace the caller put in the metadata (a gateway forwarding
        // its request's `traceparent`), or start one.
        context::with_current(|served| served.inherit_into(&mut ctx));
        if ctx.trace().is_none() {
            let given = ctx
                .metadata()
                .get(TRACEPARENT)
                .and_then(TraceContext::parse_traceparent);
            ctx.set_trace(Some(given.map_or_else(TraceContext::new_root, |caller| caller.child())));
        }
        if !self.serializer.tolerates_additive_changes() {
            let print = self
                .prints
                .get(method.service)
                .and_then(|p| p.wire_fingerprint(method.name));
            if let Some(print) = print {
                ctx.metadata_mut()
                    .insert_bytes(Bytes::from_static(SCHEMA_METADATA.as_bytes()), print);
            }
        }
        self.interceptors.on_request(&mut ctx)?;
        Ok(ctx)
    }

    /// Opens a stream of `method` with `args` (the tuple of its arguments without a streamed
    /// one) and `input` (the encoded items of a streamed argument) under `policy`.
    ///
    /// The stream must start within the method's timeout (connected, accepted; a refusal
    /// tries other instances as a call would); its whole life is bounded by the stream
    /// timeout (or the client's `with_timeout`), and each wait for the server's next item by
    /// the idle timeout. The fallback modes (`mock`, `fail_back`, `fail_safe`) do not apply
    /// to streams. Generated clients call this; decode the result with
    /// [`Streaming::decoding`](crate::Streaming::decoding).
    pub async fn open_stream<A, K>(
        &self,
        method: &MethodDescriptor,
        args: &A,
        first_arg: Option<&K>,
        policy: &MethodPolicy,
        input: Option<ItemStream>,
    ) -> Result<RawStream, RpcError>
    where
        A: Serialize + ?Sized,
        K: Serialize + ?Sized,
    {
        let overridden = self.with_rules(method, policy);
        let policy = overridden.as_ref().unwrap_or(policy);
        let started = Instant::now();
        let deadline = self.timeout.or(self.streams.timeout).map(|t| started + t);
        let accept_by =
            (started + self.timeout.unwrap_or(policy.timeout)).min(deadline.unwrap_or(started + policy.timeout));
        let mut ctx = self.begin(method, deadline, started)?;
        let hash_key = self.hash_key_of(policy, first_arg);
        let open = StreamOpen {
            input: std::sync::Mutex::new(input),
            window: self.streams.window,
            deadline,
            idle_timeout: self.streams.idle_timeout,
        };
        let args = self.serializer.encode_body(args)?;
        let result = match self.layers.stack() {
            None => {
                let span = start_call(&mut ctx, &self.metadata_limits, method)?;
                let prefix = encode_request_prefix(method.service, method.name, ctx.metadata())?;
                let call = CallRequest {
                    service: method.service,
                    method: method.name,
                    serializer: self.serializer,
                    body: args.prepend(self.streams.window.credit().encode()).prepend(prefix),
                    deadline: accept_by,
                    policy,
                    hash_key,
                    route_tag: ctx.metadata().get(ROUTE_TAG),
                };
                let opened = self.invoker.open_stream(&call, &open).instrument(span.clone()).await;
                end_client_span(&span, &opened);
                opened
            }
            Some(stack) => {
                let opened = Arc::new(std::sync::Mutex::new(None));
                let call = ClientCall {
                    ctx: ctx.clone(),
                    method: *method,
                    serializer: self.serializer,
                    args,
                    policy: policy.clone(),
                    hash_key,
                    local: None,
                    invoker: self.invoker.clone(),
                    limits: self.metadata_limits,
                    stream: Some(ClientStreamParts {
                        open: Arc::new(open),
                        accept_by,
                        opened: opened.clone(),
                    }),
                };
                match stack.clone().oneshot(call).await.map_err(RpcError::from_layer_error) {
                    Ok(_) => opened
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .take()
                        .ok_or_else(|| RpcError::internal("a layer answered a stream without opening it")),
                    Err(e) => Err(e),
                }
            }
        };
        let raw = match result {
            Ok(raw) => raw,
            Err(e) => {
                let e = self.explained(method, e);
                if !self.interceptors.is_empty() {
                    self.interceptors.on_response(&ctx, Outcome::Error(e.kind()));
                }
                return Err(e);
            }
        };
        crate::metrics::client_stream_opened(method.service, method.name);
        if self.interceptors.is_empty() {
            return Ok(raw);
        }
        let interceptors = self.interceptors.clone();
        Ok(raw.on_end(move |outcome| interceptors.on_response(&ctx, outcome)))
    }

    /// The call path without tower layers: the whole request encoded in one buffer, then
    /// delivered.
    async fn send<A: Serialize + ?Sized>(
        &self,
        ctx: &mut CallContext,
        args: &A,
        plan: Plan<'_>,
    ) -> Result<Reply, RpcError> {
        let method = plan.method;
        let span = start_call(ctx, &self.metadata_limits, method)?;
        let body = encode_request_body(method.service, method.name, ctx.metadata(), self.serializer, args)?;
        let call = CallRequest {
            service: method.service,
            method: method.name,
            serializer: self.serializer,
            body,
            deadline: ctx.deadline(),
            policy: plan.policy,
            hash_key: plan.hash_key,
            route_tag: ctx.metadata().get(ROUTE_TAG),
        };
        deliver(self.invoker.as_ref(), &call, method, plan.local, span).await
    }

    /// The call path through the tower layers: the arguments encoded apart, the call handed to
    /// the stack as a [`ClientCall`] (its request is finished below the layers).
    async fn send_through<A: Serialize + ?Sized>(
        &self,
        stack: &ClientStack,
        ctx: CallContext,
        args: &A,
        plan: Plan<'_>,
    ) -> Result<Reply, RpcError> {
        let call = ClientCall {
            ctx,
            method: *plan.method,
            serializer: self.serializer,
            args: self.serializer.encode_body(args)?,
            policy: plan.policy.clone(),
            hash_key: plan.hash_key,
            local: plan.local.cloned(),
            invoker: self.invoker.clone(),
            limits: self.metadata_limits,
            stream: None,
        };
        stack.clone().oneshot(call).await.map_err(RpcError::from_layer_error)
    }
}

/// What the call path below the channel needs of one call besides its context and arguments.
struct Plan<'a> {
    method: &'a MethodDescriptor,
    policy: &'a MethodPolicy,
    hash_key: Option<u64>,
    local: Option<&'a LocalService>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("serializer", &self.serializer)
            .field("timeout", &self.timeout)
            .field("metadata", &self.metadata)
            .field("interceptors", &self.interceptors)
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

/// A client that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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
    /// A direct channel's address is not `host:port`.
    #[error("invalid address: {0}")]
    InvalidAddress(String),
    /// The configuration overrides a method the service does not have (a typo that would
    /// otherwise do nothing).
    #[error("rpc.consumer.services: {service} has no method {method} (it has {known})")]
    UnknownMethod {
        /// Service key.
        service: String,
        /// The method named in the configuration.
        method: String,
        /// The service's methods, comma-separated.
        known: String,
    },
}

/// Checks a resolved method policy against what the client can do; generated builders call it.
pub fn validate_policy(
    method: &MethodDescriptor,
    policy: &MethodPolicy,
    has_local: bool,
) -> Result<(), ClientBuildError> {
    let error = |mode| ClientBuildError::FallbackMissing {
        service: method.service.to_owned(),
        method: method.name.to_owned(),
        mode,
    };
    match policy.fallback {
        Fallback::DefaultValue if (method.default_reply)(SerializerKind::Bincode).is_none() => {
            Err(ClientBuildError::FailSafeWithoutDefault {
                service: method.service.to_owned(),
                method: method.name.to_owned(),
            })
        }
        Fallback::Mock if !has_local => Err(error("mock")),
        Fallback::Local if !has_local => Err(error("fail_back")),
        _ => Ok(()),
    }
}
