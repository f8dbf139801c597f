//! A service's rules: what an operator sets at `{root}/config/{name}:{version}` to steer its
//! traffic without a redeploy. Every consumer watching the service applies the routing and
//! call fields live; every provider serving it applies the admission fields (`limits`,
//! `shedding`) live.
//!
//! ```json
//! {"disabled": ["10.0.0.5:9001"],                 // get no calls
//!  "weights": {"10.0.0.6:9001": 5},               // replace registered weights
//!  "timeout_ms": 800,                             // replace the consumer's timeout
//!  "load_balancer": "p2c",                        // replace the consumer's balancer
//!  "tags": {"canary": ["10.0.0.7:9001"]},        // a call with metadata `route-tag: canary`
//!                                                 // goes to this group (to all when it is
//!                                                 // empty or unhealthy)
//!  "hedging": {"enabled": true, "delay_ms": 20},  // changes the consumer's hedging of the
//!                                                 // service's idempotent methods
//!  "compression": {"enabled": true},             // changes the consumer's compression
//!  "methods": {"get_user": {"hedging": {"max_extra": 2}}},  // and of one method (hedging,
//!                                                 // compression)
//!  "limits": {"rate_per_sec": 500,                // providers: replace the service's
//!             "methods": {"get_user": {"max_concurrent": 32}}},  // rpc.server.limits entry
//!  "shedding": false}                             // providers: shed the service's calls
//!                                                 // or not, whatever rpc.server.shedding says
//! ```
//!
//! Every field is optional; unknown fields are refused. An invalid text (not JSON, an unknown
//! field, an address that is not `host:port`, a timeout of 0, an unknown balancer, more than
//! 64 KiB) is ignored with a warning naming the key and the problem, and the last valid rules
//! stay in force; deleting the key restores the configured behaviour.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use crate::balance::LoadBalancerKind;
use crate::compression::Compression;
use crate::config::{CompressionOverride, HedgingOverride, ServiceLimits};
use crate::fault::{HedgePolicy, MethodPolicy};
use crate::host::is_valid_host;
use crate::registry::MAX_RULES_TEXT;

/// The metadata key whose value names the tag group a call goes to.
pub const ROUTE_TAG: &str = "route-tag";

/// A service's validated routing rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRules {
    /// Instances (`host:port`) that get no calls.
    pub disabled: BTreeSet<String>,
    /// Weights that replace the registered ones, by instance.
    pub weights: BTreeMap<String, u32>,
    /// Replaces the consumer's timeout for the service.
    pub timeout: Option<Duration>,
    /// Replaces the consumer's balancer for the service.
    pub load_balancer: Option<LoadBalancerKind>,
    /// Named groups of instances, for calls that carry a `route-tag`.
    pub tags: BTreeMap<String, BTreeSet<String>>,
    /// Changes to the hedging of the service's methods.
    pub hedging: Option<HedgingOverride>,
    /// Changes to the compression of the service's calls.
    pub compression: Option<CompressionOverride>,
    /// Changes per method, by name.
    pub methods: BTreeMap<String, MethodRules>,
    /// Providers: the service's limits in place of its configured ones.
    pub limits: Option<ServiceLimits>,
    /// Providers: whether the service's calls go through load shedding.
    pub shedding: Option<bool>,
}

/// What a service's rules change for one method.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodRules {
    /// Changes to the method's hedging.
    pub hedging: Option<HedgingOverride>,
    /// Changes to the method's compression.
    pub compression: Option<CompressionOverride>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Text {
    #[serde(default)]
    disabled: Vec<String>,
    #[serde(default)]
    weights: BTreeMap<String, u32>,
    timeout_ms: Option<u64>,
    load_balancer: Option<LoadBalancerKind>,
    #[serde(default)]
    tags: BTreeMap<String, Vec<String>>,
    hedging: Option<HedgingOverride>,
    compression: Option<CompressionOverride>,
    #[serde(default)]
    methods: BTreeMap<String, MethodRules>,
    limits: Option<ServiceLimits>,
    shedding: Option<bool>,
}

impl ServiceRules {
    /// Parses and validates a rules text; the error names the field and the problem.
    pub fn parse(text: &str) -> Result<Self, InvalidRules> {
        if text.len() > MAX_RULES_TEXT {
            return Err(InvalidRules::TooLarge(text.len()));
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let parsed: Text = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            InvalidRules::Json {
                field: (path != ".").then_some(path),
                source: e.into_inner(),
            }
        })?;
        let check = |field: &str, address: &str| match address.rsplit_once(':') {
            Some((host, port)) if is_valid_host(host) && port.parse::<u16>().is_ok_and(|p| p > 0) => Ok(()),
            _ => Err(InvalidRules::Field {
                field: field.to_owned(),
                problem: format!("{address:?} is not host:port"),
            }),
        };
        for a in &parsed.disabled {
            check("disabled", a)?;
        }
        for a in parsed.weights.keys() {
            check("weights", a)?;
        }
        for (tag, members) in &parsed.tags {
            if tag.is_empty() {
                return Err(InvalidRules::Field {
                    field: "tags".to_owned(),
                    problem: "a tag needs a name".to_owned(),
                });
            }
            for a in members {
                check(&format!("tags.{tag}"), a)?;
            }
        }
        if let Some((field, problem)) = parsed.limits.as_ref().and_then(ServiceLimits::invalid_field) {
            return Err(InvalidRules::Field {
                field: format!("limits{field}"),
                problem: problem.to_owned(),
            });
        }
        if parsed.timeout_ms == Some(0) {
            return Err(InvalidRules::Field {
                field: "timeout_ms".to_owned(),
                problem: "must be at least 1".to_owned(),
            });
        }
        Ok(Self {
            disabled: parsed.disabled.into_iter().collect(),
            weights: parsed.weights,
            timeout: parsed.timeout_ms.map(Duration::from_millis),
            load_balancer: parsed.load_balancer,
            tags: parsed
                .tags
                .into_iter()
                .map(|(tag, members)| (tag, members.into_iter().collect()))
                .collect(),
            hedging: parsed.hedging,
            compression: parsed.compression,
            methods: parsed.methods,
            limits: parsed.limits,
            shedding: parsed.shedding,
        })
    }

    /// Whether the rules change how instances are picked (more than timeout and balancer).
    pub fn shapes_routing(&self) -> bool {
        !self.disabled.is_empty() || !self.weights.is_empty() || !self.tags.is_empty()
    }
}

/// A rules text that cannot be used; the message names the field and the problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRules {
    /// The text is over the size limit (its length).
    #[error("{0} bytes exceed the limit of {MAX_RULES_TEXT}")]
    TooLarge(usize),
    /// The text is not the rules' JSON; `field` is where it went wrong, when inside one.
    #[error("{}{source}", field.as_deref().map(|f| format!("{f}: ")).unwrap_or_default())]
    Json {
        /// The path of the field that failed.
        field: Option<String>,
        /// What the JSON parser said.
        #[source]
        source: serde_json::Error,
    },
    /// A field whose value is not allowed.
    #[error("{field}: {problem}")]
    Field {
        /// The field.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl ServiceRules {
    /// Whether the rules change anything in a call's policy (timeout, balancer, hedging,
    /// compression).
    pub fn changes_policy(&self) -> bool {
        self.timeout.is_some()
            || self.load_balancer.is_some()
            || self.hedging.is_some()
            || self.compression.is_some()
            || !self.methods.is_empty()
    }

    /// `policy` as these rules change it for `method`: their timeout, balancer, and the
    /// hedging (still only for idempotent methods) and compression of the service then of
    /// the method.
    pub fn apply(&self, method: &str, policy: &MethodPolicy) -> MethodPolicy {
        let method_rules = self.methods.get(method);
        let method_compression = method_rules.and_then(|m| m.compression.as_ref());
        let compression = match (self.compression.as_ref(), method_compression) {
            (None, None) => policy.compression,
            (service, method) => {
                Compression::of(&Compression::config(policy.compression).merged(service).merged(method))
            }
        };
        let for_method = method_rules.and_then(|m| m.hedging.as_ref());
        let hedge = match (self.hedging.as_ref(), for_method) {
            (None, None) => policy.hedge,
            (service, method) => HedgePolicy::of(
                &HedgePolicy::config(policy.hedge).merged(service).merged(method),
                policy.idempotent,
            ),
        };
        MethodPolicy {
            timeout: self.timeout.unwrap_or(policy.timeout),
            load_balancer: self.load_balancer.unwrap_or(policy.load_balancer),
            hedge,
            compression,
            ..policy.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_format_parses() {
        let rules = ServiceRules::parse(
            r#"{"disabled": ["10.0.0.5:9001"], "weights": {"10.0.0.6:9001": 5}, "timeout_ms": 800,
                "load_balancer": "p2c", "tags": {"canary": ["10.0.0.7:9001"]}}"#,
        )
        .unwrap();
        assert!(rules.disabled.contains("10.0.0.5:9001"));
        assert_eq!(rules.weights["10.0.0.6:9001"], 5);
        assert_eq!(rules.timeout, Some(Duration::from_millis(800)));
        assert_eq!(rules.load_balancer, Some(LoadBalancerKind::P2c));
        assert!(rules.tags["canary"].contains("10.0.0.7:9001"));
        assert!(rules.shapes_routing());
        assert_eq!(ServiceRules::parse("{}").unwrap(), ServiceRules::default());
        assert!(!ServiceRules::default().shapes_routing());
    }

    #[test]
    fn hedging_rules_change_idempotent_methods_only_and_per_method_wins() {
        let rules = ServiceRules::parse(
            r#"{"hedging": {"enabled": true, "delay_ms": 20}, "methods": {"find": {"hedging": {"max_extra": 2}}, "scan": {"hedging": {"enabled": false}}}}"#,
        )
        .unwrap();
        assert!(rules.changes_policy() && !rules.shapes_routing());
        let idempotent = MethodPolicy {
            idempotent: true,
            ..MethodPolicy::default()
        };
        assert_eq!(idempotent.hedge, None, "off in the configuration");
        let find = rules.apply("find", &idempotent).hedge.unwrap();
        assert_eq!((find.delay, find.max_extra), (Some(Duration::from_millis(20)), 2));
        let other = rules.apply("get", &idempotent).hedge.unwrap();
        assert_eq!(other.max_extra, 1);
        assert_eq!(rules.apply("scan", &idempotent).hedge, None);
        assert_eq!(
            rules.apply("find", &MethodPolicy::default()).hedge,
            None,
            "not idempotent"
        );
        let unknown = ServiceRules::parse(r#"{"methods": {"find": {"hedge": {}}}}"#).unwrap_err();
        assert!(unknown.to_string().contains("methods.find"), "{unknown}");
    }

    #[test]
    fn compression_rules_change_the_service_and_a_method() {
        let rules = ServiceRules::parse(
            r#"{"compression": {"enabled": true, "min_bytes": 4096}, "methods": {"ping": {"compression": {"enabled": false}}}}"#,
        )
        .unwrap();
        assert!(rules.changes_policy());
        let policy = MethodPolicy::default();
        assert_eq!(policy.compression, None, "off in the configuration");
        let on = rules.apply("get", &policy).compression.unwrap();
        assert_eq!((on.min_bytes, on.level), (4096, 1));
        assert_eq!(rules.apply("ping", &policy).compression, None);
    }

    #[test]
    fn invalid_rules_name_the_problem() {
        let cases = [
            ("not json", "expected"),
            (r#"{"disabled": "10.0.0.5:9001"}"#, "disabled"),
            (r#"{"disabled": ["nohost"]}"#, r#"disabled: "nohost" is not host:port"#),
            (r#"{"weights": {"h:0": 1}}"#, "weights"),
            (r#"{"timeout_ms": 0}"#, "timeout_ms: must be at least 1"),
            (r#"{"load_balancer": "fastest"}"#, "load_balancer"),
            (r#"{"tags": {"canary": ["bad host!:1"]}}"#, "tags.canary"),
            (r#"{"disable": []}"#, "unknown field `disable`"),
            (
                r#"{"limits": {"methods": {"find": {"max_concurrent": 0}}}}"#,
                "limits.methods.find.max_concurrent: must be at least 1",
            ),
            (r#"{"shedding": "yes"}"#, "shedding"),
        ];
        for (text, needle) in cases {
            let e = ServiceRules::parse(text).unwrap_err();
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
        let huge = format!(r#"{{"disabled": ["{}"]}}"#, "a".repeat(MAX_RULES_TEXT));
        assert!(ServiceRules::parse(&huge).unwrap_err().to_string().contains("exceed"));
    }
}
