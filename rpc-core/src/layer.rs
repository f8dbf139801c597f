//! Middleware: layers that wrap every call, on the server and on the client.
//!
//! A [`Layer`] sees each call twice: [`Layer::on_request`] before it runs, with its
//! [`CallContext`] (service, method, metadata, deadline, peer, trace), and
//! [`Layer::on_response`] once it has ended, with its [`Outcome`]. On the request path a layer
//! may change the context (a client layer adding a token to the metadata) or refuse the call
//! with a [`Refusal`]: a refused call never reaches the handler (server) or the network
//! (client), and the caller gets the refusal's error kind, which is never retried.
//!
//! Layers run in the order they were added on the way in and in reverse on the way out, so
//! the first layer added wraps all the others. Every layer whose `on_request` ran sees
//! `on_response` exactly once, whatever happens to the call: it completes, fails, is refused
//! by a later layer, or (server side) is cancelled because its caller left.
//!
//! The same trait serves both sides ([`CallContext::side`] tells which), so a metrics or
//! logging layer is written once. Hooks are synchronous and run on the call's path: keep them
//! short; a layer that needs I/O (fetching keys, say) refreshes its state in the background.
//! With no layer the call path does not touch this module; each layer costs two virtual calls
//! per call.
//!
//! Per-call state a layer needs between the two hooks comes from the context: the start time
//! ([`CallContext::started`]), the request id, the metadata.

use std::fmt;
use std::sync::Arc;

use crate::context::CallContext;
use crate::error::{ErrorKind, RpcError};
use crate::protocol::Status;

/// What a layer sees of a call's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The method returned a value.
    Ok,
    /// The method returned its own error value.
    ApplicationError,
    /// The call failed (or was refused) with this kind of error.
    Error(ErrorKind),
    /// Server side: the caller left (cancelled, or its connection closed) before the call
    /// ended; the handler was dropped.
    Cancelled,
}

impl Outcome {
    /// The outcome a server reply with `status` stands for.
    pub fn from_status(status: Status) -> Self {
        match status {
            Status::Ok => Self::Ok,
            Status::ApplicationError => Self::ApplicationError,
            Status::ServiceNotFound => Self::Error(ErrorKind::ServiceNotFound),
            Status::MethodNotFound => Self::Error(ErrorKind::MethodNotFound),
            Status::DecodeError => Self::Error(ErrorKind::Decode),
            Status::EncodeError => Self::Error(ErrorKind::Encode),
            Status::Overloaded => Self::Error(ErrorKind::Overloaded),
            Status::ShuttingDown => Self::Error(ErrorKind::ShuttingDown),
            Status::DeadlineExceeded => Self::Error(ErrorKind::Timeout),
            Status::ProtocolError | Status::UnsupportedVersion => Self::Error(ErrorKind::Protocol),
            Status::Unauthenticated => Self::Error(ErrorKind::Unauthenticated),
            Status::PermissionDenied => Self::Error(ErrorKind::PermissionDenied),
            Status::InvalidMetadata => Self::Error(ErrorKind::InvalidMetadata),
            Status::Unsupported => Self::Error(ErrorKind::Unsupported),
            Status::Refused => Self::Error(ErrorKind::Refused),
            Status::InternalError | Status::Unknown(_) => Self::Error(ErrorKind::Remote),
        }
    }

    /// The outcome of a client call that returned `result` (a reply reaches the caller only
    /// for `Ok` and `ApplicationError` statuses).
    pub fn from_result<T>(result: &Result<T, RpcError>, application_error: impl FnOnce(&T) -> bool) -> Self {
        match result {
            Ok(value) if application_error(value) => Self::ApplicationError,
            Ok(_) => Self::Ok,
            Err(e) => Self::Error(e.kind()),
        }
    }

    /// Whether the call succeeded (a value, or the method's own error).
    pub fn is_success(self) -> bool {
        matches!(self, Self::Ok | Self::ApplicationError)
    }
}

/// The kind of a [`Refusal`]: what the caller is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalKind {
    /// The caller did not prove who it is ([`RpcError::Unauthenticated`]).
    Unauthenticated,
    /// The caller may not make this call ([`RpcError::PermissionDenied`]).
    PermissionDenied,
    /// Too much load ([`RpcError::Overloaded`]); the only kind a caller may retry elsewhere.
    Overloaded,
    /// The call's metadata is not acceptable ([`RpcError::InvalidMetadata`]).
    InvalidMetadata,
    /// Anything else ([`RpcError::Refused`]).
    Other,
}

/// A layer's refusal of a call: a kind and a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    kind: RefusalKind,
    message: String,
}

impl Refusal {
    /// A refusal of `kind` explained by `message`.
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The caller did not prove who it is.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(RefusalKind::Unauthenticated, message)
    }

    /// The caller may not make this call.
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(RefusalKind::PermissionDenied, message)
    }

    /// Too much load.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(RefusalKind::Overloaded, message)
    }

    /// Any other reason.
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(RefusalKind::Other, message)
    }

    /// The kind.
    pub fn kind(&self) -> RefusalKind {
        self.kind
    }

    /// The message for the caller.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The response status a server answers the refusal with.
    pub fn status(&self) -> Status {
        match self.kind {
            RefusalKind::Unauthenticated => Status::Unauthenticated,
            RefusalKind::PermissionDenied => Status::PermissionDenied,
            RefusalKind::Overloaded => Status::Overloaded,
            RefusalKind::InvalidMetadata => Status::InvalidMetadata,
            RefusalKind::Other => Status::Refused,
        }
    }

    /// The error a client caller gets for the refusal.
    pub fn into_error(self) -> RpcError {
        match self.kind {
            RefusalKind::Unauthenticated => RpcError::Unauthenticated(self.message),
            RefusalKind::PermissionDenied => RpcError::PermissionDenied(self.message),
            RefusalKind::Overloaded => RpcError::Overloaded,
            RefusalKind::InvalidMetadata => RpcError::InvalidMetadata(self.message),
            RefusalKind::Other => RpcError::Refused(self.message),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

/// Wraps every call; see the module docs. Both hooks default to doing nothing.
pub trait Layer: Send + Sync + 'static {
    /// Before the call runs: inspect or change its context, or refuse it.
    fn on_request(&self, ctx: &mut CallContext) -> Result<(), Refusal> {
        let _ = ctx;
        Ok(())
    }

    /// After the call ended (once per call whose `on_request` ran).
    fn on_response(&self, ctx: &CallContext, outcome: Outcome) {
        let _ = (ctx, outcome);
    }
}

/// A shared layer is a layer: one instance may wrap the calls of several servers and clients
/// (one [`MetricsLayer`](crate::metrics::MetricsLayer) for both sides of a process, say).
impl<L: Layer + ?Sized> Layer for Arc<L> {
    fn on_request(&self, ctx: &mut CallContext) -> Result<(), Refusal> {
        (**self).on_request(ctx)
    }

    fn on_response(&self, ctx: &CallContext, outcome: Outcome) {
        (**self).on_response(ctx, outcome)
    }
}

/// An ordered stack of layers; empty costs nothing.
#[derive(Clone, Default)]
pub struct Layers {
    stack: Option<Arc<[Arc<dyn Layer>]>>,
}

impl Layers {
    /// A stack of `layers`, outermost first.
    pub fn new(layers: Vec<Arc<dyn Layer>>) -> Self {
        Self {
            stack: (!layers.is_empty()).then(|| layers.into()),
        }
    }

    /// The same stack with `layer` added innermost.
    pub fn with(&self, layer: Arc<dyn Layer>) -> Self {
        let mut all: Vec<Arc<dyn Layer>> = self.stack.iter().flat_map(|s| s.iter().cloned()).collect();
        all.push(layer);
        Self::new(all)
    }

    /// Whether there is no layer.
    pub fn is_empty(&self) -> bool {
        self.stack.is_none()
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.stack.as_ref().map_or(0, |s| s.len())
    }

    /// Runs every `on_request` in order. On a refusal, the layers that ran (the refusing one
    /// included) have already seen `on_response` with the refusal's outcome.
    pub fn on_request(&self, ctx: &mut CallContext) -> Result<(), Refusal> {
        let Some(stack) = &self.stack else {
            return Ok(());
        };
        for (i, layer) in stack.iter().enumerate() {
            if let Err(refusal) = layer.on_request(ctx) {
                let outcome = Outcome::from_status(refusal.status());
                for layer in stack[..=i].iter().rev() {
                    layer.on_response(ctx, outcome);
                }
                return Err(refusal);
            }
        }
        Ok(())
    }

    /// Runs every `on_response` in reverse order.
    pub fn on_response(&self, ctx: &CallContext, outcome: Outcome) {
        if let Some(stack) = &self.stack {
            for layer in stack.iter().rev() {
                layer.on_response(ctx, outcome);
            }
        }
    }
}

impl fmt::Debug for Layers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layers").field("len", &self.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Recorder {
        name: &'static str,
        log: Arc<Mutex<Vec<String>>>,
        refuse: bool,
    }

    impl Layer for Recorder {
        fn on_request(&self, ctx: &mut CallContext) -> Result<(), Refusal> {
            self.log.lock().unwrap().push(format!("{} in", self.name));
            ctx.metadata_mut().insert(self.name, "seen");
            if self.refuse {
                return Err(Refusal::permission_denied("no"));
            }
            Ok(())
        }

        fn on_response(&self, _: &CallContext, outcome: Outcome) {
            self.log.lock().unwrap().push(format!("{} out {outcome:?}", self.name));
        }
    }

    fn stack(refuse_b: bool, log: &Arc<Mutex<Vec<String>>>) -> Layers {
        let layer = |name, refuse| {
            Arc::new(Recorder {
                name,
                log: log.clone(),
                refuse,
            }) as Arc<dyn Layer>
        };
        Layers::new(vec![layer("a", false), layer("b", refuse_b), layer("c", false)])
    }

    #[test]
    fn layers_nest_and_see_every_end() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let layers = stack(false, &log);
        let mut ctx = CallContext::detached();
        layers.on_request(&mut ctx).unwrap();
        assert_eq!(ctx.metadata().len(), 3);
        layers.on_response(&ctx, Outcome::Ok);
        assert_eq!(
            *log.lock().unwrap(),
            ["a in", "b in", "c in", "c out Ok", "b out Ok", "a out Ok"]
        );
    }

    #[test]
    fn a_refusal_stops_the_way_in_and_unwinds_the_layers_that_ran() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let layers = stack(true, &log);
        let mut ctx = CallContext::detached();
        let refusal = layers.on_request(&mut ctx).unwrap_err();
        assert_eq!(refusal.kind(), RefusalKind::PermissionDenied);
        assert!(matches!(refusal.into_error(), RpcError::PermissionDenied(m) if m == "no"));
        assert_eq!(
            *log.lock().unwrap(),
            [
                "a in",
                "b in",
                "b out Error(PermissionDenied)",
                "a out Error(PermissionDenied)"
            ]
        );
    }

    #[test]
    fn an_empty_stack_is_free_and_statuses_map_to_outcomes() {
        let layers = Layers::default();
        assert!(layers.is_empty());
        layers.on_request(&mut CallContext::detached()).unwrap();
        assert_eq!(
            Outcome::from_status(Status::DeadlineExceeded),
            Outcome::Error(ErrorKind::Timeout)
        );
        assert_eq!(
            Outcome::from_status(Status::Unknown(99)),
            Outcome::Error(ErrorKind::Remote)
        );
        assert!(Outcome::from_status(Status::ApplicationError).is_success());
    }
}
