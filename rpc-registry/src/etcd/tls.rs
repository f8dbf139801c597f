//! TLS to etcd: the `rpc.registry.tls` files, read when connecting.
//!
//! A file that is missing, unreadable or not PEM of the expected kind fails the connection
//! with an error naming the field and the file; there is no fallback to plain text.

use std::path::Path;

use etcd_client::{Certificate, Identity, TlsOptions};
use rpc_core::config::RegistryTlsConfig;
use rpc_core::registry::RegistryError;

/// The client TLS options of `config`.
pub(super) async fn options(config: &RegistryTlsConfig) -> Result<TlsOptions, RegistryError> {
    let mut options = TlsOptions::new();
    if let Some(ca) = &config.ca {
        options = options.ca_certificate(Certificate::from_pem(
            read_pem("rpc.registry.tls.ca", ca, "CERTIFICATE").await?,
        ));
    }
    match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => {
            let cert = read_pem("rpc.registry.tls.cert", cert, "CERTIFICATE").await?;
            let key = read_pem("rpc.registry.tls.key", key, "PRIVATE KEY").await?;
            options = options.identity(Identity::from_pem(cert, key));
        }
        (None, None) => {}
        _ => {
            return Err(RegistryError::InvalidConfig(
                "rpc.registry.tls: cert and key go together".to_owned(),
            ))
        }
    }
    Ok(options)
}

/// The PEM text of `path`, checked to hold a `kind` block (`PRIVATE KEY` matches every key
/// format).
async fn read_pem(field: &str, path: &Path, kind: &str) -> Result<Vec<u8>, RegistryError> {
    let pem = tokio::fs::read(path)
        .await
        .map_err(|e| RegistryError::InvalidConfig(format!("{field}: cannot read {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&pem);
    if !text.contains("-----BEGIN") || !text.lines().any(|l| l.starts_with("-----BEGIN") && l.contains(kind)) {
        return Err(RegistryError::InvalidConfig(format!(
            "{field}: {} holds no PEM {kind}",
            path.display()
        )));
    }
    Ok(pem)
}
