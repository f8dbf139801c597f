//! TLS to etcd: the `rpc.registry.tls` files, read when connecting.
//!
//! The files are checked as the RPC transport checks its own (`waypost_core::tls`): a file that is
//! missing, unreadable or not PEM of the expected kind fails the connection with an error
//! naming the field and the file; there is never a fallback to plain text.

use etcd_client::{Certificate, Identity, TlsOptions};
use waypost_core::config::RegistryTlsConfig;
use waypost_core::registry::RegistryError;
use waypost_core::tls::{certificate_pem, private_key_pem, TlsError};

/// The client TLS options of `config`.
pub(super) async fn options(config: &RegistryTlsConfig) -> Result<TlsOptions, RegistryError> {
    let mut options = TlsOptions::new();
    if let Some(ca) = &config.ca {
        options = options.ca_certificate(Certificate::from_pem(
            certificate_pem("rpc.registry.tls.ca", ca).await.map_err(invalid)?,
        ));
    }
    match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => {
            let cert = certificate_pem("rpc.registry.tls.cert", cert).await.map_err(invalid)?;
            let key = private_key_pem("rpc.registry.tls.key", key).await.map_err(invalid)?;
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

fn invalid(e: TlsError) -> RegistryError {
    RegistryError::InvalidConfig(e.to_string())
}
