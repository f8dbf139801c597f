//! Certificates made at run time (rcgen): a throw-away CA per test and the leaf certificates
//! it signs, written as PEM files into a scratch directory. No key is ever committed.
//!
//! [`TestPki`] is the usual set (a CA, a server certificate for `localhost` and `127.0.0.1`, a
//! client certificate for [`CLIENT_NAME`]); [`TestCa`] issues further certificates from the same
//! CA ([`Leaf`]: other names, SPIFFE URIs, long expired) or stands for a CA nobody trusts.
//!
//! # Panics
//!
//! Every function here panics, naming the file, when a key cannot be made or a file cannot be
//! written: a test cannot go on without its certificates.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
}

/// What a leaf certificate says.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// Subject common name.
    pub common_name: String,
    /// Alternative names: IP addresses become IP names, anything else a DNS name.
    pub names: Vec<String>,
    /// URI alternative names (e.g. SPIFFE ids).
    pub uris: Vec<String>,
    /// Valid until 2001 instead of far in the future.
    pub expired: bool,
}

impl Leaf {
    /// A certificate for `common_name` valid for `names`.
    pub fn new(common_name: &str, names: &[&str]) -> Self {
        Self {
            common_name: common_name.to_owned(),
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            uris: Vec::new(),
            expired: false,
        }
    }

    /// The same, long expired.
    pub fn expired(mut self) -> Self {
        self.expired = true;
        self
    }

    /// The same with a URI name.
    pub fn with_uri(mut self, uri: &str) -> Self {
        self.uris.push(uri.to_owned());
        self
    }
}

/// A certificate authority of its own, with its certificate in `ca.pem` of its directory.
pub struct TestCa {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    /// Whether the directory is this CA's own, removed when it is dropped.
    scratch: bool,
}

impl TestCa {
    /// A new CA named `name`, writing into a fresh scratch directory.
    pub fn new(name: &str) -> Self {
        let mut ca = Self::in_dir(&crate::scratch_dir("certs"), name);
        ca.scratch = true;
        ca
    }

    /// A new CA named `name` writing into `dir` (created if missing; kept after the CA is
    /// dropped).
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        if let Err(err) = std::fs::create_dir_all(dir) {
            panic!("creating the certificate directory {}: {err}", dir.display());
        }
        let key = made("a CA key", KeyPair::generate());
        let mut params = made("the CA's parameters", CertificateParams::new(Vec::<String>::new()));
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = made("the CA's self-signed certificate", params.self_signed(&key));
        write(&dir.join("ca.pem"), &cert.pem());
        Self {
            dir: dir.to_owned(),
            issuer: Issuer::new(params, key),
            scratch: false,
        }
    }

    /// The directory the files are written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA's certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Signs `leaf` (usable by servers and clients) into `{file}.pem` and `{file}.key`.
    pub fn issue(&self, file: &str, leaf: &Leaf) -> CertFiles {
        let key = made("a key", KeyPair::generate());
        let mut params = made("the certificate's names", CertificateParams::new(leaf.names.clone()));
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, leaf.common_name.as_str());
        for uri in &leaf.uris {
            let name = made(&format!("the URI name {uri}"), uri.as_str().try_into());
            params.subject_alt_names.push(rcgen::SanType::URI(name));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        if leaf.expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let cert = made(&format!("the certificate {file}"), params.signed_by(&key, &self.issuer));
        let files = CertFiles {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
        };
        write(&files.cert, &cert.pem());
        write(&files.key, &key.serialize_pem());
        files
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        if self.scratch {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The usual set for one test: a CA, a server certificate for `localhost` and `127.0.0.1`, and
/// a client certificate for `consumer-a`.
pub struct TestPki {
    /// The CA (its directory goes when it is dropped).
    pub ca: TestCa,
    /// The provider's certificate.
    pub server: CertFiles,
    /// The consumer's certificate (common name `consumer-a`).
    pub client: CertFiles,
}

/// The common name of [`TestPki::client`].
pub const CLIENT_NAME: &str = "consumer-a";

impl TestPki {
    /// Makes a fresh set.
    pub fn new() -> Self {
        Self::from_ca(TestCa::new("waypost test CA"))
    }

    /// A fresh set written into `dir`, kept after this value goes (for scripts).
    pub fn in_dir(dir: &Path) -> Self {
        Self::from_ca(TestCa::in_dir(dir, "waypost demo CA"))
    }

    fn from_ca(ca: TestCa) -> Self {
        let server = ca.issue("server", &Leaf::new("localhost", &["localhost", "127.0.0.1"]));
        let client = ca.issue("client", &Leaf::new(CLIENT_NAME, &[]));
        Self { ca, server, client }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// The value of a step that cannot fail in a working test setup, or a panic naming it.
fn made<T>(what: &str, result: Result<T, rcgen::Error>) -> T {
    match result {
        Ok(value) => value,
        Err(err) => panic!("making {what}: {err}"),
    }
}

/// Writes a PEM file, or panics naming it.
fn write(path: &Path, pem: &str) {
    if let Err(err) = std::fs::write(path, pem) {
        panic!("writing {}: {err}", path.display());
    }
}
