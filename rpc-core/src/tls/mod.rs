//! TLS on the RPC transport (rustls): server certificates with optional client verification
//! (mTLS), client configuration, and the identity a client certificate proves.
//!
//! * [`ServerTls`] holds the server's certificate, key and optional client CA, read from the
//!   `rpc.server.tls` files. [`ServerTls::reload`] reads them again (on SIGHUP, say), and a
//!   serving server checks them every `reload_check_ms` and reloads them when their
//!   modification time or length changed ([`ServerTls::reload_if_changed`]): new connections
//!   use the new ones, open connections keep theirs, and files that do not load leave the
//!   running configuration in place. The handshake runs in the connection's own task
//!   under a timeout, so a slow or hostile client never holds up the accept loop.
//! * [`ClientTls`] holds the CA providers' certificates must chain to, the optional client
//!   certificate and the name to check (by default the host each provider registered).
//! * A file that is missing, unreadable or not what the field expects is an error naming the
//!   field and the file ([`TlsError`]); there is never a fallback to plain text.
//!
//! Only the ring crypto provider is used, and only TLS 1.2 and 1.3.

mod client;
mod files;
mod server;

pub(crate) use client::is_refusal_alert;
pub use client::ClientTls;
pub use files::{certificate_pem, private_key_pem, TlsError};
pub(crate) use server::identity_of;
pub use server::ServerTls;

use std::sync::Arc;

/// The crypto provider every configuration is built with.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
