//! Reading PEM files into rustls types, with errors that name the field and the file.

use std::io;
use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS file or setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file cannot be read.
    #[error("{field}: cannot read {}: {source}", path.display())]
    Read {
        /// The configuration field.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file holds nothing of the expected kind.
    #[error("{field}: {} holds no PEM {expected}", path.display())]
    Empty {
        /// The configuration field.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        expected: &'static str,
    },
    /// The file's content is not valid.
    #[error("{field}: {}: {message}", path.display())]
    Invalid {
        /// The configuration field.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The files do not make a working configuration (a key that does not match its
    /// certificate, a missing half of a pair).
    #[error("{field}: {message}")]
    Setting {
        /// The configuration field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The certificates of a PEM file, in order.
pub(super) fn certificates(field: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certificates(field, path, &read(field, path)?)
}

fn parse_certificates(field: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(field, path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            field,
            path: path.to_owned(),
            expected: "certificate",
        });
    }
    for cert in &certs {
        x509_parser::parse_x509_certificate(cert)
            .map_err(|e| invalid(field, path, format!("not an X.509 certificate: {e}")))?;
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub(super) fn private_key(field: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    parse_private_key(field, path, &read(field, path)?)
}

fn parse_private_key(field: &'static str, path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            field,
            path: path.to_owned(),
            expected: "private key",
        },
        other => invalid(field, path, format!("not a PEM private key: {other}")),
    })
}

/// The text of a PEM file of certificates, checked as the server and client configurations
/// check theirs: for clients that take PEM themselves (etcd's).
pub async fn certificate_pem(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    checked_pem(field, path, parse_certificates).await
}

/// The text of a PEM private key file, checked like [`certificate_pem`].
pub async fn private_key_pem(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    checked_pem(field, path, parse_private_key).await
}

/// The text of the PEM file at `path`, once `parse` accepts it (off the runtime: file I/O).
async fn checked_pem<T: 'static>(
    field: &'static str,
    path: &Path,
    parse: fn(&'static str, &Path, &[u8]) -> Result<T, TlsError>,
) -> Result<Vec<u8>, TlsError> {
    let path = path.to_owned();
    off_runtime(move || {
        let pem = read(field, &path)?;
        parse(field, &path, &pem)?;
        Ok(pem)
    })
    .await
}

/// A root store of the certificates of a PEM file.
pub(super) fn roots(field: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(field, path)? {
        roots
            .add(cert)
            .map_err(|e| invalid(field, path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        field,
        path: path.to_owned(),
        source,
    })
}

fn invalid(field: &'static str, path: &Path, message: String) -> TlsError {
    TlsError::Invalid {
        field,
        path: path.to_owned(),
        message,
    }
}

/// Runs a file-reading `load` off the async runtime.
pub(super) async fn off_runtime<T: Send + 'static>(
    load: impl FnOnce() -> Result<T, TlsError> + Send + 'static,
) -> Result<T, TlsError> {
    match tokio::task::spawn_blocking(load).await {
        Ok(result) => result,
        Err(e) => Err(TlsError::Setting {
            field: "tls",
            message: format!("loading the TLS files failed: {e}"),
        }),
    }
}
