//! The policy a call runs under, resolved from the configuration.

use std::time::Duration;

use crate::config::{ConsumerConfig, LoadBalancerKind, MethodOverride, ServiceOverride, TolerantKind};

use super::RetryPolicy;

/// Everything that governs one method's calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodPolicy {
    /// Deadline of a call, retries included.
    pub timeout: Duration,
    /// Retries.
    pub retry: RetryPolicy,
    /// What happens when the call still fails.
    pub tolerant: TolerantKind,
    /// How the instance is picked (a per-service setting).
    pub load_balancer: LoadBalancerKind,
    /// Call only the local implementation.
    pub mock: bool,
    /// The method is marked `#[idempotent]`: timeouts and application errors may be retried.
    pub idempotent: bool,
}

impl Default for MethodPolicy {
    fn default() -> Self {
        PolicySet::default().resolve("", "", false)
    }
}

/// The consumer configuration, ready to resolve per method.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    config: ConsumerConfig,
}

impl PolicySet {
    /// Policies from the `rpc.consumer` section.
    pub fn new(config: ConsumerConfig) -> Self {
        Self { config }
    }

    /// The consumer configuration.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// The policy of `service_key`'s `method`: the method's override, else the service's, else
    /// the global setting, field by field. A service override keyed by name alone applies to
    /// every version; keys and method names compare case-insensitively.
    pub fn resolve(&self, service_key: &str, method: &str, idempotent: bool) -> MethodPolicy {
        let c = &self.config;
        let service = self.service_override(service_key);
        let method_override: Option<&MethodOverride> = service.and_then(|s| {
            s.methods
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(method))
                .map(|(_, o)| o)
        });
        let pick = |m: Option<u64>, s: Option<u64>, g: u64| m.or(s).unwrap_or(g);
        let timeout_ms = pick(
            method_override.and_then(|m| m.timeout_ms),
            service.and_then(|s| s.timeout_ms),
            c.timeout_ms,
        );
        let retry = c
            .retry
            .merged(service.and_then(|s| s.retry.as_ref()))
            .merged(method_override.and_then(|m| m.retry.as_ref()));
        MethodPolicy {
            timeout: Duration::from_millis(timeout_ms),
            retry: RetryPolicy::from(&retry),
            tolerant: method_override
                .and_then(|m| m.tolerant)
                .or_else(|| service.and_then(|s| s.tolerant))
                .unwrap_or(c.tolerant),
            load_balancer: service.and_then(|s| s.load_balancer).unwrap_or(c.load_balancer),
            mock: method_override
                .and_then(|m| m.mock)
                .or_else(|| service.and_then(|s| s.mock))
                .unwrap_or(c.mock),
            idempotent,
        }
    }

    fn service_override(&self, service_key: &str) -> Option<&ServiceOverride> {
        let name = service_key.split_once(':').map_or(service_key, |(n, _)| n);
        let services = &self.config.services;
        services
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(service_key))
            .or_else(|| services.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
            .map(|(_, o)| o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RetryStrategy, RpcConfig};

    #[test]
    fn method_beats_service_beats_global() {
        let config = RpcConfig::from_yaml(
            r#"
rpc:
  consumer:
    timeout_ms: 1000
    tolerant: fail_fast
    retry: { strategy: fixed_interval, max_attempts: 2, base_delay_ms: 10 }
    services:
      "UserService:1.0":
        timeout_ms: 500
        load_balancer: p2c
        tolerant: fail_over
        retry: { max_attempts: 4 }
        methods:
          get_user: { timeout_ms: 200, tolerant: fail_safe, retry: { strategy: exponential_backoff } }
      Billing:
        mock: true
"#,
        )
        .unwrap();
        let set = PolicySet::new(config.consumer);
        let get_user = set.resolve("UserService:1.0", "get_user", true);
        assert_eq!(get_user.timeout, Duration::from_millis(200));
        assert_eq!(get_user.tolerant, TolerantKind::FailSafe);
        assert_eq!(get_user.retry.strategy, RetryStrategy::ExponentialBackoff);
        assert_eq!(get_user.retry.max_attempts, 4, "inherited from the service");
        assert_eq!(
            get_user.retry.base_delay,
            Duration::from_millis(10),
            "inherited from global"
        );
        assert_eq!(get_user.load_balancer, LoadBalancerKind::P2c);
        assert!(get_user.idempotent);

        let whoami = set.resolve("userservice:1.0", "whoami", false);
        assert_eq!(whoami.timeout, Duration::from_millis(500));
        assert_eq!(whoami.tolerant, TolerantKind::FailOver);
        assert_eq!(whoami.retry.strategy, RetryStrategy::FixedInterval);

        let other_version = set.resolve("UserService:2.0", "get_user", false);
        assert_eq!(other_version.timeout, Duration::from_millis(1000));
        assert_eq!(other_version.load_balancer, LoadBalancerKind::RoundRobin);

        assert!(
            set.resolve("Billing:3.1", "charge", false).mock,
            "a name-only key covers every version"
        );
        assert!(!set.resolve("Other:1.0", "x", false).mock);
    }
}
