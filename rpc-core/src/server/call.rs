//! The server's tower seam: [`ServerCall`] (what a layer sees of a request), [`Dispatch`]
//! (the innermost service, which runs the handler) and [`ServerStack`] (the boxed stack the
//! server calls).
//!
//! A server with tower layers builds, once, `layers(Dispatch)` boxed as a [`ServerStack`].
//! Each admitted call clones the stack (tower's contract: readiness belongs to the clone that
//! is called) and drives `ready` then `call` as one future, which the connection polls once
//! in its own task like any handler: a stack whose layers do not wait finishes there and costs
//! no task. Dispatch puts the context (as the layers left it: metadata, extensions) in scope
//! for the handler. A layer's error becomes the reply the error table gives it
//! ([`RpcError::from_layer_error`]).
//!
//! A server without tower layers never builds a stack: the call goes to its handler directly,
//! as Dispatch would. Every front end runs its calls as an [`Invocation`], which takes one of
//! the two ways; the server's drivers poll it, catch its panics and give its context back to
//! the interceptors when it ends.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::FutureExt;
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tower::util::{BoxCloneSyncService, Oneshot};
use tower::ServiceExt;

use crate::body::Body;
use crate::context::{self, CallContext};
use crate::error::{BoxError, RpcError};
use crate::future::BoxFuture;
use crate::protocol::Status;
use crate::reply::Reply;
use crate::serializer::SerializerKind;
use crate::service::{Service, StreamAnswer};
use crate::stream::{ItemStream, RawStream};

/// One call as the server's tower layers see it: its context, its serializer and its encoded
/// arguments, bound for an admitted service and method.
pub struct ServerCall {
    ctx: CallContext,
    serializer: SerializerKind,
    args: Body,
    service: Arc<dyn Service>,
    /// For a streaming call: the client's items, and where Dispatch leaves the handler's.
    stream: Option<StreamParts>,
}

/// What a streaming call carries through the layers besides its arguments.
pub(crate) struct StreamParts {
    /// The client's items, when the method takes a stream.
    pub(crate) input: Option<RawStream>,
    /// Where Dispatch leaves the items the handler returned (its reply is then `Ok` and
    /// empty, and the layers see the stream's start).
    pub(crate) output: Arc<Mutex<Option<ItemStream>>>,
}

impl ServerCall {
    pub(crate) fn new(ctx: CallContext, serializer: SerializerKind, args: Body, service: Arc<dyn Service>) -> Self {
        Self {
            ctx,
            serializer,
            args,
            service,
            stream: None,
        }
    }

    /// A streaming call (see [`StreamParts`]).
    pub(crate) fn streaming(
        ctx: CallContext,
        serializer: SerializerKind,
        args: Body,
        service: Arc<dyn Service>,
        stream: StreamParts,
    ) -> Self {
        Self {
            stream: Some(stream),
            ..Self::new(ctx, serializer, args, service)
        }
    }

    /// Whether the call is a stream (its handler's items, if it returns any, follow the reply
    /// the layers see).
    pub fn is_stream(&self) -> bool {
        self.stream.is_some()
    }

    /// The call's context: service, method, metadata, deadline, peer, identity, trace and
    /// extensions. What a layer changes here is what the handler sees.
    pub fn context(&self) -> &CallContext {
        &self.ctx
    }

    /// The call's context, to change (store an extension for the handler, say).
    pub fn context_mut(&mut self) -> &mut CallContext {
        &mut self.ctx
    }

    /// The serializer the arguments are encoded with (the reply uses it too).
    pub fn serializer(&self) -> SerializerKind {
        self.serializer
    }

    /// The encoded arguments.
    pub fn args(&self) -> &Body {
        &self.args
    }
}

impl std::fmt::Debug for ServerCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCall")
            .field("service", &self.ctx.service())
            .field("method", &self.ctx.method())
            .field("serializer", &self.serializer)
            .finish_non_exhaustive()
    }
}

/// The innermost service of a server's stack: runs the call's handler inside its context. A
/// streaming call's handler answers `Ok` (empty) when it returned its items, which the server
/// then sends.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dispatch;

impl tower_service::Service<ServerCall> for Dispatch {
    type Response = Reply;
    type Error = Infallible;
    type Future = DispatchFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ServerCall) -> Self::Future {
        dispatch(call).map(Ok as fn(Reply) -> Result<Reply, Infallible>)
    }
}

/// The call's handler (for a streaming call: its items left in the call's [`StreamParts`]),
/// inside the call's context.
fn dispatch(call: ServerCall) -> TaskLocalFuture<CallContext, BoxFuture<'static, Reply>> {
    let ServerCall {
        ctx,
        serializer,
        args,
        service,
        stream,
    } = call;
    let handler = match stream {
        None => service.call(ctx.method(), serializer, args),
        Some(StreamParts { input, output }) => {
            let answer = service.call_stream(ctx.method(), serializer, args, input);
            Box::pin(async move {
                match answer.await {
                    StreamAnswer::Reply(reply) => reply,
                    StreamAnswer::Items(items) => {
                        *output.lock().unwrap_or_else(PoisonError::into_inner) = Some(items);
                        Reply::empty()
                    }
                }
            })
        }
    };
    context::scope(ctx, handler)
}

/// The future of [`Dispatch`]: the handler, in its call's context.
pub type DispatchFuture = futures_util::future::Map<
    TaskLocalFuture<CallContext, BoxFuture<'static, Reply>>,
    fn(Reply) -> Result<Reply, Infallible>,
>;

/// A server's tower layers around [`Dispatch`], boxed once when the server starts.
pub type ServerStack = BoxCloneSyncService<ServerCall, Reply, BoxError>;

/// The tower layers a server can be built with: any `tower::Layer` over [`Dispatch`] whose
/// service answers a [`ServerCall`] with a [`Reply`] (its error: anything that boxes). Implemented
/// for every such layer; a bound to name in code that takes a `ServerBuilder<L>`.
pub trait ServerLayers: Send + 'static {
    /// The layers around [`Dispatch`], boxed.
    fn into_stack(self) -> ServerStack;
}

impl<L> ServerLayers for L
where
    L: tower_layer::Layer<Dispatch> + Send + 'static,
    L::Service: tower_service::Service<ServerCall, Response = Reply> + Clone + Send + Sync + 'static,
    <L::Service as tower_service::Service<ServerCall>>::Error: Into<BoxError>,
    <L::Service as tower_service::Service<ServerCall>>::Future: Send + 'static,
{
    fn into_stack(self) -> ServerStack {
        BoxCloneSyncService::new(self.layer(Dispatch).map_err(Into::into))
    }
}

/// One call through the server's stack: `ready` then `call` on a clone of the stack, the
/// layer's error turned into the reply the error table gives it. Holds a copy of the context
/// for the interceptors when there are any.
pub(crate) struct StackCall {
    call: Oneshot<ServerStack, ServerCall>,
    ctx: Option<CallContext>,
}

impl StackCall {
    /// `call` through `stack`; `keep_context` keeps a copy of its context for the
    /// interceptors' `on_response`.
    pub(crate) fn new(stack: &ServerStack, call: ServerCall, keep_context: bool) -> Self {
        let ctx = keep_context.then(|| call.ctx.clone());
        Self {
            call: stack.clone().oneshot(call),
            ctx,
        }
    }
}

impl Future for StackCall {
    type Output = Reply;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        Pin::new(&mut self.call).poll(cx).map(|result| {
            result.unwrap_or_else(|error| {
                let error = RpcError::from_layer_error(error);
                tracing::debug!(%error, "a layer failed the call");
                Reply::from_error(&error)
            })
        })
    }
}

pin_project! {
    /// One call through the server: through its stack when it has tower layers, else
    /// straight to its handler as [`Dispatch`] would run it (no stack to clone, no layer's
    /// future to box). Nothing runs before the first poll, so a handler that panics while it
    /// makes its future fails at that poll, where every driver of a call catches panics.
    #[project = InvocationProj]
    pub(crate) enum Invocation {
        /// Through the layers.
        Stack { call: StackCall },
        /// No layers, not polled yet.
        Unpolled { call: Option<ServerCall> },
        /// No layers: the handler, in its context.
        Direct {
            #[pin]
            handler: TaskLocalFuture<CallContext, BoxFuture<'static, Reply>>,
        },
    }
}

impl Invocation {
    /// `call` through `stack`, or to its handler when there is none; `keep_context` keeps the
    /// context for the interceptors (see [`Invocation::take_context`]).
    pub(crate) fn new(stack: Option<&ServerStack>, call: ServerCall, keep_context: bool) -> Self {
        match stack {
            Some(stack) => Self::Stack {
                call: StackCall::new(stack, call, keep_context),
            },
            None => Self::Unpolled { call: Some(call) },
        }
    }
}

impl Future for Invocation {
    type Output = Reply;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        loop {
            match self.as_mut().project() {
                InvocationProj::Stack { call } => return Pin::new(call).poll(cx),
                InvocationProj::Direct { handler } => return handler.poll(cx),
                InvocationProj::Unpolled { call } => match call.take() {
                    Some(call) => self.set(Self::Direct {
                        handler: dispatch(call),
                    }),
                    // Polled again after a panic while its handler was made.
                    None => return Poll::Ready(Reply::failure(Status::InternalError, "the call already failed")),
                },
            }
        }
    }
}

impl Invocation {
    /// The call's context, when this invocation kept it, once the call ended (taken once):
    /// for the interceptors' `on_response`.
    pub(crate) fn take_context(self: Pin<&mut Self>) -> Option<CallContext> {
        match self.project() {
            InvocationProj::Stack { call } => call.ctx.take(),
            InvocationProj::Unpolled { call } => call.take().map(|call| call.ctx),
            InvocationProj::Direct { handler } => handler.take_value(),
        }
    }
}
