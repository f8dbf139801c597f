//! [`ServerTls`]: the server's certificates, reloadable, and the identity of verified clients.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

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
    /// What the files looked like when they were last loaded.
    loaded: Mutex<Stamps>,
}

/// Each file's modification time and length (`None`: unreadable).
type Stamps = Vec<Option<(SystemTime, u64)>>;

impl ServerTls {
    /// Reads the files of `config`.
    pub async fn load(config: &ServerTlsConfig) -> Result<Self, TlsError> {
        let source = config.clone();
        let (built, stamps) = off_runtime(move || Ok((build(&source)?, stamps(&source)))).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                source: config.clone(),
                current: RwLock::new(Arc::new(built)),
                loaded: Mutex::new(stamps),
            }),
        })
    }

    /// Reads the files again; new connections use what they hold now. On error the running
    /// configuration stays.
    pub async fn reload(&self) -> Result<(), TlsError> {
        let source = self.inner.source.clone();
        let (built, stamps) = off_runtime(move || Ok((build(&source)?, stamps(&source)))).await?;
        *self.inner.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(built);
        *self.inner.loaded.lock().unwrap_or_else(PoisonError::into_inner) = stamps;
        Ok(())
    }

    /// Reloads when a file changed (modification time or length) since the last load:
    /// `Ok(true)` when it did. Files that changed but do not load leave the running
    /// configuration, and are tried again at the next check.
    pub async fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let source = self.inner.source.clone();
        let now = off_runtime(move || Ok(stamps(&source))).await?;
        if *self.inner.loaded.lock().unwrap_or_else(PoisonError::into_inner) == now {
            return Ok(false);
        }
        self.reload().await.map(|()| true)
    }

    /// Checks the files every `reload_check_ms` until `stop` (see
    /// [`ServerTlsConfig::reload_check_ms`]); nothing when that is 0.
    pub(crate) async fn watch_files(self, stop: tokio_util::sync::CancellationToken) {
        let period = Duration::from_millis(self.inner.source.reload_check_ms);
        if period.is_zero() {
            return;
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(period) => {}
            }
            match self.reload_if_changed().await {
                Ok(true) => tracing::info!(cert = %self.inner.source.cert.display(), "TLS files changed: reloaded"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "TLS files changed but do not load; keeping the running ones"),
            }
        }
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
    let mut config = builder.with_single_cert(chain, key).map_err(|e| TlsError::Setting {
        field: "rpc.server.tls.key",
        message: format!(
            "{} does not go with the certificate in {}: {e}",
            config.key.display(),
            config.cert.display()
        ),
    })?;
    // HTTP clients (curl, browsers) ask for a protocol by ALPN and get HTTP/JSON; the RPC
    // client asks for none and gets the RPC protocol.
    if cfg!(feature = "http") {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    Ok(config)
}

/// The stamps of the files of `config`, in a fixed order.
fn stamps(config: &ServerTlsConfig) -> Stamps {
    let stamp = |path: &Path| {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    [Some(&config.cert), Some(&config.key), config.client_ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| stamp(p))
        .collect()
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
