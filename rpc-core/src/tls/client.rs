//! [`ClientTls`]: how a client verifies providers and proves itself to them.

use std::sync::Arc;

use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::files::{certificates, off_runtime, private_key, roots, TlsError};
use crate::config::ClientTlsConfig;

/// The TLS side of a client: see [the module docs](super). Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<ServerName<'static>>,
    source: ClientTlsConfig,
}

impl ClientTls {
    /// Reads the files of `config`; a CA is required (providers' certificates are checked
    /// against it).
    pub async fn load(config: &ClientTlsConfig) -> Result<Self, TlsError> {
        let source = config.clone();
        let built = off_runtime(move || build(&source)).await?;
        let server_name = match &config.server_name {
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|e| TlsError::Setting {
                field: "rpc.consumer.tls.server_name",
                message: format!("{name:?} is not a DNS name or an IP address: {e}"),
            })?),
            None => None,
        };
        Ok(Self {
            config: Arc::new(built),
            server_name,
            source: config.clone(),
        })
    }

    /// The name a provider at `host` must prove: the configured one, or `host` itself.
    pub(crate) fn server_name(&self, host: &str) -> Result<ServerName<'static>, String> {
        match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_owned())
                .map_err(|e| format!("{host:?} cannot be checked against a certificate: {e}")),
        }
    }

    /// The connector for a new connection.
    pub(crate) fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.config.clone())
    }
}

/// Whether a read failed because the server's TLS sent an alert: it refused this client (no
/// certificate, or one it does not trust) once the handshake's last step reached it, which the
/// client only learns on its first read. tokio-rustls hands rustls's error on inside the I/O
/// error.
pub(crate) fn is_refusal_alert(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::AlertReceived(_)))
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("source", &self.source).finish()
    }
}

fn build(config: &ClientTlsConfig) -> Result<rustls::ClientConfig, TlsError> {
    let Some(ca) = &config.ca else {
        return Err(TlsError::Setting {
            field: "rpc.consumer.tls.ca",
            message: "required: the CA that signs the providers' certificates".to_owned(),
        });
    };
    let roots = roots("rpc.consumer.tls.ca", ca)?;
    let builder = rustls::ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setting {
            field: "rpc.consumer.tls",
            message: e.to_string(),
        })?
        .with_root_certificates(roots);
    match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => {
            let chain = certificates("rpc.consumer.tls.cert", cert)?;
            let key_der = private_key("rpc.consumer.tls.key", key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| TlsError::Setting {
                    field: "rpc.consumer.tls.key",
                    message: format!(
                        "{} does not go with the certificate in {}: {e}",
                        key.display(),
                        cert.display()
                    ),
                })
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(TlsError::Setting {
            field: "rpc.consumer.tls.cert",
            message: "cert and key go together".to_owned(),
        }),
    }
}
