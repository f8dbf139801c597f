//! The strategy choices of the configuration, by the names the YAML uses. They are plain data
//! here, below the code that carries them out: the balancer kind selects one of
//! [`crate::balance`]'s balancers; the retry and tolerance choices are shortcuts that set how
//! the call path's retry, fail-over and fallback steps behave (see
//! [`MethodPolicy`](crate::fault::MethodPolicy)).

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

choice!(
    /// What a consumer does with a provider whose schema differs from its own in a way calls
    /// do not survive (`rpc.consumer.schema_check`; see [`crate::schema::compare`]).
    #[non_exhaustive]
    SchemaCheck {
        /// Log a warning once per provider schema, naming the methods and the differences.
        Warn = "warn",
        /// Warn, and send those methods' calls only to providers whose schema is compatible.
        Strict = "strict",
        /// Do not compare.
        Off = "off",
    }
);

choice!(
    /// How a consumer picks an instance (`rpc.consumer.load_balancer`): a shortcut for one of
    /// the built-in balancers. A consumer builder also takes balancers of the user's own.
    #[non_exhaustive]
    LoadBalancerKind {
        /// Each instance in turn.
        RoundRobin = "round_robin",
        /// Uniformly at random.
        Random = "random",
        /// At random, in proportion to instance weights.
        WeightedRandom = "weighted_random",
        /// By a hash of the call's key, on a ring of virtual nodes.
        ConsistentHash = "consistent_hash",
        /// The less busy of two random instances.
        P2c = "p2c",
    }
);
