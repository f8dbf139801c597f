//! The end of the channel's part of a call, shared by the paths with and without tower layers:
//! the call's span opened and its metadata finished (`traceparent`, limits), then the encoded
//! call handed to the fallback step and the invoker, in that span.

use bytes::Bytes;
use tracing::Instrument;

use super::{fallback, CallRequest, Invoker};
use crate::context::export::{self, CallEnd, SpanKind};
use crate::context::{CallContext, MetadataLimits, TRACEPARENT};
use crate::error::RpcError;
use crate::reply::Reply;
use crate::service::{LocalService, MethodDescriptor};

/// Starts the client's part of a call before it is encoded: opens its span (see
/// [`client_span`]), then seals its metadata: adds the `traceparent` of its trace (the span's)
/// and checks the limits. Returns the span to send the call in.
pub(super) fn start_call(
    ctx: &mut CallContext,
    limits: &MetadataLimits,
    method: &MethodDescriptor,
) -> Result<tracing::Span, RpcError> {
    let span = client_span(method, ctx);
    if let Some(trace) = ctx.trace().copied() {
        ctx.metadata_mut().insert_bytes(
            Bytes::from_static(TRACEPARENT.as_bytes()),
            Bytes::copy_from_slice(&trace.traceparent_bytes()),
        );
    }
    ctx.metadata().check(limits).map_err(|problem| {
        RpcError::InvalidMetadata(match ctx.trace() {
            Some(_) => format!("{problem} (counting the traceparent every call carries)"),
            None => problem.to_string(),
        })
    })?;
    Ok(span)
}

/// Sends an encoded call down the call path (fallback, then the invoker) in its `span`, and
/// tells the span exporter (if one is installed) how it ended.
pub(super) async fn deliver(
    invoker: &dyn Invoker,
    call: &CallRequest<'_>,
    method: &MethodDescriptor,
    local: Option<&LocalService>,
    span: tracing::Span,
) -> Result<Reply, RpcError> {
    let result = fallback::run(call, method, local, || invoker.invoke(call))
        .instrument(span.clone())
        .await;
    end_client_span(&span, &result);
    result
}

/// Tells the span exporter (if one is installed) how the call or stream opening in `span`
/// ended: an application error counts as ended well on the client (the call itself worked).
pub(super) fn end_client_span<T>(span: &tracing::Span, result: &Result<T, RpcError>) {
    let Some(export) = export::span_export() else {
        return;
    };
    let message;
    let end = match result {
        Ok(_) => CallEnd::Ok,
        Err(e) => {
            message = e.to_string();
            CallEnd::Failed {
                kind: e.kind().as_str(),
                message: &message,
            }
        }
    };
    export.end(span, end);
}

/// The span of one call (or stream) on the client. It continues the trace `ctx` names; when
/// spans are exported (see [`crate::context::export`]) the exporter gives it its position,
/// which `ctx` then carries in its `traceparent`.
fn client_span(method: &MethodDescriptor, ctx: &mut CallContext) -> tracing::Span {
    let span = tracing::info_span!(
        "rpc_client_call",
        service = method.service,
        method = method.name,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_span_id = tracing::field::Empty,
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
    );
    export::open_span(&span, SpanKind::Client, ctx);
    span
}
