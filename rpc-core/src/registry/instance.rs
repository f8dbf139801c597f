//! The registered instance and its place in the registry's key space.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::host::is_valid_host;

/// Default weight of an instance.
pub const DEFAULT_WEIGHT: u32 = 1;
/// The metadata key an instance registers its zone under.
pub const ZONE: &str = "zone";
/// The metadata key an instance registers its warm-up (in seconds) under.
pub const WARMUP_SECS: &str = "warmup_secs";

/// One provider of one service, as stored in the registry.
///
/// Serialized as JSON:
/// `{"name":"UserService","version":"1.0","host":"127.0.0.1","port":9001,"weight":1,"metadata":{},"registered_at_ms":1763700000000}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceInstance {
    /// Service name.
    pub name: String,
    /// Service version.
    pub version: String,
    /// Host callers connect to.
    pub host: String,
    /// Port callers connect to.
    pub port: u16,
    /// Relative share of traffic for weighted balancers.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Free-form labels.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// When the instance registered, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub registered_at_ms: u64,
}

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

impl ServiceInstance {
    /// An instance of `name:version` at `host:port`, weight 1, registered now.
    pub fn new(name: impl Into<String>, version: impl Into<String>, host: impl Into<String>, port: u16) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            host: host.into(),
            port,
            weight: DEFAULT_WEIGHT,
            metadata: BTreeMap::new(),
            registered_at_ms: now_ms(),
        }
    }

    /// The service key, `name:version`.
    pub fn service_key(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }

    /// The address callers dial, `host:port`; also the instance's node name in the registry.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The instance's registry path under `root`: `{root}/{name}:{version}/{host}:{port}`.
    pub fn path(&self, root: &str) -> String {
        format!("{}/{}", service_path(root, &self.service_key()), self.address())
    }

    /// The JSON stored as the node's value.
    pub fn to_json(&self) -> String {
        // Serializing a struct of strings, integers and a string map cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a node's value, checking that it belongs under `service_key` at `address` and
    /// can be dialed (see [`ServiceInstance::validate`]). Registry values are untrusted input:
    /// one over [`MAX_INSTANCE_JSON`] bytes is refused before it is parsed.
    pub fn from_json(bytes: &[u8], service_key: &str, address: &str) -> Result<Self, String> {
        if bytes.len() > MAX_INSTANCE_JSON {
            return Err(format!(
                "{} bytes of JSON exceed the limit of {MAX_INSTANCE_JSON}",
                bytes.len()
            ));
        }
        let instance: Self = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        instance.validate(service_key)?;
        if instance.address() != address {
            return Err(format!("instance at {} stored as {address}", instance.address()));
        }
        Ok(instance)
    }

    /// Checks that the instance belongs to `service_key` and can be dialed: its host is an IP
    /// address or a hostname, and its port is above 0.
    pub fn validate(&self, service_key: &str) -> Result<(), String> {
        if self.service_key() != service_key {
            return Err(format!("instance of {} stored under {service_key}", self.service_key()));
        }
        if !is_valid_host(&self.host) {
            return Err(format!("host {:?} is neither an IP address nor a hostname", self.host));
        }
        if self.port == 0 {
            return Err("port 0 cannot be dialed".to_owned());
        }
        Ok(())
    }
}

/// Largest instance JSON accepted from a registry.
pub const MAX_INSTANCE_JSON: usize = 64 * 1024;

/// The path of a service's directory: `{root}/{name}:{version}`.
pub fn service_path(root: &str, service_key: &str) -> String {
    format!("{}/{service_key}", root.trim_end_matches('/'))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_matches_the_documented_layout() {
        let mut i = ServiceInstance::new("UserService", "1.0", "127.0.0.1", 9001);
        i.registered_at_ms = 1_763_700_000_000;
        assert_eq!(
            i.to_json(),
            r#"{"name":"UserService","version":"1.0","host":"127.0.0.1","port":9001,"weight":1,"metadata":{},"registered_at_ms":1763700000000}"#
        );
        assert_eq!(i.path("/rpc"), "/rpc/UserService:1.0/127.0.0.1:9001");
        assert_eq!(i.path("/rpc/"), "/rpc/UserService:1.0/127.0.0.1:9001");
        let back = ServiceInstance::from_json(i.to_json().as_bytes(), "UserService:1.0", "127.0.0.1:9001").unwrap();
        assert_eq!(back, i);
    }

    #[test]
    fn weight_and_metadata_default_and_mismatches_are_rejected() {
        let json = br#"{"name":"S","version":"2","host":"h","port":1}"#;
        let i = ServiceInstance::from_json(json, "S:2", "h:1").unwrap();
        assert_eq!(i.weight, 1);
        assert!(ServiceInstance::from_json(json, "S:3", "h:1").is_err());
        assert!(ServiceInstance::from_json(json, "S:2", "h:2").is_err());
        assert!(ServiceInstance::from_json(b"garbage", "S:2", "h:1").is_err());
    }

    #[test]
    fn untrusted_values_that_cannot_be_dialed_are_refused() {
        let value = |host: &str, port: u16| {
            format!(r#"{{"name":"S","version":"2","host":"{host}","port":{port}}}"#).into_bytes()
        };
        for (host, port, why) in [
            ("", 1, "neither"),
            ("bad host!", 1, "neither"),
            ("-x.example", 1, "neither"),
            ("a..b", 1, "neither"),
            ("h", 0, "port 0"),
        ] {
            let e = ServiceInstance::from_json(&value(host, port), "S:2", &format!("{host}:{port}")).unwrap_err();
            assert!(e.contains(why), "{host}:{port}: {e}");
        }
        for host in ["10.0.0.1", "::1", "[::1]", "svc-1.ns.svc.cluster.local", "localhost"] {
            assert!(crate::host::is_valid_host(host), "{host}");
        }
        let huge = format!(
            r#"{{"name":"S","version":"2","host":"h","port":1,"metadata":{{"x":"{}"}}}}"#,
            "y".repeat(70_000)
        );
        let e = ServiceInstance::from_json(huge.as_bytes(), "S:2", "h:1").unwrap_err();
        assert!(e.contains("exceed the limit"), "{e}");
    }
}
