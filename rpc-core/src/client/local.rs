//! Calling a local implementation in place of the network: the fallback of `fail_back` and the
//! only implementation in `mock` mode.
//!
//! The local implementation is the same service trait wrapped in its generated server adapter,
//! so the call goes through the very encoding and dispatch a remote call would: what a fallback
//! returns is exactly what a provider would have returned. It runs under the call's deadline
//! and a panic in it fails that call only.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

use super::CallRequest;
use crate::error::RpcError;
use crate::protocol::{RequestBody, Status};
use crate::reply::Reply;
use crate::server::Service;

/// Runs the call on `service` in this process.
pub(crate) async fn call_local(service: &dyn Service, call: &CallRequest<'_>) -> Result<Reply, RpcError> {
    let request = RequestBody::parse(call.body.clone())?;
    let run = AssertUnwindSafe(service.call(call.method, call.serializer, request.args)).catch_unwind();
    let started = tokio::time::Instant::now();
    let reply = match tokio::time::timeout_at(call.deadline, run).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(_)) => return Err(RpcError::Remote("local implementation panicked".to_owned())),
        Err(_) => return Err(RpcError::Timeout(started.elapsed())),
    };
    match reply.status {
        Status::Ok | Status::ApplicationError => Ok(reply),
        _ => Err(reply.into_error(call.service, call.method)),
    }
}
