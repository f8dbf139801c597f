//! The registered instance and its place in the registry's key space.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::warn;

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
    /// The fingerprint of the service schema the instance serves, published at
    /// [`schema_path`](super::schema_path); absent for providers without a schema (and
    /// ignored by consumers that predate schemas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Where the instance answers HTTP/JSON (`POST /{name}/{method}`), when it does: any
    /// language can find it here and call it with an HTTP client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpEndpoint>,
}

/// Where an instance serves HTTP/JSON: `{"port": 9001}`, with `"tls": true` for HTTPS (its
/// host is the instance's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HttpEndpoint {
    /// The port (the RPC port, when both share it).
    pub port: u16,
    /// Whether it is HTTPS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
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
            schema: None,
            http: None,
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
    /// one over [`MAX_INSTANCE_JSON`] bytes is refused before it is parsed. An `http` field
    /// that is not an endpoint (`{"port": N}` with N above 0) is dropped with a warning: the
    /// instance is still called over RPC.
    pub fn from_json(bytes: &[u8], service_key: &str, address: &str) -> Result<Self, InvalidInstance> {
        if bytes.len() > MAX_INSTANCE_JSON {
            return Err(InvalidInstance::TooLarge(bytes.len()));
        }
        let mut instance: Self = match serde_json::from_slice(bytes) {
            Ok(instance) => instance,
            Err(e) => Self::without_http(bytes, service_key, address).ok_or(InvalidInstance::Json(e))?,
        };
        if instance.http.is_some_and(|http| http.port == 0) {
            warn!(
                service = service_key,
                address, "an instance's HTTP endpoint has port 0: it is called over RPC only"
            );
            instance.http = None;
        }
        instance.validate(service_key)?;
        if instance.address() != address {
            return Err(InvalidInstance::WrongAddress {
                found: instance.address(),
                stored_as: address.to_owned(),
            });
        }
        Ok(instance)
    }

    /// The instance in `bytes` read without its `http` field, when that field alone kept it
    /// from reading (with a warning naming what it held).
    fn without_http(bytes: &[u8], service_key: &str, address: &str) -> Option<Self> {
        let mut fields: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(bytes).ok()?;
        let http = fields.remove("http")?;
        let instance = serde_json::from_value(serde_json::Value::Object(fields)).ok()?;
        let shown: String = http.to_string().chars().take(100).collect();
        warn!(
            service = service_key,
            address,
            http = %shown,
            "an instance's http field is not an endpoint ({{\"port\": N, \"tls\": bool}}): it is called over RPC only"
        );
        Some(instance)
    }

    /// Checks that the instance belongs to `service_key` and can be dialed: its host is an IP
    /// address or a hostname, and its port is above 0.
    pub fn validate(&self, service_key: &str) -> Result<(), InvalidInstance> {
        if self.service_key() != service_key {
            return Err(InvalidInstance::WrongService {
                found: self.service_key(),
                stored_under: service_key.to_owned(),
            });
        }
        if !is_valid_host(&self.host) {
            return Err(InvalidInstance::Host(self.host.clone()));
        }
        if self.port == 0 {
            return Err(InvalidInstance::PortZero);
        }
        if let Some(fingerprint) = self.schema.as_deref().filter(|f| !super::is_fingerprint(f)) {
            return Err(InvalidInstance::Schema(fingerprint.to_owned()));
        }
        Ok(())
    }
}

/// An instance record that cannot be used (garbage in a registry, or a registration that
/// could not be dialed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInstance {
    /// The JSON is over [`MAX_INSTANCE_JSON`] bytes (its length).
    #[error("{0} bytes of JSON exceed the limit of {MAX_INSTANCE_JSON}")]
    TooLarge(usize),
    /// The value is not an instance's JSON.
    #[error("{0}")]
    Json(#[source] serde_json::Error),
    /// The instance names another service than the directory it is stored in.
    #[error("instance of {found} stored under {stored_under}")]
    WrongService {
        /// The instance's own service key.
        found: String,
        /// The directory's.
        stored_under: String,
    },
    /// The instance names another address than its node.
    #[error("instance at {found} stored as {stored_as}")]
    WrongAddress {
        /// The instance's own address.
        found: String,
        /// The node's.
        stored_as: String,
    },
    /// The host is neither an IP address nor a hostname.
    #[error("host {0:?} is neither an IP address nor a hostname")]
    Host(String),
    /// Port 0 cannot be dialed.
    #[error("port 0 cannot be dialed")]
    PortZero,
    /// The schema field is not a fingerprint (16 lower-case hex digits).
    #[error("schema {0:?} is not a fingerprint of 16 lower-case hex digits")]
    Schema(String),
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
            assert!(e.to_string().contains(why), "{host}:{port}: {e}");
        }
        for host in ["10.0.0.1", "::1", "[::1]", "svc-1.ns.svc.cluster.local", "localhost"] {
            assert!(crate::host::is_valid_host(host), "{host}");
        }
        let huge = format!(
            r#"{{"name":"S","version":"2","host":"h","port":1,"metadata":{{"x":"{}"}}}}"#,
            "y".repeat(70_000)
        );
        let e = ServiceInstance::from_json(huge.as_bytes(), "S:2", "h:1").unwrap_err();
        assert!(e.to_string().contains("exceed the limit"), "{e}");
    }

    #[test]
    fn a_bad_http_endpoint_is_dropped_and_the_instance_kept() {
        let value = |http: &str| format!(r#"{{"name":"S","version":"2","host":"h","port":1,"http":{http}}}"#);
        for bad in [
            r#""nope""#,
            r#"{"port":"80"}"#,
            r#"{"port":70000}"#,
            r#"{"port":0}"#,
            "[]",
        ] {
            let i = ServiceInstance::from_json(value(bad).as_bytes(), "S:2", "h:1").unwrap();
            assert_eq!(i.http, None, "{bad}");
            assert_eq!(i.port, 1);
        }
        let i = ServiceInstance::from_json(value(r#"{"port":8080,"tls":true}"#).as_bytes(), "S:2", "h:1").unwrap();
        assert_eq!(i.http, Some(HttpEndpoint { port: 8080, tls: true }));
        // Anything else wrong still refuses the instance.
        let broken = br#"{"name":"S","version":"2","host":"h","port":"1","http":"nope"}"#;
        assert!(ServiceInstance::from_json(broken, "S:2", "h:1").is_err());
    }

    #[test]
    fn the_schema_fingerprint_is_optional_and_checked() {
        let mut i = ServiceInstance::new("S", "2", "h", 1);
        i.schema = Some("0123456789abcdef".into());
        assert!(i.to_json().contains(r#""schema":"0123456789abcdef""#));
        assert_eq!(
            ServiceInstance::from_json(i.to_json().as_bytes(), "S:2", "h:1").unwrap(),
            i
        );
        for bad in ["", "0123", "0123456789ABCDEF", "../../../x/abcdef"] {
            i.schema = Some(bad.into());
            let e = ServiceInstance::from_json(i.to_json().as_bytes(), "S:2", "h:1").unwrap_err();
            assert!(matches!(e, InvalidInstance::Schema(_)), "{bad}: {e}");
        }
    }
}
