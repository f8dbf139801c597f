//! The client's tower seam: [`ClientCall`] (what a client layer sees of a call), the
//! innermost service that delivers it, and [`ClientStack`] (the boxed stack a channel calls).
//!
//! A channel with tower layers ([`Channel::layer`](super::Channel::layer)) encodes a call's
//! arguments, hands the call to its stack as a [`ClientCall`], and the innermost service
//! (`Deliver`) finishes the request (the `traceparent`, the metadata limits, the prefix with
//! the metadata as the layers left it) and sends it down the call path: fallback, then the
//! invoker's balancing, retry, fail-over and connection. A layer's error becomes an
//! [`RpcError`] by type ([`RpcError::from_layer_error`]). A channel without tower layers never
//! builds a stack and encodes the whole request in one buffer.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::util::BoxCloneSyncService;
use tower::ServiceExt;
use tower_layer::Layer;

use super::deliver::{deliver, end_client_span, start_call};
use super::{CallRequest, Invoker, StreamOpen};
use crate::body::Body;
use crate::context::{CallContext, MetadataLimits};
use crate::error::{BoxError, RpcError};
use crate::fault::MethodPolicy;
use crate::future::BoxFuture;
use crate::protocol::encode_request_prefix;
use crate::reply::Reply;
use crate::serializer::SerializerKind;
use crate::service::{LocalService, MethodDescriptor};
use crate::stream::RawStream;
use tracing::Instrument;

/// One call as the client's tower layers see it: its context, its method, its encoded
/// arguments and the policy it runs under. The request is finished below the layers, so the
/// metadata and deadline a layer sets are the ones sent.
pub struct ClientCall {
    pub(crate) ctx: CallContext,
    pub(crate) method: MethodDescriptor,
    pub(crate) serializer: SerializerKind,
    pub(crate) args: Body,
    pub(crate) policy: MethodPolicy,
    pub(crate) hash_key: Option<u64>,
    pub(crate) local: Option<LocalService>,
    pub(crate) invoker: Arc<dyn Invoker>,
    pub(crate) limits: MetadataLimits,
    /// For a stream: how to open it, and where the opened stream goes.
    pub(crate) stream: Option<ClientStreamParts>,
}

/// What a stream carries through a client's layers: the innermost service opens it, leaves
/// it here, and answers an empty `Ok` (the layers see the stream's start).
pub(crate) struct ClientStreamParts {
    pub(crate) open: Arc<StreamOpen>,
    /// When the stream must have been accepted.
    pub(crate) accept_by: tokio::time::Instant,
    pub(crate) opened: Arc<std::sync::Mutex<Option<RawStream>>>,
}

impl ClientCall {
    /// The call's context: service, method, metadata, deadline, trace and extensions. What a
    /// layer changes here is what is sent (metadata, a tighter deadline).
    pub fn context(&self) -> &CallContext {
        &self.ctx
    }

    /// The call's context, to change.
    pub fn context_mut(&mut self) -> &mut CallContext {
        &mut self.ctx
    }

    /// What the call path knows of the method (service key, name, idempotence).
    pub fn method(&self) -> &MethodDescriptor {
        &self.method
    }

    /// The serializer the arguments are encoded with.
    pub fn serializer(&self) -> SerializerKind {
        self.serializer
    }

    /// The encoded arguments.
    pub fn args(&self) -> &Body {
        &self.args
    }

    /// Whether the call opens a stream (its reply, an empty `Ok`, says that it started).
    pub fn is_stream(&self) -> bool {
        self.stream.is_some()
    }

    /// The policy the call runs under (timeout, retry, fail-over, fallback, balancer).
    pub fn policy(&self) -> &MethodPolicy {
        &self.policy
    }
}

impl fmt::Debug for ClientCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCall")
            .field("service", &self.method.service)
            .field("method", &self.method.name)
            .field("serializer", &self.serializer)
            .finish_non_exhaustive()
    }
}

/// A channel's tower layers around delivery, boxed.
pub type ClientStack = BoxCloneSyncService<ClientCall, Reply, BoxError>;

/// The innermost service of a client stack: finishes the request and sends it down the call
/// path.
#[derive(Debug, Clone, Copy, Default)]
struct Deliver;

impl tower_service::Service<ClientCall> for Deliver {
    type Response = Reply;
    type Error = RpcError;
    type Future = BoxFuture<'static, Result<Reply, RpcError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ClientCall) -> Self::Future {
        Box::pin(async move {
            let ClientCall {
                mut ctx,
                method,
                serializer,
                args,
                policy,
                hash_key,
                local,
                invoker,
                limits,
                stream,
            } = call;
            let span = start_call(&mut ctx, &limits, &method)?;
            let prefix = encode_request_prefix(method.service, method.name, ctx.metadata())?;
            let args = match &stream {
                Some(stream) => args.prepend(stream.open.window.credit().encode()),
                None => args,
            };
            let request = CallRequest {
                service: method.service,
                method: method.name,
                serializer,
                body: args.prepend(prefix),
                deadline: stream.as_ref().map_or_else(|| ctx.deadline(), |s| s.accept_by),
                policy: &policy,
                hash_key,
                route_tag: ctx.metadata().get(crate::rules::ROUTE_TAG),
            };
            let Some(stream) = stream else {
                return deliver(invoker.as_ref(), &request, &method, local.as_ref(), span).await;
            };
            let opened = invoker
                .open_stream(&request, &stream.open)
                .instrument(span.clone())
                .await;
            end_client_span(&span, &opened);
            let opened = opened?;
            *stream.opened.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(opened);
            Ok(Reply::empty())
        })
    }
}

/// The tower layers a channel can take: any `tower::Layer` over a [`ClientStack`] whose
/// service answers a [`ClientCall`] with a [`Reply`] (its error: anything that boxes).
/// Implemented for every such layer.
pub trait ClientLayer: Send + Sync + 'static {
    /// `inner` wrapped in the layer, boxed.
    fn wrap(&self, inner: ClientStack) -> ClientStack;
}

impl<L> ClientLayer for L
where
    L: Layer<ClientStack> + Send + Sync + 'static,
    L::Service: tower_service::Service<ClientCall, Response = Reply> + Clone + Send + Sync + 'static,
    <L::Service as tower_service::Service<ClientCall>>::Error: Into<BoxError>,
    <L::Service as tower_service::Service<ClientCall>>::Future: Send + 'static,
{
    fn wrap(&self, inner: ClientStack) -> ClientStack {
        BoxCloneSyncService::new(self.layer(inner).map_err(Into::into))
    }
}

/// The tower layers of a channel, outermost first, and the stack they make.
#[derive(Clone, Default)]
pub(crate) struct ClientLayers {
    layers: Vec<Arc<dyn ClientLayer>>,
    stack: Option<ClientStack>,
}

impl ClientLayers {
    /// The same layers with `layer` innermost, and the stack rebuilt.
    pub(crate) fn with(&self, layer: impl ClientLayer) -> Self {
        let mut layers = self.layers.clone();
        layers.push(Arc::new(layer));
        let base = BoxCloneSyncService::new(Deliver.map_err(BoxError::from));
        let stack = layers.iter().rev().fold(base, |inner, layer| layer.wrap(inner));
        Self {
            layers,
            stack: Some(stack),
        }
    }

    /// The stack, when there is any layer.
    pub(crate) fn stack(&self) -> Option<&ClientStack> {
        self.stack.as_ref()
    }

    /// Number of layers.
    pub(crate) fn len(&self) -> usize {
        self.layers.len()
    }
}
