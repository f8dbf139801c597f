//! The fallback step: what answers a call when the network did not (or is not asked).
//!
//! * [`Fallback::Mock`]: only the local implementation, never the network.
//! * [`Fallback::Local`] (`fail_back`): the network, then the local implementation if the call
//!   failed.
//! * [`Fallback::DefaultValue`] (`fail_safe`): the network, then the method's default value
//!   (encoded as the reply a provider would have sent) if the call failed.
//!
//! The local implementation is the same service trait wrapped in its generated server
//! adapter, so the call goes through the very encoding and dispatch a remote call would: what
//! a fallback returns is exactly what a provider would have returned. It runs under the call's
//! deadline and a panic in it fails that call only.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use tracing::warn;

use super::CallRequest;
use crate::context::MetadataLimits;
use crate::error::RpcError;
use crate::fault::Fallback;
use crate::protocol::{RequestBody, Status};
use crate::reply::Reply;
use crate::service::{LocalService, MethodDescriptor, Service};

/// Runs the call through `remote`, then the policy's fallback.
pub async fn run<Fut>(
    call: &CallRequest<'_>,
    method: &MethodDescriptor,
    local: Option<&LocalService>,
    remote: impl FnOnce() -> Fut,
) -> Result<Reply, RpcError>
where
    Fut: Future<Output = Result<Reply, RpcError>>,
{
    match call.policy.fallback {
        Fallback::Mock => call_local(need_local(local, call, "mock")?.as_ref(), call).await,
        Fallback::Local => match remote().await {
            Err(e) => {
                let local = need_local(local, call, "fail_back")?;
                warn!(service = call.service, method = call.method, error = %e, "call failed; answering from the local implementation");
                call_local(local.as_ref(), call).await
            }
            ok => ok,
        },
        Fallback::DefaultValue => match remote().await {
            Err(e) => match (method.default_reply)(call.serializer) {
                Some(reply) => {
                    warn!(service = call.service, method = call.method, error = %e, "call failed; fail_safe returns the default value");
                    Ok(reply)
                }
                None => Err(e),
            },
            ok => ok,
        },
        _ => remote().await,
    }
}

fn need_local<'l>(
    local: Option<&'l LocalService>,
    call: &CallRequest<'_>,
    mode: &str,
) -> Result<&'l LocalService, RpcError> {
    local.ok_or_else(|| {
        RpcError::internal(format!(
            "{} is configured for {mode} but the client has no local implementation",
            call.service
        ))
    })
}

/// Runs the call on `service` in this process.
pub(crate) async fn call_local(service: &dyn Service, call: &CallRequest<'_>) -> Result<Reply, RpcError> {
    // The body was encoded by this process within its own limits.
    let limits = MetadataLimits {
        max_entries: usize::MAX,
        max_bytes: usize::MAX,
    };
    let request = RequestBody::parse(call.body.clone(), &limits)?;
    let run = AssertUnwindSafe(service.call(call.method, call.serializer, request.args)).catch_unwind();
    let started = tokio::time::Instant::now();
    let reply = match tokio::time::timeout_at(call.deadline, run).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(_)) => return Err(RpcError::internal("local implementation panicked")),
        Err(_) => return Err(RpcError::Timeout(started.elapsed())),
    };
    match reply.status {
        Status::Ok | Status::ApplicationError => Ok(reply),
        _ => Err(reply.into_error(call.service, call.method)),
    }
}
