//! The call context: what travels with every call besides its arguments.
//!
//! A [`CallContext`] holds the call's service and method, its [`Metadata`], its deadline, the
//! peer's address, its [`TraceContext`] and its typed [`Extensions`] (values middleware hands
//! to the handler). The server builds one for each request and runs
//! the handler inside it, so any code the handler runs can ask for it:
//!
//! ```no_run
//! # async fn handler() {
//! let ctx = waypost_core::context::current();
//! let tenant: Option<&str> = ctx.metadata().get("tenant");
//! let deadline: tokio::time::Instant = ctx.deadline();
//! let peer: Option<std::net::SocketAddr> = ctx.peer();
//! # }
//! ```
//!
//! # Propagation
//!
//! A call made from inside a handler (through any generated client) inherits, without the
//! handler passing anything:
//!
//! * the deadline: the outgoing call's deadline is the earlier of its own timeout and the
//!   deadline of the call being served, so a caller's budget bounds the whole tree of calls;
//! * the trace: the outgoing call carries a `traceparent` naming the served call's span as its
//!   parent.
//!
//! Metadata is not inherited (it belongs to one hop); a handler that wants to forward an entry
//! sets it on its client with `with_metadata`.
//!
//! The context lives in a tokio task-local of the handler's task. A handler that spawns a task
//! and calls out from it wraps the task's future in [`scope`] with the context to keep it.

pub mod export;
mod extensions;
mod identity;
mod metadata;
mod trace;

pub use extensions::Extensions;
pub use identity::PeerIdentity;
pub use metadata::{check_key, Metadata, MetadataError, MetadataLimits, MAX_KEY_LEN, MAX_VALUE_LEN};
pub use trace::{SpanId, TraceContext, TraceId, SAMPLED, TRACEPARENT};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

/// Which end of a call a context describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Side {
    /// The caller.
    Client,
    /// The server running the call.
    Server,
    /// Neither: code running outside any call (see [`current`]).
    Detached,
}

/// Far enough ahead to stand for "no deadline" without overflowing `Instant` arithmetic.
const NO_DEADLINE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// The context of one call; cheap to clone (its strings share their bytes).
#[derive(Clone, Debug)]
pub struct CallContext {
    side: Side,
    service: Bytes,
    method: Bytes,
    metadata: Metadata,
    deadline: Option<Instant>,
    peer: Option<SocketAddr>,
    /// The caller's verified certificate identity (server side, under mTLS).
    identity: Option<Arc<PeerIdentity>>,
    request_id: u64,
    trace: Option<TraceContext>,
    started: Instant,
    extensions: Extensions,
}

impl CallContext {
    /// A context of `side` for a call that started at `started`.
    pub(crate) fn new(
        side: Side,
        service: Bytes,
        method: Bytes,
        metadata: Metadata,
        deadline: Option<Instant>,
        started: Instant,
    ) -> Self {
        Self {
            side,
            service,
            method,
            metadata,
            deadline,
            peer: None,
            identity: None,
            request_id: 0,
            trace: None,
            started,
            extensions: Extensions::new(),
        }
    }

    /// The context of a call about to be made to `service` (`name:version`) and `method`.
    pub fn client(service: Bytes, method: Bytes, metadata: Metadata, deadline: Option<Instant>) -> Self {
        Self::new(Side::Client, service, method, metadata, deadline, Instant::now())
    }

    /// The context a server builds for a request that arrived at `started`. `service` and
    /// `method` must be UTF-8 (the request decoder checked them).
    pub(crate) fn server(
        service: Bytes,
        method: Bytes,
        metadata: Metadata,
        deadline: Option<Instant>,
        peer: Option<SocketAddr>,
        request_id: u64,
        started: Instant,
    ) -> Self {
        let trace = metadata
            .get(TRACEPARENT)
            .and_then(TraceContext::parse_traceparent)
            .map(|caller| caller.child());
        Self {
            peer,
            request_id,
            trace,
            ..Self::new(Side::Server, service, method, metadata, deadline, started)
        }
    }

    /// The context of code running outside any call.
    pub fn detached() -> Self {
        Self::new(
            Side::Detached,
            Bytes::new(),
            Bytes::new(),
            Metadata::new(),
            None,
            Instant::now(),
        )
    }

    /// Which end of the call this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The service key, `name:version` (empty when detached).
    pub fn service(&self) -> &str {
        std::str::from_utf8(&self.service).unwrap_or_default()
    }

    /// The method name (empty when detached).
    pub fn method(&self) -> &str {
        std::str::from_utf8(&self.method).unwrap_or_default()
    }

    /// The service key and method name as the bytes they were built from (static on a
    /// client, slices of the request on a server).
    pub(crate) fn target_bytes(&self) -> (&Bytes, &Bytes) {
        (&self.service, &self.method)
    }

    /// The call's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The call's metadata, to change (a client layer adding a header, say).
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// When the caller stops waiting. A call without a deadline reports one decades ahead;
    /// [`CallContext::has_deadline`] tells them apart.
    pub fn deadline(&self) -> Instant {
        self.deadline.unwrap_or(self.started + NO_DEADLINE)
    }

    /// Whether the call has a deadline.
    pub fn has_deadline(&self) -> bool {
        self.deadline.is_some()
    }

    /// Time left until the deadline (zero once passed); `None` without a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Sets the deadline; a context never moves its deadline later than the one it has.
    pub fn tighten_deadline(&mut self, deadline: Instant) {
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
    }

    /// The address of the other end: on the server, the caller's address.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The caller's identity, when its connection showed a client certificate the server
    /// verified (mTLS); `None` otherwise and on the client.
    pub fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.identity.as_deref()
    }

    /// Sets the caller's verified identity (the server does, for calls of an mTLS
    /// connection).
    pub(crate) fn set_peer_identity(&mut self, identity: Option<Arc<PeerIdentity>>) {
        self.identity = identity;
    }

    /// The request id on its connection (server side; 0 on the client).
    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// The call's trace position, when the call is traced.
    pub fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_ref()
    }

    /// Sets the call's trace position.
    pub fn set_trace(&mut self, trace: Option<TraceContext>) {
        self.trace = trace;
    }

    /// When the call started on this side.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The call's typed extensions: values middleware stored for the handler (or for its
    /// own response path).
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// The call's typed extensions, to change.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// The context a call made from inside this one starts from: the deadline and the trace
    /// carry over (see the module docs), the metadata does not.
    pub(crate) fn inherit_into(&self, outgoing: &mut CallContext) {
        if let Some(deadline) = self.deadline {
            outgoing.tighten_deadline(deadline);
        }
        if outgoing.trace.is_none() {
            outgoing.trace = self.trace.as_ref().map(TraceContext::child);
        }
    }
}

tokio::task_local! {
    static CURRENT: CallContext;
}

/// The context of the call being served by the running task; a detached context (no
/// deadline, no metadata) outside any call.
pub fn current() -> CallContext {
    try_current().unwrap_or_else(CallContext::detached)
}

/// The context of the call being served by the running task, if any.
pub fn try_current() -> Option<CallContext> {
    CURRENT.try_with(CallContext::clone).ok()
}

/// Runs `f` on the current call's context without cloning it; `None` outside any call.
pub(crate) fn with_current<R>(f: impl FnOnce(&CallContext) -> R) -> Option<R> {
    CURRENT.try_with(f).ok()
}

/// Runs `future` with `ctx` as its current context: what the server does for every handler,
/// and what a handler does to carry its context into a task it spawns.
pub fn scope<F: Future>(ctx: CallContext, future: F) -> tokio::task::futures::TaskLocalFuture<CallContext, F> {
    CURRENT.scope(ctx, future)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_ctx(metadata: Metadata, deadline: Option<Instant>) -> CallContext {
        CallContext::server(
            Bytes::from_static(b"S:1.0"),
            Bytes::from_static(b"m"),
            metadata,
            deadline,
            None,
            7,
            Instant::now(),
        )
    }

    #[tokio::test]
    async fn current_is_the_scoped_context_and_detached_outside() {
        assert_eq!(current().side(), Side::Detached);
        assert!(!current().has_deadline());
        let metadata: Metadata = [("tenant", "acme")].into_iter().collect();
        let ctx = server_ctx(metadata, Some(Instant::now() + Duration::from_secs(1)));
        scope(ctx, async {
            let ctx = current();
            assert_eq!(ctx.side(), Side::Server);
            assert_eq!(ctx.service(), "S:1.0");
            assert_eq!(ctx.method(), "m");
            assert_eq!(ctx.metadata().get("tenant"), Some("acme"));
            assert_eq!(ctx.request_id(), 7);
            assert!(ctx.remaining().unwrap() <= Duration::from_secs(1));
        })
        .await;
        assert_eq!(current().side(), Side::Detached);
    }

    #[test]
    fn an_outgoing_call_inherits_the_earlier_deadline_and_the_trace() {
        let soon = Instant::now() + Duration::from_millis(50);
        let later = Instant::now() + Duration::from_secs(5);
        let incoming: Metadata = [(TRACEPARENT, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
            .into_iter()
            .collect();
        let served = server_ctx(incoming, Some(soon));
        let trace = served.trace().copied().unwrap();
        assert_eq!(trace.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(trace.parent_span_id().unwrap().to_string(), "00f067aa0ba902b7");

        let mut out = CallContext::client(Bytes::new(), Bytes::new(), Metadata::new(), Some(later));
        served.inherit_into(&mut out);
        assert_eq!(out.deadline(), soon, "never longer than the served call's");
        assert_eq!(out.trace().unwrap().trace_id(), trace.trace_id());
        assert_eq!(out.trace().unwrap().parent_span_id(), Some(trace.span_id()));

        let mut sooner = CallContext::client(Bytes::new(), Bytes::new(), Metadata::new(), Some(Instant::now()));
        let own = sooner.deadline();
        served.inherit_into(&mut sooner);
        assert_eq!(sooner.deadline(), own, "an own shorter deadline stays");
    }
}
