//! Who is calling, as the caller's TLS client certificate says (mTLS).

/// The identity of a client that showed a certificate the server verified: the names its
/// certificate carries. Layers match it against allow-lists ([`PeerIdentity::is`]); handlers
/// read it from the call context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    common_name: Option<String>,
    dns_names: Vec<String>,
    uris: Vec<String>,
}

impl PeerIdentity {
    /// An identity with these names.
    pub fn new(common_name: Option<String>, dns_names: Vec<String>, uris: Vec<String>) -> Self {
        Self {
            common_name,
            dns_names,
            uris,
        }
    }

    /// The subject's common name (CN), if the certificate has one.
    pub fn common_name(&self) -> Option<&str> {
        self.common_name.as_deref()
    }

    /// The DNS names of the certificate's subject alternative names.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// The URIs of the certificate's subject alternative names (`spiffe://...`).
    pub fn uris(&self) -> &[String] {
        &self.uris
    }

    /// Every name: the common name, then the DNS names, then the URIs.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.common_name
            .iter()
            .chain(&self.dns_names)
            .chain(&self.uris)
            .map(String::as_str)
    }

    /// Whether `name` is one of the identity's names (exactly).
    pub fn is(&self, name: &str) -> bool {
        self.names().any(|n| n == name)
    }
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.names().next() {
            Some(first) => f.write_str(first),
            None => f.write_str("(a certificate without names)"),
        }
    }
}
