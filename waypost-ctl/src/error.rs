//! What can go wrong, each said in one line.

use waypost::config::ConfigError;
use waypost::registry::RegistryError;
use waypost::{ClientBuildError, RpcError};

/// A failure of a `waypost` command.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The consumer's security (`rpc.consumer.tls`, the token) cannot be set up.
    #[error(transparent)]
    Boot(#[from] waypost::BootError),
    /// The registry did not answer or refused.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// No instance of the service is registered.
    #[error("unknown service {key}: no instance is registered (services: {known})")]
    UnknownService {
        /// The key asked for.
        key: String,
        /// The keys the registry has.
        known: String,
    },
    /// The providers do not have the method.
    #[error("unknown method: {key} has no method {method}")]
    UnknownMethod {
        /// The service key.
        key: String,
        /// The method asked for.
        method: String,
    },
    /// The arguments on the command line are not a JSON array.
    #[error("arguments: {0}")]
    Arguments(String),
    /// The provider could not decode the arguments into the method's parameters.
    #[error("the provider could not decode the arguments: {0}")]
    RemoteDecode(#[source] RpcError),
    /// The method returned its own error.
    #[error("{method} returned an error: {error}")]
    Application {
        /// The method.
        method: String,
        /// The error value, as JSON.
        error: String,
    },
    /// The call failed otherwise.
    #[error("the call failed ({kind}): {source}")]
    Call {
        /// The error's kind.
        kind: &'static str,
        /// The error.
        #[source]
        source: RpcError,
    },
    /// A client could not be built.
    #[error(transparent)]
    Client(#[from] ClientBuildError),
    /// The consumer could not be built.
    #[error(transparent)]
    Consumer(#[from] waypost::client::ConsumerError),
    /// Rules that do not validate.
    #[error("{path}: invalid rules: {source}")]
    InvalidRules {
        /// The file.
        path: String,
        /// What is wrong.
        #[source]
        source: waypost::rules::InvalidRules,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Output or runtime failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// No instance of the service names a published schema.
    #[error(
        "{0}: no instance names a published schema (providers built before schemas, or a registry that stores none)"
    )]
    NoSchema(String),
    /// Some of the schemas in use break calls between them.
    #[error("{key}: {pairs} pair(s) of the schemas in use are incompatible")]
    IncompatibleSchemas {
        /// The service key.
        key: String,
        /// Directed pairs with a difference calls do not survive.
        pairs: usize,
    },
    /// A schema key holds a text that is not the schema its fingerprint names.
    #[error("{key}: {count} schema key(s) hold a text that is not the schema their fingerprint names (forged or corrupt); consumers ignore them, and a provider writes its own again when it registers")]
    UntrustedSchemas {
        /// The service key.
        key: String,
        /// How many fingerprints' texts failed the check.
        count: usize,
    },
    /// Some instances did not answer `serving`.
    #[error("{failing} of {total} instances are not serving")]
    Unhealthy {
        /// Instances that did not answer `serving`.
        failing: usize,
        /// Instances asked.
        total: usize,
    },
}

impl CtlError {
    /// The error of a failed call of `key`'s `method`.
    pub fn from_call(key: &str, method: &str, error: RpcError) -> Self {
        match error.kind() {
            waypost::ErrorKind::MethodNotFound => Self::UnknownMethod {
                key: key.to_owned(),
                method: method.to_owned(),
            },
            // The reply is read as raw JSON here: a decode error is the provider's.
            waypost::ErrorKind::Decode => Self::RemoteDecode(error),
            kind => Self::Call {
                kind: kind.as_str(),
                source: error,
            },
        }
    }
}
