//! The fail-over step: one round of a call over the candidates the balancer yields.
//!
//! Without fail-over a round is one attempt on the balancer's pick. With it, a failure that is
//! retryable for the method moves on to the next candidate at once (no pause), each instance
//! at most once per round, until an attempt succeeds or no candidate is left; the last
//! failure ends the round. How many rounds a call gets is the retry step's business, so
//! `tolerant: fail_over` with `retry.strategy: none` tries every instance once and stops.

use std::future::Future;

use tracing::debug;

use super::route::{Candidates, Target};
use crate::error::RpcError;
use crate::fault::is_retryable;
use crate::reply::Reply;

/// Runs one round: `attempt` on candidates until one succeeds, or the round must end.
pub async fn run<'r, F, Fut>(
    mut candidates: Candidates<'r>,
    fail_over: bool,
    idempotent: bool,
    mut attempt: F,
) -> Result<Reply, RpcError<Reply>>
where
    F: FnMut(&'r Target) -> Fut,
    Fut: Future<Output = Result<Reply, RpcError<Reply>>>,
{
    loop {
        let Some(target) = candidates.next() else {
            return Err(RpcError::NoInstances("no instance to try".to_owned()));
        };
        let error = match attempt(target).await {
            Ok(reply) => return Ok(reply),
            Err(error) => error,
        };
        if !fail_over || candidates.exhausted() || !is_retryable(&error, idempotent) {
            return Err(error);
        }
        debug!(instance = %target.addr, tried = candidates.tried(), error = %error.kind(), "attempt failed; failing over");
    }
}
