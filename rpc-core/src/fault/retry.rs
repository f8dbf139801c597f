//! Retry delays and the classification of retryable errors.

use std::time::Duration;

use super::RetryStrategy;
use crate::backoff;
use crate::config::RetryConfig;
use crate::error::RpcError;

/// When and how often a failed call is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The strategy.
    pub strategy: RetryStrategy,
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub base_delay: Duration,
    /// Longest delay (caps exponential backoff).
    pub max_delay: Duration,
    /// Limit of each attempt within the call's deadline.
    pub attempt_timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::from(&RetryConfig::default())
    }
}

impl From<&RetryConfig> for RetryPolicy {
    fn from(c: &RetryConfig) -> Self {
        Self {
            strategy: c.strategy,
            max_attempts: c.max_attempts.max(1),
            base_delay: Duration::from_millis(c.base_delay_ms),
            max_delay: Duration::from_millis(c.max_delay_ms.max(c.base_delay_ms)),
            attempt_timeout: c.attempt_timeout_ms.map(Duration::from_millis),
        }
    }
}

impl RetryPolicy {
    /// Whether the strategy retries at all.
    pub fn retries(&self) -> bool {
        self.strategy != RetryStrategy::None && self.max_attempts > 1
    }

    /// The pause before attempt number `attempt + 1`, after `attempt` (1-based) failed.
    ///
    /// `none` waits nothing; `fixed_interval` waits `base_delay`; `exponential_backoff` waits
    /// [`backoff::jittered`]: `base_delay * 2^(attempt-1)`, capped at `max_delay`, drawn from
    /// its upper half.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        match self.strategy {
            RetryStrategy::None => Duration::ZERO,
            RetryStrategy::FixedInterval => self.base_delay,
            RetryStrategy::ExponentialBackoff => backoff::jittered(self.base_delay, self.max_delay, attempt),
        }
    }
}

/// Whether a failed attempt may be tried again: [`RpcError::is_retryable`], whose answer
/// comes from the error table ([`crate::error::Retry`]).
pub fn is_retryable<E>(error: &RpcError<E>, idempotent: bool) -> bool {
    error.is_retryable(idempotent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(strategy: RetryStrategy) -> RetryPolicy {
        RetryPolicy {
            strategy,
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
            attempt_timeout: None,
        }
    }

    #[test]
    fn delays_follow_the_strategy_and_the_cap() {
        assert_eq!(policy(RetryStrategy::None).delay_after(3), Duration::ZERO);
        assert_eq!(
            policy(RetryStrategy::FixedInterval).delay_after(1),
            Duration::from_millis(100)
        );
        assert_eq!(
            policy(RetryStrategy::FixedInterval).delay_after(4),
            Duration::from_millis(100)
        );
        let exp = policy(RetryStrategy::ExponentialBackoff);
        for _ in 0..200 {
            let d1 = exp.delay_after(1);
            assert!(
                d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100),
                "{d1:?}"
            );
            let d2 = exp.delay_after(2);
            assert!(
                d2 >= Duration::from_millis(100) && d2 <= Duration::from_millis(200),
                "{d2:?}"
            );
            let d9 = exp.delay_after(9);
            assert!(
                d9 >= Duration::from_millis(175) && d9 <= Duration::from_millis(350),
                "{d9:?}"
            );
        }
        assert!(!policy(RetryStrategy::None).retries());
        assert!(policy(RetryStrategy::FixedInterval).retries());
    }

    #[test]
    fn only_safe_errors_are_retried_for_non_idempotent_methods() {
        let connect: RpcError = RpcError::Connect {
            addr: "a".into(),
            source: std::io::Error::other("x"),
        };
        assert!(is_retryable(&connect, false));
        assert!(is_retryable(&RpcError::<()>::Overloaded, false));
        let unsent: RpcError = RpcError::ConnectionClosed {
            addr: "a".into(),
            reason: "r".into(),
            sent: false,
        };
        assert!(is_retryable(&unsent, false));
        let sent: RpcError = RpcError::ConnectionClosed {
            addr: "a".into(),
            reason: "r".into(),
            sent: true,
        };
        assert!(!is_retryable(&sent, false));
        assert!(is_retryable(&sent, true));
        assert!(!is_retryable(&RpcError::<()>::Timeout(Duration::ZERO), false));
        assert!(is_retryable(&RpcError::<()>::Timeout(Duration::ZERO), true));
        assert!(!is_retryable(&RpcError::Application(1u8), false));
        assert!(is_retryable(&RpcError::Application(1u8), true));
        assert!(!is_retryable(&RpcError::<()>::NoInstances("s".into()), true));
        assert!(!is_retryable(&RpcError::<()>::Decode("d".into()), true));
    }
}
