//! The fault-tolerance choices of the configuration. They are shortcuts: each selects how the
//! call path's retry, fail-over and fallback steps behave (see [`MethodPolicy`](super::MethodPolicy)).

use crate::choice::choice;

choice!(
    /// When a failed call is tried again (`retry.strategy`).
    #[non_exhaustive]
    RetryStrategy {
        /// Never.
        None = "none",
        /// After the same delay each time.
        FixedInterval = "fixed_interval",
        /// After exponentially growing, jittered delays.
        ExponentialBackoff = "exponential_backoff",
    }
);

choice!(
    /// What happens when a call fails (`tolerant`).
    #[non_exhaustive]
    TolerantKind {
        /// The error reaches the caller.
        FailFast = "fail_fast",
        /// Log and return the method's default value.
        FailSafe = "fail_safe",
        /// Try the other instances, each once, before giving up.
        FailOver = "fail_over",
        /// Call a local fallback implementation.
        FailBack = "fail_back",
    }
);
