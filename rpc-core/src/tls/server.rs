//! [`ServerTls`]: the server's certificates, reloadable, and the identity of verified clients.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use super::files::{certificates, off_runtime, private_key, roots, TlsError};
use crate::config::ServerTlsConfig;
use crate::context::PeerIdentity;

/// The TLS side of a server: see [the module docs](super). Cheap to clone; clones share the
/// configuration, so reloading one reloads them all.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

struct Inner {
    source: ServerTlsConfig,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl ServerTls {
    /// Reads the files of `config`.
    pub async fn load(config: &ServerTlsConfig) -> Result<Self, TlsError> {
        let source = config.clone();
        let built = off_runtime(move || build(&source)).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                source: config.clone(),
                current: RwLock::new(Arc::new(built)),
            }),
        })
    }

    /// Reads the files again; new connections use what they hold now. On error the running
    /// configuration stays.
    pub async fn reload(&self) -> Result<(), TlsError> {
        let source = self.inner.source.clone();
        let built = off_runtime(move || build(&source)).await?;
        *self.inner.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(built);
        Ok(())
    }

    /// Whether clients must show a certificate (mTLS).
    pub fn requires_client_certificate(&self) -> bool {
        self.inner.source.client_ca.is_some()
    }

    /// How long a handshake may take.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.source.handshake_timeout_ms)
    }

    /// The acceptor for a new connection (with the configuration loaded last).
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        let current = self
            .inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        TlsAcceptor::from(current)
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("source", &self.inner.source).finish()
    }
}

fn build(config: &ServerTlsConfig) -> Result<rustls::ServerConfig, TlsError> {
    let chain = certificates("rpc.server.tls.cert", &config.cert)?;
    let key = private_key("rpc.server.tls.key", &config.key)?;
    let builder = rustls::ServerConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| setting("rpc.server.tls", e))?;
    let builder = match &config.client_ca {
        Some(ca) => {
            let roots = roots("rpc.server.tls.client_ca", ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), super::provider())
                .build()
                .map_err(|e| setting("rpc.server.tls.client_ca", e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder.with_single_cert(chain, key).map_err(|e| TlsError::Setting {
        field: "rpc.server.tls.key",
        message: format!(
            "{} does not go with the certificate in {}: {e}",
            config.key.display(),
            config.cert.display()
        ),
    })
}

fn setting(field: &'static str, e: impl std::fmt::Display) -> TlsError {
    TlsError::Setting {
        field,
        message: e.to_string(),
    }
}

/// The identity a verified client certificate (DER) proves: its subject's common name and its
/// DNS and URI alternative names.
pub(crate) fn identity_of(cert: &[u8]) -> Option<PeerIdentity> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let (mut dns_names, mut uris) = (Vec::new(), Vec::new());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                GeneralName::URI(uri) => uris.push((*uri).to_owned()),
                _ => {}
            }
        }
    }
    Some(PeerIdentity::new(common_name, dns_names, uris))
}
