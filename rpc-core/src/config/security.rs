//! The security sections of the configuration: TLS files and credentials. Plain data, like the
//! rest of `config`; the `tls` and `auth` modules turn them into working parts.
//!
//! Credentials ([`Secret`]) never show in `Debug` output, so a configuration can be logged.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use super::list_or_comma_string;

/// A credential: a token or a password. Its `Debug` form hides it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `rpc.server.tls:` — TLS on the provider's listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM file of the server's certificate chain.
    pub cert: PathBuf,
    /// PEM file of the server's private key.
    pub key: PathBuf,
    /// PEM file of the CA that signs client certificates: present, every client must show
    /// one (mTLS) and its identity reaches the call context.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// A connection whose TLS handshake does not complete within this is closed.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// How often the files are checked for changes (a renewed certificate written over the
    /// old one, a Kubernetes secret updated); a change is loaded for new connections. 0: only
    /// on request (`ServerTls::reload`, SIGHUP in the example provider).
    #[serde(default = "default_reload_check_ms")]
    pub reload_check_ms: u64,
}

fn default_handshake_timeout_ms() -> u64 {
    10_000
}

fn default_reload_check_ms() -> u64 {
    10_000
}

/// `rpc.server.auth:` — who may call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerAuthConfig {
    /// Bearer tokens accepted; present and non-empty, a call without one of them is refused
    /// (`Unauthenticated`). A comma-separated list from the environment too
    /// (`RPC__SERVER__AUTH__TOKENS`).
    #[serde(deserialize_with = "secret_list")]
    pub tokens: Vec<Secret>,
    /// By service key: the client identities (certificate common name, DNS or URI name) that
    /// may call it, under mTLS. A service not listed is open to every verified client.
    pub allow: BTreeMap<String, Vec<String>>,
}

fn secret_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    Ok(list_or_comma_string(d)?.into_iter().map(Secret).collect())
}

/// `rpc.consumer.tls:` — TLS to providers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// PEM file of the CA that signs provider certificates.
    pub ca: Option<PathBuf>,
    /// PEM file of this client's certificate chain, for providers that require one (mTLS).
    pub cert: Option<PathBuf>,
    /// PEM file of this client's private key.
    pub key: Option<PathBuf>,
    /// The name provider certificates must carry; by default the host each provider
    /// registered (an IP address is checked against the certificate's IP names).
    pub server_name: Option<String>,
}

/// `rpc.consumer.auth:` — how this consumer proves who it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientAuthConfig {
    /// The bearer token sent with every call (from the environment too:
    /// `RPC__CONSUMER__AUTH__TOKEN`).
    pub token: Option<Secret>,
}

/// `rpc.registry.tls:` — TLS to etcd (`https` endpoints).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryTlsConfig {
    /// PEM file of the CA that signs the registry's certificates.
    pub ca: Option<PathBuf>,
    /// PEM file of this client's certificate, for a registry that requires one.
    pub cert: Option<PathBuf>,
    /// PEM file of this client's private key.
    pub key: Option<PathBuf>,
}
