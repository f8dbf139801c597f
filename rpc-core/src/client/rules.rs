//! Routing rules: what an operator sets at `{root}/config/{name}:{version}` to steer a
//! service's traffic without a redeploy, and every consumer applies live.
//!
//! ```json
//! {"disabled": ["10.0.0.5:9001"],                 // get no calls
//!  "weights": {"10.0.0.6:9001": 5},               // replace registered weights
//!  "timeout_ms": 800,                             // replace the consumer's timeout
//!  "load_balancer": "p2c",                        // replace the consumer's balancer
//!  "tags": {"canary": ["10.0.0.7:9001"]}}         // a call with metadata `route-tag: canary`
//!                                                 // goes to this group (to all when it is
//!                                                 // empty or unhealthy)
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

/// What the rules of a service override in a call's policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    /// The service's timeout.
    pub timeout: Option<Duration>,
    /// The service's balancer.
    pub load_balancer: Option<LoadBalancerKind>,
}

impl From<&ServiceRules> for Overrides {
    fn from(rules: &ServiceRules) -> Self {
        Self {
            timeout: rules.timeout,
            load_balancer: rules.load_balancer,
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
        ];
        for (text, needle) in cases {
            let e = ServiceRules::parse(text).unwrap_err();
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
        let huge = format!(r#"{{"disabled": ["{}"]}}"#, "a".repeat(MAX_RULES_TEXT));
        assert!(ServiceRules::parse(&huge).unwrap_err().to_string().contains("exceed"));
    }
}
