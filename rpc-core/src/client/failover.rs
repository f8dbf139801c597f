//! The fail-over step: one round of a call over the candidates the balancer yields.
//!
//! A failure that proves the call never ran (no connection, refused as overloaded or shutting
//! down, or the connection broke before the request was sent) moves on to the next candidate
//! at once whatever the policy: the call is safe to send anywhere, and this is what keeps a
//! rolling restart from failing calls under the default `fail_fast`. With fail-over on, any
//! failure that is retryable for the method moves on too. Each instance is tried at most once
//! per round, and every move takes a token of the service's retry budget; the last failure
//! ends the round. An instance whose circuit breaker refuses the attempt is passed over
//! without sending (see [`Candidates`]); when every one refuses, the call fails overloaded.
//! How many rounds a call gets is the retry step's business, so `tolerant: fail_over` with
//! `retry.strategy: none` tries every instance once and stops.

use std::future::Future;

use tracing::debug;

use super::route::{Candidates, Target};
use super::CallRequest;
use crate::error::RpcError;
use crate::fault::{is_retryable, RetryBudget};
use crate::metrics;
use crate::reply::Reply;

/// Runs one round: `attempt` on candidates until one succeeds, or the round must end.
pub async fn run<'r, T, F, Fut>(
    mut candidates: Candidates<'r>,
    call: &CallRequest<'_>,
    budget: &RetryBudget,
    mut attempt: F,
) -> Result<T, RpcError<Reply>>
where
    F: FnMut(&'r Target) -> Fut,
    Fut: Future<Output = Result<T, RpcError<Reply>>>,
{
    let policy = call.policy;
    let mut last_error = None;
    loop {
        let Some(target) = candidates.next() else {
            return Err(last_error.unwrap_or_else(|| candidates.none_left()));
        };
        let error = match attempt(target).await {
            Ok(reply) => return Ok(reply),
            Err(error) => error,
        };
        let moves_on = error.never_ran() || (policy.fail_over && is_retryable(&error, policy.idempotent));
        if !moves_on || candidates.exhausted() || !budget.try_withdraw(call.service) {
            return Err(error);
        }
        debug!(instance = %target.addr, tried = candidates.tried(), error = %error.kind(), "attempt failed; trying another instance");
        metrics::client_failover(call.service);
        last_error = Some(error);
    }
}
