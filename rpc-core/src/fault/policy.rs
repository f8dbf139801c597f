//! The policy a call runs under, resolved from the configuration.
//!
//! A [`MethodPolicy`] describes each step of the call path on its own terms: the deadline, the
//! retry step, whether the fail-over step walks on to other instances, and which fallback
//! step (if any) answers when the network could not. The configuration's `tolerant` and
//! `mock` settings are shortcuts that set these fields:
//!
//! | configuration | fail-over | fallback |
//! |---|---|---|
//! | `tolerant: fail_fast` | off | none |
//! | `tolerant: fail_over` | on | none |
//! | `tolerant: fail_safe` | off | the method's default value |
//! | `tolerant: fail_back` | off | the local implementation |
//! | `mock: true` | (no network) | the local implementation only |
//!
//! Retries are independent of fail-over: `retry.strategy: none` never waits and tries again,
//! whatever `tolerant` says.

use std::time::Duration;

use super::{RetryPolicy, TolerantKind};
use crate::balance::LoadBalancerKind;
use crate::compression::Compression;
use crate::config::{ConsumerConfig, HedgingConfig, MethodOverride, ServiceOverride};

/// What answers a call when the network did not (or is not asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fallback {
    /// Nothing: the error reaches the caller (`fail_fast`, `fail_over`).
    None,
    /// The method's default value (`fail_safe`); the method's result type must implement
    /// `Default`.
    DefaultValue,
    /// The client's local implementation (`fail_back`).
    Local,
    /// Only the local implementation, never the network (`mock: true`).
    Mock,
}

/// Everything that governs one method's calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodPolicy {
    /// Deadline of a call, retries included.
    pub timeout: Duration,
    /// The retry step: how often a failed attempt is tried again, and after what pause.
    pub retry: RetryPolicy,
    /// The fail-over step: after a failed attempt, try each other instance once (no pause)
    /// before the retry step decides.
    pub fail_over: bool,
    /// The fallback step.
    pub fallback: Fallback,
    /// How the instance is picked (a per-service setting).
    pub load_balancer: LoadBalancerKind,
    /// The method is marked `#[idempotent]`: timeouts and application errors may be retried.
    pub idempotent: bool,
    /// Hedging, for an `#[idempotent]` method when it is on.
    pub hedge: Option<HedgePolicy>,
    /// How requests are compressed (and whether compressed responses are asked for); none:
    /// off.
    pub compression: Option<Compression>,
}

/// When a call is hedged: a further attempt to another instance once the running ones have
/// taken `delay` (none: the service's recent latency decides), at most `max_extra` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HedgePolicy {
    /// How long before the next attempt; `None`: adaptive (see `rpc.consumer.hedging`).
    pub delay: Option<Duration>,
    /// Extra attempts at most.
    pub max_extra: u32,
}

impl HedgePolicy {
    /// The hedging of a method under `config`: none unless it is on, allows an extra attempt
    /// and the method is `idempotent`.
    pub fn of(config: &HedgingConfig, idempotent: bool) -> Option<Self> {
        (idempotent && config.enabled && config.max_extra > 0).then(|| Self {
            delay: (config.delay_ms > 0).then(|| Duration::from_millis(config.delay_ms)),
            max_extra: config.max_extra,
        })
    }

    /// The configuration a resolved hedging (or none) stands for, for further changes.
    pub fn config(hedge: Option<Self>) -> HedgingConfig {
        match hedge {
            None => HedgingConfig::default(),
            Some(h) => HedgingConfig {
                enabled: true,
                delay_ms: h.delay.map_or(0, |d| d.as_millis() as u64),
                max_extra: h.max_extra,
            },
        }
    }
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
        let tolerant = method_override
            .and_then(|m| m.tolerant)
            .or_else(|| service.and_then(|s| s.tolerant))
            .unwrap_or(c.tolerant);
        let mock = method_override
            .and_then(|m| m.mock)
            .or_else(|| service.and_then(|s| s.mock))
            .unwrap_or(c.mock);
        let fallback = match tolerant {
            _ if mock => Fallback::Mock,
            TolerantKind::FailSafe => Fallback::DefaultValue,
            TolerantKind::FailBack => Fallback::Local,
            _ => Fallback::None,
        };
        MethodPolicy {
            timeout: Duration::from_millis(timeout_ms),
            retry: RetryPolicy::from(&retry),
            fail_over: tolerant == TolerantKind::FailOver,
            fallback,
            load_balancer: service.and_then(|s| s.load_balancer).unwrap_or(c.load_balancer),
            idempotent,
            hedge: HedgePolicy::of(
                &c.hedging
                    .merged(service.and_then(|s| s.hedging.as_ref()))
                    .merged(method_override.and_then(|m| m.hedging.as_ref())),
                idempotent,
            ),
            compression: Compression::of(
                &c.compression
                    .merged(service.and_then(|s| s.compression.as_ref()))
                    .merged(method_override.and_then(|m| m.compression.as_ref())),
            ),
        }
    }

    /// The method overrides configured for `service_key` that name none of `methods`
    /// (compared case-insensitively): each is a typo that would silently do nothing.
    pub fn unknown_methods(&self, service_key: &str, methods: &[&str]) -> Vec<String> {
        self.service_override(service_key)
            .map(|s| {
                s.methods
                    .keys()
                    .filter(|name| !methods.iter().any(|m| m.eq_ignore_ascii_case(name)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
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
    use crate::config::RetryStrategy;
    use crate::config::RpcConfig;

    #[test]
    fn hedging_is_set_per_service_and_per_method() {
        let config = RpcConfig::from_yaml(
            r#"
rpc:
  consumer:
    hedging: { enabled: false, delay_ms: 30 }
    services:
      "Lookup:1.0":
        hedging: { enabled: true }
        methods:
          scan: { hedging: { enabled: false } }
          find: { hedging: { max_extra: 2 } }
"#,
        )
        .unwrap();
        let set = PolicySet::new(config.consumer);
        let find = set.resolve("Lookup:1.0", "find", true).hedge.unwrap();
        assert_eq!((find.delay, find.max_extra), (Some(Duration::from_millis(30)), 2));
        assert_eq!(set.resolve("Lookup:1.0", "get", true).hedge.unwrap().max_extra, 1);
        assert_eq!(set.resolve("Lookup:1.0", "scan", true).hedge, None);
        assert_eq!(set.resolve("Lookup:1.0", "find", false).hedge, None, "not idempotent");
        assert_eq!(set.resolve("Other:1.0", "find", true).hedge, None, "off globally");
    }

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
        assert_eq!(get_user.fallback, Fallback::DefaultValue);
        assert!(!get_user.fail_over);
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
        assert!(whoami.fail_over);
        assert_eq!(whoami.fallback, Fallback::None);
        assert_eq!(whoami.retry.strategy, RetryStrategy::FixedInterval);

        let other_version = set.resolve("UserService:2.0", "get_user", false);
        assert_eq!(other_version.timeout, Duration::from_millis(1000));
        assert_eq!(other_version.load_balancer, LoadBalancerKind::RoundRobin);

        assert_eq!(
            set.resolve("Billing:3.1", "charge", false).fallback,
            Fallback::Mock,
            "a name-only key covers every version"
        );
        assert_eq!(set.resolve("Other:1.0", "x", false).fallback, Fallback::None);
        assert!(!set.resolve("Other:1.0", "x", false).fail_over);
    }
}
