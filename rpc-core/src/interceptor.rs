//! Interceptors: two synchronous hooks around every call, on the server and on the client.
//!
//! An [`Interceptor`] is the cheap way to see every call when the work is short and needs no
//! waiting (tonic calls the same thing an interceptor): [`Interceptor::on_request`] before the
//! call runs, with its [`CallContext`] (service, method, metadata, deadline, peer, trace,
//! extensions), and [`Interceptor::on_response`] once it has ended, with its [`Outcome`]. On
//! the request path an interceptor may change the context (a client interceptor adding a
//! token to the metadata) or refuse the call with an [`RpcError`]: a refused call never
//! reaches the tower layers, the handler (server) or the network (client), and the caller gets
//! the error's kind through the error table ([`crate::error`]).
//!
//! Middleware that has to wait, wrap the call's future or see its reply is a `tower::Layer`
//! instead (`ServerBuilder::layer`, `Channel::layer`); interceptors run outside the tower
//! layers, so they see every call, the ones a tower layer refuses included, with the
//! outcome the caller gets. Authentication ([`crate::auth`]) and the per-call metrics
//! ([`crate::metrics::MetricsLayer`]) are interceptors.
//!
//! Interceptors run in the order they were added on the way in and in reverse on the way out,
//! so the first added wraps all the others. Every interceptor whose `on_request` ran sees
//! `on_response` exactly once, whatever happens to the call: it completes, fails, is refused
//! by a later interceptor, or (server side) is cancelled because its caller left.
//!
//! The same trait serves both sides ([`CallContext::side`] tells which), so a metrics or
//! logging interceptor is written once. With no interceptor the call path does not touch this
//! module; each costs two virtual calls per call.

use std::fmt;
use std::sync::Arc;

use crate::context::CallContext;
use crate::error::{ErrorKind, RpcError};
use crate::protocol::Status;

/// What an interceptor or a metric sees of a call's end.
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
    /// The outcome a server reply with `status` stands for (through the error table).
    pub fn from_status(status: Status) -> Self {
        match status {
            Status::Ok => Self::Ok,
            Status::ApplicationError => Self::ApplicationError,
            other => Self::Error(ErrorKind::from_status(other)),
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

/// Sees every call; see the module docs. Both hooks default to doing nothing.
pub trait Interceptor: Send + Sync + 'static {
    /// Before the call runs: inspect or change its context, or refuse it (the caller gets the
    /// error's kind: `RpcError::PermissionDenied`, `RpcError::Unauthenticated`, ...).
    fn on_request(&self, ctx: &mut CallContext) -> Result<(), RpcError> {
        let _ = ctx;
        Ok(())
    }

    /// After the call ended (once per call whose `on_request` ran).
    fn on_response(&self, ctx: &CallContext, outcome: Outcome) {
        let _ = (ctx, outcome);
    }
}

/// A shared interceptor is an interceptor: one instance may see the calls of several servers
/// and clients (one [`MetricsLayer`](crate::metrics::MetricsLayer) for both sides of a
/// process, say).
impl<I: Interceptor + ?Sized> Interceptor for Arc<I> {
    fn on_request(&self, ctx: &mut CallContext) -> Result<(), RpcError> {
        (**self).on_request(ctx)
    }

    fn on_response(&self, ctx: &CallContext, outcome: Outcome) {
        (**self).on_response(ctx, outcome)
    }
}

/// An ordered stack of interceptors; empty costs nothing.
#[derive(Clone, Default)]
pub struct Interceptors {
    stack: Option<Arc<[Arc<dyn Interceptor>]>>,
}

impl Interceptors {
    /// A stack of `interceptors`, outermost first.
    pub fn new(interceptors: Vec<Arc<dyn Interceptor>>) -> Self {
        Self {
            stack: (!interceptors.is_empty()).then(|| interceptors.into()),
        }
    }

    /// The same stack with `interceptor` added innermost.
    pub fn with(&self, interceptor: Arc<dyn Interceptor>) -> Self {
        let mut all: Vec<Arc<dyn Interceptor>> = self.stack.iter().flat_map(|s| s.iter().cloned()).collect();
        all.push(interceptor);
        Self::new(all)
    }

    /// Whether there is no interceptor.
    pub fn is_empty(&self) -> bool {
        self.stack.is_none()
    }

    /// Number of interceptors.
    pub fn len(&self) -> usize {
        self.stack.as_ref().map_or(0, |s| s.len())
    }

    /// Runs every `on_request` in order. On a refusal, the interceptors that ran (the refusing
    /// one included) have already seen `on_response` with the refusal's outcome.
    pub fn on_request(&self, ctx: &mut CallContext) -> Result<(), RpcError> {
        let Some(stack) = &self.stack else {
            return Ok(());
        };
        for (i, interceptor) in stack.iter().enumerate() {
            if let Err(refusal) = interceptor.on_request(ctx) {
                let outcome = Outcome::Error(refusal.kind());
                for interceptor in stack[..=i].iter().rev() {
                    interceptor.on_response(ctx, outcome);
                }
                return Err(refusal);
            }
        }
        Ok(())
    }

    /// Runs every `on_response` in reverse order.
    pub fn on_response(&self, ctx: &CallContext, outcome: Outcome) {
        if let Some(stack) = &self.stack {
            for interceptor in stack.iter().rev() {
                interceptor.on_response(ctx, outcome);
            }
        }
    }
}

impl fmt::Debug for Interceptors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interceptors").field("len", &self.len()).finish()
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

    impl Interceptor for Recorder {
        fn on_request(&self, ctx: &mut CallContext) -> Result<(), RpcError> {
            self.log.lock().unwrap().push(format!("{} in", self.name));
            ctx.metadata_mut().insert(self.name, "seen");
            if self.refuse {
                return Err(RpcError::PermissionDenied("no".into()));
            }
            Ok(())
        }

        fn on_response(&self, _: &CallContext, outcome: Outcome) {
            self.log.lock().unwrap().push(format!("{} out {outcome:?}", self.name));
        }
    }

    fn stack(refuse_b: bool, log: &Arc<Mutex<Vec<String>>>) -> Interceptors {
        let layer = |name, refuse| {
            Arc::new(Recorder {
                name,
                log: log.clone(),
                refuse,
            }) as Arc<dyn Interceptor>
        };
        Interceptors::new(vec![layer("a", false), layer("b", refuse_b), layer("c", false)])
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
        assert!(matches!(refusal, RpcError::PermissionDenied(m) if m == "no"));
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
        let layers = Interceptors::default();
        assert!(layers.is_empty());
        layers.on_request(&mut CallContext::detached()).unwrap();
        assert_eq!(
            Outcome::from_status(Status::DeadlineExceeded),
            Outcome::Error(ErrorKind::Timeout)
        );
        assert_eq!(
            Outcome::from_status(Status::Unknown(99)),
            Outcome::Error(ErrorKind::Internal)
        );
        assert!(Outcome::from_status(Status::ApplicationError).is_success());
    }
}
