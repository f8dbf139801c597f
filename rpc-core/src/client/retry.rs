//! The retry step: runs rounds of the fail-over step until one succeeds or the call must end.
//!
//! A failed round is tried again only if the error is retryable for the method (see
//! [`is_retryable`]), the policy retries (a strategy other than `none`), attempts remain
//! (`retry.max_attempts` rounds in all), the pause before the next round still ends before
//! the call's deadline, and the service's retry budget has a token. An application error is a
//! result, not a failure: it is returned as the reply, unless the method is idempotent and
//! attempts remain.

use std::future::Future;

use tokio::time::Instant;
use tracing::debug;

use super::CallRequest;
use crate::error::RpcError;
use crate::fault::{is_retryable, RetryBudget};
use crate::metrics;
use crate::reply::Reply;

/// Runs `round` (given the 1-based round number) under the call's policy until the call ends.
///
/// A round fails with `RpcError::Application(reply)` for an application error, so that the
/// retry decision can see it; the step returns such a reply as `Ok`.
pub async fn run<T, F, Fut>(call: &CallRequest<'_>, budget: &RetryBudget, mut round: F) -> Result<T, RpcError>
where
    T: FromApplication,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, RpcError<Reply>>>,
{
    let (policy, deadline) = (call.policy, call.deadline);
    let retrying = policy.retry.retries();
    let max_rounds = policy.retry.max_attempts.max(1);
    let mut n = 0u32;
    loop {
        n += 1;
        let error = match round(n).await {
            Ok(reply) => return Ok(reply),
            Err(error) => error,
        };
        let delay = policy.retry.delay_after(n);
        let last = !retrying || n >= max_rounds || !is_retryable(&error, policy.idempotent);
        if last || Instant::now() + delay >= deadline || !budget.try_withdraw(call.service) {
            return match error {
                RpcError::Application(reply) => T::from_application(reply),
                other => Err(other.without_application()),
            };
        }
        debug!(round = n, error = %error.kind(), ?delay, "call failed; retrying");
        metrics::client_retry(call.service);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

/// What a successful round answers, and what an application error becomes in its place.
pub trait FromApplication: Sized {
    /// The answer for the method's own error `reply`.
    fn from_application(reply: Reply) -> Result<Self, RpcError>;
}

impl FromApplication for Reply {
    fn from_application(reply: Reply) -> Result<Self, RpcError> {
        Ok(reply)
    }
}

impl FromApplication for crate::stream::RawStream {
    /// A stream is refused with framework statuses only; an application error ends it.
    fn from_application(_: Reply) -> Result<Self, RpcError> {
        Err(RpcError::Decode(
            "an application error answered a stream's opening".to_owned(),
        ))
    }
}
