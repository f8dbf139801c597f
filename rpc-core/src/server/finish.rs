//! How a call ends, on any transport: under its deadline, a panic that fails that call only,
//! and the interceptors told how it ended (see [`EndGuard`]). The binary connection and the
//! HTTP ingress run calls the same way.

use std::any::Any;
use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;

use tokio::time::Instant;
use tracing::{debug, error};

use super::call::Invocation;
use super::Shared;
use crate::context::export::{self, CallEnd, SpanKind};
use crate::context::CallContext;
use crate::error::ErrorKind;
use crate::interceptor::Outcome;
use crate::protocol::Status;
use crate::reply::Reply;

/// The span of one call on the server. Its trace continues the caller's; when spans are
/// exported (see [`crate::context::export`]) the exporter gives it its position, which `ctx`
/// then carries (the handler's outgoing calls name it as their parent).
pub(crate) fn call_span(ctx: &mut CallContext) -> tracing::Span {
    let span = tracing::info_span!(
        "rpc_call",
        service = ctx.service(),
        method = ctx.method(),
        request_id = ctx.request_id(),
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_span_id = tracing::field::Empty,
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
    );
    export::open_span(&span, SpanKind::Server, ctx);
    span
}

/// Tells the span exporter (if one is installed) how the call in `span` ended.
pub(crate) fn end_call_span(span: &tracing::Span, reply: &Reply) {
    let Some(export) = export::span_export() else {
        return;
    };
    let message;
    let end = match reply.status {
        Status::Ok => CallEnd::Ok,
        // The body is the encoded application error, not text.
        Status::ApplicationError => CallEnd::Failed {
            kind: ErrorKind::Application.as_str(),
            message: "the method returned an error",
        },
        status => {
            message = reply.message();
            CallEnd::Failed {
                kind: ErrorKind::from_status(status).as_str(),
                message: &message,
            }
        }
    };
    export.end(span, end);
}

/// The future of a call that runs in its own task. When it goes (the call ended, its caller
/// left, or the server aborted) it tells the interceptors how the call ended, with the context
/// the future gives back: cancelled unless an outcome was set.
pub(crate) struct EndGuard {
    pub(crate) shared: Arc<Shared>,
    pub(crate) call: Pin<Box<Invocation>>,
    /// Whether interceptors wait for the call's end.
    pub(crate) intercepted: bool,
    /// How the call ended, as the interceptors hear it.
    pub(crate) outcome: Outcome,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        if !self.intercepted {
            return;
        }
        if let Some(ctx) = self.call.as_mut().take_context() {
            self.shared.interceptors.on_response(&ctx, self.outcome);
        }
    }
}

/// Drives the call in `guard` until it ends, under `deadline`, or the server aborts (`None`):
/// its reply, the reply of its panic, or deadline exceeded. The guard's outcome is set from
/// the reply, for the interceptors.
pub(crate) async fn drive(guard: &mut EndGuard, deadline: Option<Instant>, request_id: u64) -> Option<Reply> {
    let abort = guard.shared.abort.clone();
    let call = &mut guard.call;
    let run = poll_fn(
        |cx| match std::panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(reply)) => Poll::Ready(Ok(reply)),
            Err(panic) => Poll::Ready(Err(panic)),
        },
    );
    let outcome = tokio::select! {
        biased;
        _ = abort.cancelled() => return None,
        outcome = with_deadline(run, deadline) => outcome,
    };
    let reply = match outcome {
        Some(Ok(reply)) => reply,
        Some(Err(panic)) => panicked("", request_id, panic.as_ref()),
        None => {
            debug!("deadline passed, call abandoned");
            Reply::failure(Status::DeadlineExceeded, "deadline exceeded on the server")
        }
    };
    guard.outcome = Outcome::from_status(reply.status);
    // Runs in the call's span (the call's task, or the HTTP ingress, is instrumented with it).
    end_call_span(&tracing::Span::current(), &reply);
    Some(reply)
}

/// `fut`, given up at `deadline` (`None` then).
pub(crate) async fn with_deadline<F: Future>(fut: F, deadline: Option<Instant>) -> Option<F::Output> {
    let fut = pin!(fut);
    match deadline {
        Some(d) => tokio::time::timeout_at(d, fut).await.ok(),
        None => Some(fut.await),
    }
}

/// Logs a handler's panic (the call's span names the service when `service` is empty) and
/// makes the reply that fails that call only.
pub(crate) fn panicked(service: &str, request_id: u64, panic: &(dyn Any + Send)) -> Reply {
    let message = panic_message(panic);
    error!(service, request_id, panic = %message, "handler panicked");
    Reply::failure(Status::InternalError, format!("handler panicked: {message}"))
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
