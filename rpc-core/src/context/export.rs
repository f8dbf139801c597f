//! The seam through which call spans reach a tracing system (OpenTelemetry, through
//! `waypost::telemetry`).
//!
//! The framework names every call's trace position itself ([`TraceContext`]) and sends it on in
//! `traceparent`. An exporter creates its spans with ids of its own, so when one is installed
//! the framework asks it, for each call span it opens, which position the exported span has and
//! carries that one on: the `traceparent` a call sends then names the exported span, and the
//! next hop's span becomes its child in the exporter's trace. When the call ends, the exporter
//! hears how, and on the client which instance answered.
//!
//! With no exporter installed (the default) a call pays one atomic load per span to learn
//! that there is none.

use std::sync::OnceLock;

use super::{CallContext, TraceContext};

/// Which end of a call a span stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SpanKind {
    /// The caller's span of a call (or of opening a stream).
    Client,
    /// The server's span of running a call.
    Server,
}

/// What a call span is about, for the exporter's name and attributes.
#[derive(Debug, Clone, Copy)]
pub struct CallSpan<'a> {
    /// Client or server.
    pub kind: SpanKind,
    /// The service key, `name:version`.
    pub service: &'a str,
    /// The method's name.
    pub method: &'a str,
    /// The trace position the framework chose: on the server, the caller's trace and span as
    /// parent (if the request carried `traceparent`); on the client, the trace of the call being
    /// served or the one in the metadata (if any).
    pub trace: Option<TraceContext>,
}

/// How a call ended, for the exporter's span status.
#[derive(Debug, Clone, Copy)]
pub enum CallEnd<'a> {
    /// It succeeded.
    Ok,
    /// It failed: `kind` names the failure (an [`ErrorKind`](crate::ErrorKind) name such as
    /// `deadline_exceeded`), `message` says what happened.
    Failed {
        /// The failure's kind, as a stable name.
        kind: &'static str,
        /// What happened.
        message: &'a str,
    },
}

/// A tracing system that exports call spans (see the module documentation).
pub trait SpanExport: Send + Sync + 'static {
    /// `span` was just opened for `call`: returns the trace position the exported span has,
    /// which the call carries on (its `traceparent`, its log fields, the calls its handler
    /// makes).
    fn start(&self, span: &tracing::Span, call: &CallSpan<'_>) -> TraceContext;

    /// The client's call in `span` is being sent to the instance at `address` (`host:port`);
    /// a retry names the next one.
    fn peer(&self, span: &tracing::Span, address: &str);

    /// The call in `span` ended as `end`.
    fn end(&self, span: &tracing::Span, end: CallEnd<'_>);
}

static EXPORT: OnceLock<Box<dyn SpanExport>> = OnceLock::new();

/// Installs the process's span exporter; `false` when one already is (the first one stays).
pub fn install_span_export(export: Box<dyn SpanExport>) -> bool {
    EXPORT.set(export).is_ok()
}

/// The installed exporter, if any.
pub(crate) fn span_export() -> Option<&'static dyn SpanExport> {
    EXPORT.get().map(Box::as_ref)
}

/// Opens the exported side of `span`, the span of a call of `kind` on `ctx`: `ctx` then
/// carries the trace position the exporter gives the span (the framework's own when no
/// exporter is installed), and the span's log fields name it.
pub(crate) fn open_span(span: &tracing::Span, kind: SpanKind, ctx: &mut CallContext) {
    let trace = match span_export() {
        Some(export) if !span.is_disabled() => Some(export.start(
            span,
            &CallSpan {
                kind,
                service: ctx.service(),
                method: ctx.method(),
                trace: ctx.trace().copied(),
            },
        )),
        _ => ctx.trace().copied(),
    };
    if let Some(trace) = trace {
        trace.record_on(span);
        ctx.set_trace(Some(trace));
    }
}

/// Tells the exporter, if one is installed, that the call in the current span is being sent to
/// `address`.
pub(crate) fn note_peer(address: &str) {
    if let Some(export) = span_export() {
        export.peer(&tracing::Span::current(), address);
    }
}
