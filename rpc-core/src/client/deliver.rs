//! The end of the channel's part of a call, shared by the paths with and without tower layers:
//! the request's metadata finished (`traceparent`, limits), then the encoded call handed to
//! the fallback step and the invoker, in the call's span.

use bytes::Bytes;
use tracing::Instrument;

use super::{fallback, CallRequest, Invoker};
use crate::context::{CallContext, MetadataLimits, TRACEPARENT};
use crate::error::RpcError;
use crate::reply::Reply;
use crate::service::{LocalService, MethodDescriptor};

/// Finishes a call's metadata before it is encoded: adds the `traceparent` of its trace and
/// checks the limits.
pub(super) fn seal_metadata(ctx: &mut CallContext, limits: &MetadataLimits) -> Result<(), RpcError> {
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
    })
}

/// Sends an encoded call down the call path (fallback, then the invoker), in the call's span.
pub(super) async fn deliver(
    invoker: &dyn Invoker,
    call: &CallRequest<'_>,
    method: &MethodDescriptor,
    local: Option<&LocalService>,
    ctx: &CallContext,
) -> Result<Reply, RpcError> {
    fallback::run(call, method, local, || invoker.invoke(call))
        .instrument(client_span(method, ctx))
        .await
}

/// The span of one call (or stream) on the client, carrying its trace.
pub(super) fn client_span(method: &MethodDescriptor, ctx: &CallContext) -> tracing::Span {
    let span = tracing::info_span!(
        "rpc_client_call",
        service = method.service,
        method = method.name,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_span_id = tracing::field::Empty,
    );
    if let Some(trace) = ctx.trace() {
        trace.record_on(&span);
    }
    span
}
