//! The framework's error types, and the one table that says what each kind of failure means.
//!
//! [`RpcError`] is the one error a caller sees. It is generic over `E`, the application error
//! type of the called method: a method declared `-> Result<User, UserError>` makes the generated
//! client return `Result<User, RpcError<UserError>>`, and a `UserError` sent by the server
//! arrives as `RpcError::Application(UserError)`, typed, so a caller can match on it. Methods
//! without an application error use the default `E = Infallible`.
//!
//! # One table
//!
//! Every failure has an [`ErrorKind`], and [`ErrorKind`]'s table (the `error_kinds!` block
//! below) is the only place that says, for each kind: the response [`Status`] a server answers
//! it with, the kind a client makes of each status, the label metrics and machine-readable
//! output use, and whether a caller may try again ([`Retry`]). The server's replies, the
//! client's errors, the interceptors' refusals, tower layers' errors and the metrics labels
//! all go through it, so the caller sees the same kind on every path.
//!
//! Errors from tower layers ([`BoxError`]) become [`RpcError`]s by type, never by their text
//! ([`RpcError::from_layer_error`]): an `RpcError` keeps its kind, tower's `Elapsed` is a
//! timeout, tower's `Overloaded` is overloaded, and anything else is an internal error that
//! keeps the original as its source.

use std::convert::Infallible;
use std::fmt;
use std::time::Duration;

use crate::protocol::Status;

/// The error type of tower layers and services: any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A violation of the wire protocol by the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The frame did not start with the protocol's magic bytes.
    #[error("bad magic 0x{0:04x}")]
    BadMagic(u16),
    /// The frame announced a protocol version this build does not speak.
    #[error("the peer speaks protocol version {0}; this build speaks version {ours}", ours = crate::protocol::PROTOCOL_VERSION)]
    UnsupportedVersion(u8),
    /// The peer refused this build's protocol version; its explanation.
    #[error("the peer refused our protocol version: {0}")]
    VersionRejected(String),
    /// The server could not make sense of the request; its explanation.
    #[error("the server rejected the request: {0}")]
    Rejected(String),
    /// The message type byte is not one this build knows.
    #[error("unknown message type {0}")]
    UnknownMessageType(u8),
    /// The status byte is not one this build knows.
    #[error("unknown status {0}")]
    UnknownStatus(u8),
    /// The serializer id byte is not one this build knows.
    #[error("unknown serializer id {0}")]
    UnknownSerializer(u8),
    /// The frame announced a body longer than allowed.
    #[error("frame body of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Announced body length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// A field of the body ended before its announced length.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A text field of the body is not UTF-8.
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    /// A field of the body is not what the protocol allows.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// A frame was started but not completed in time (a truncated frame, then silence).
    #[error("frame not completed within {0:?}")]
    FrameTimeout(std::time::Duration),
    /// A frame arrived that is not allowed in this direction (a response sent to a server...).
    #[error("unexpected {0} frame")]
    UnexpectedFrame(&'static str),
    /// Request metadata over the receiver's limits (a refusal of that request, not of the
    /// connection).
    #[error("metadata {what} of {len} exceeds the limit of {max}")]
    MetadataOverLimit {
        /// `entries` or `bytes`.
        what: &'static str,
        /// What the request carried.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A metadata key or value that the protocol does not allow.
    #[error("invalid metadata: {0}")]
    InvalidMetadata(crate::context::MetadataError),
}

/// Everything that can go wrong with a remote call.
///
/// `E` is the application error type of the called method (see the module docs).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError<E = Infallible> {
    /// No TCP connection could be made to the endpoint.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The endpoint.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The call's deadline passed before an answer arrived (on the client, in a layer, or on
    /// the server, which gave up at the deadline the call carried).
    /// The duration is how long the caller waited, when the failing side knew it (zero
    /// otherwise).
    #[error("deadline exceeded{}", waited(*.0))]
    Timeout(Duration),
    /// The server does not serve this service key.
    #[error("service {0} not found on the server")]
    ServiceNotFound(String),
    /// The service has no such method.
    #[error("method {method} not found in service {service}")]
    MethodNotFound {
        /// Service key.
        service: String,
        /// Method name.
        method: String,
    },
    /// Arguments or result could not be encoded (locally or on the server).
    #[error("encode failed: {0}")]
    Encode(String),
    /// Arguments or result could not be decoded (locally or on the server).
    #[error("decode failed: {0}")]
    Decode(String),
    /// The peer broke the wire protocol.
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    /// The connection broke while the call was pending, or before it could be sent.
    #[error("connection to {addr} closed: {reason}")]
    ConnectionClosed {
        /// The endpoint.
        addr: String,
        /// What closed it.
        reason: String,
        /// Whether the request had been handed to the connection when it broke; a request
        /// that was never sent is always safe to retry.
        sent: bool,
    },
    /// The call was refused for load (the server's limits or its load shedding, a
    /// load-shedding layer on either side, or the client's circuit breakers or per-instance
    /// limit); it did not run.
    #[error("overloaded")]
    Overloaded,
    /// The server refused the call because it is shutting down.
    #[error("server shutting down")]
    ShuttingDown,
    /// Discovery found no instance of the service.
    #[error("no instances of {0}")]
    NoInstances(String),
    /// The registry could not tell which instances exist.
    #[error("discovery failed: {0}")]
    Registry(#[source] BoxError),
    /// The call failed inside the framework: the handler panicked, a layer failed with an
    /// error of its own, or the server answered a status this build does not know.
    #[error("internal error: {message}")]
    Internal {
        /// What happened.
        message: String,
        /// The error behind it, when there is one in this process (a layer's own error).
        #[source]
        source: Option<BoxError>,
    },
    /// The caller did not prove who it is (no or wrong credentials); never retried.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The caller is known but may not make this call; never retried.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The call's metadata is not allowed (a bad key, or over the count or size limit).
    #[error("invalid metadata: {0}")]
    InvalidMetadata(String),
    /// An interceptor or layer refused the call for a reason of its own; never retried.
    #[error("refused: {0}")]
    Refused(String),
    /// The peer does not support what the call asked for (e.g. a streaming call).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The caller encodes with a fixed-schema serializer (bincode, postcard) and its types for
    /// the method are not the provider's: the provider would read the bytes as something
    /// else, so the call did not run. Another instance (of the caller's build) may take it.
    #[error("{0}")]
    SchemaMismatch(Box<SchemaMismatch>),
    /// The method ran and returned its own error value.
    #[error("application error: {0:?}")]
    Application(E),
}

/// What [`RpcError::SchemaMismatch`] tells: the method, the fingerprints of the two sides'
/// types for it (see [`ServiceSchema::method_fingerprint`](crate::schema::ServiceSchema::method_fingerprint)),
/// and their first difference, which the caller tells from the provider's schema of the method.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SchemaMismatch {
    /// The service key.
    pub service: String,
    /// The method.
    pub method: String,
    /// The fingerprint of the caller's types.
    pub caller: String,
    /// The fingerprint of the provider's types.
    pub provider: String,
    /// The first difference between them, as the caller sees it (`None` until a caller that
    /// knows its own schema has compared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub difference: Option<String>,
    /// The provider's schema of the method (JSON of a `ServiceSchema` holding that method and
    /// the types it reaches).
    pub provider_schema: serde_json::Value,
}

impl fmt::Display for SchemaMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "schema mismatch: {}/{}: the caller's types (fingerprint {}) are not the provider's ({})",
            self.service, self.method, self.caller, self.provider
        )?;
        if let Some(difference) = &self.difference {
            write!(f, "; first difference: {difference}")?;
        }
        f.write_str(
            "; a fixed-schema serializer would misread them, so the call did not run \
             (deploy the same types on both sides, or call with the default serializer)",
        )
    }
}

/// " after {d:?}", or nothing for an unknown (zero) wait.
fn waited(d: Duration) -> String {
    if d.is_zero() {
        String::new()
    } else {
        format!(" after {d:?}")
    }
}

impl RpcError<Infallible> {
    /// Re-types an error that cannot hold an application error as one of any method.
    pub fn into_typed<E>(self) -> RpcError<E> {
        self.map_application(|never| match never {})
    }

    /// An internal error explained by `message`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal {
            message: message.into(),
            source: None,
        }
    }

    /// The caller did not prove who it is: what an auth layer answers
    /// (`return Err(RpcError::unauthenticated("a token is required").into())`).
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::Unauthenticated(message.into())
    }

    /// The caller may not make this call.
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::PermissionDenied(message.into())
    }

    /// Refused for a reason of the layer's own.
    pub fn refused(message: impl Into<String>) -> Self {
        Self::Refused(message.into())
    }

    /// The error a tower layer's error stands for, decided by its type (see the module docs):
    /// an [`RpcError`] keeps its kind; tower's `Elapsed` is a [`RpcError::Timeout`]; tower's
    /// `Overloaded` is [`RpcError::Overloaded`]; anything else is [`RpcError::Internal`] with
    /// the error's text as its message and the error as its source.
    pub fn from_layer_error(error: BoxError) -> Self {
        let error = match error.downcast::<RpcError>() {
            Ok(rpc) => return *rpc,
            Err(other) => other,
        };
        if error.is::<tower::timeout::error::Elapsed>() {
            return Self::Timeout(Duration::ZERO);
        }
        if error.is::<tower::load_shed::error::Overloaded>() {
            return Self::Overloaded;
        }
        Self::Internal {
            message: error.to_string(),
            source: Some(error),
        }
    }

    /// The error a caller gets for a reply with a failure `status` (anything but `Ok` and
    /// `ApplicationError`) and its `message`, for a call of `service`'s `method`.
    pub fn from_status(status: Status, message: String, service: &str, method: &str) -> Self {
        match ErrorKind::from_status(status) {
            ErrorKind::ServiceNotFound => Self::ServiceNotFound(service.to_owned()),
            ErrorKind::MethodNotFound => Self::MethodNotFound {
                service: service.to_owned(),
                method: method.to_owned(),
            },
            ErrorKind::Decode => Self::Decode(format!("server: {message}")),
            ErrorKind::Encode => Self::Encode(format!("server: {message}")),
            ErrorKind::Overloaded => Self::Overloaded,
            ErrorKind::ShuttingDown => Self::ShuttingDown,
            ErrorKind::Timeout => Self::Timeout(Duration::ZERO),
            ErrorKind::Protocol if status == Status::UnsupportedVersion => {
                Self::Protocol(ProtocolError::VersionRejected(message))
            }
            ErrorKind::Protocol => Self::Protocol(ProtocolError::Rejected(message)),
            ErrorKind::Unauthenticated => Self::Unauthenticated(message),
            ErrorKind::PermissionDenied => Self::PermissionDenied(message),
            ErrorKind::InvalidMetadata => Self::InvalidMetadata(format!("server: {message}")),
            ErrorKind::Unsupported => Self::Unsupported(message),
            ErrorKind::SchemaMismatch => match serde_json::from_str::<SchemaMismatch>(&message) {
                Ok(mismatch) => Self::SchemaMismatch(Box::new(mismatch)),
                Err(e) => Self::Protocol(ProtocolError::Rejected(format!(
                    "a schema mismatch whose details do not parse ({e}): {message}"
                ))),
            },
            ErrorKind::Refused => Self::Refused(message),
            ErrorKind::Application => Self::Decode(format!("{status:?} reply is not a failure")),
            _ => match status {
                Status::Unknown(code) => Self::internal(format!(
                    "the server answered with status {code}, unknown to this version: {message}"
                )),
                _ => Self::internal(message),
            },
        }
    }
}

impl RpcError {
    /// The message a server sends with [`RpcError::status`]: what the caller's error will
    /// carry. Kinds whose variant holds only a message send it as it is, so the caller's error
    /// reads as the server's did.
    pub fn wire_message(&self) -> String {
        match self {
            Self::Unauthenticated(m)
            | Self::PermissionDenied(m)
            | Self::InvalidMetadata(m)
            | Self::Refused(m)
            | Self::Unsupported(m)
            | Self::Encode(m)
            | Self::Decode(m) => m.clone(),
            Self::Internal { message, .. } => message.clone(),
            Self::SchemaMismatch(mismatch) => serde_json::to_string(mismatch).unwrap_or_default(),
            other => other.to_string(),
        }
    }
}

impl From<tower::timeout::error::Elapsed> for RpcError {
    fn from(_: tower::timeout::error::Elapsed) -> Self {
        Self::Timeout(Duration::ZERO)
    }
}

impl From<tower::load_shed::error::Overloaded> for RpcError {
    fn from(_: tower::load_shed::error::Overloaded) -> Self {
        Self::Overloaded
    }
}

impl<E> RpcError<E> {
    /// The error without an application payload; an `Application` error (which callers of this
    /// never pass) becomes a decode failure.
    pub fn without_application(self) -> RpcError {
        self.map_application(|_| RpcError::Decode("unexpected application error".to_owned()))
    }

    /// Carries every variant over to another application error type, turning an application
    /// error into whatever `f` makes of it.
    fn map_application<F>(self, f: impl FnOnce(E) -> RpcError<F>) -> RpcError<F> {
        match self {
            Self::Connect { addr, source } => RpcError::Connect { addr, source },
            Self::Timeout(d) => RpcError::Timeout(d),
            Self::ServiceNotFound(s) => RpcError::ServiceNotFound(s),
            Self::MethodNotFound { service, method } => RpcError::MethodNotFound { service, method },
            Self::Encode(m) => RpcError::Encode(m),
            Self::Decode(m) => RpcError::Decode(m),
            Self::Protocol(p) => RpcError::Protocol(p),
            Self::ConnectionClosed { addr, reason, sent } => RpcError::ConnectionClosed { addr, reason, sent },
            Self::Overloaded => RpcError::Overloaded,
            Self::ShuttingDown => RpcError::ShuttingDown,
            Self::NoInstances(s) => RpcError::NoInstances(s),
            Self::Registry(e) => RpcError::Registry(e),
            Self::Internal { message, source } => RpcError::Internal { message, source },
            Self::Unauthenticated(m) => RpcError::Unauthenticated(m),
            Self::PermissionDenied(m) => RpcError::PermissionDenied(m),
            Self::InvalidMetadata(m) => RpcError::InvalidMetadata(m),
            Self::Refused(m) => RpcError::Refused(m),
            Self::Unsupported(m) => RpcError::Unsupported(m),
            Self::SchemaMismatch(m) => RpcError::SchemaMismatch(m),
            Self::Application(e) => f(e),
        }
    }

    /// Whether the call certainly did not run: no connection, refused before it started
    /// (overloaded, shutting down), or its connection broke before the request was sent. Such
    /// a call is safe to send to another instance whatever the method, and the client does so
    /// whatever the retry policy (within the retry budget).
    pub fn never_ran(&self) -> bool {
        match self {
            Self::ConnectionClosed { sent, .. } => !sent,
            other => other.kind().retry() == Retry::Always,
        }
    }

    /// Whether trying the call again may succeed: always for a call that never ran, and for a
    /// timeout, a connection lost after sending, an internal failure or an application error
    /// only when the method is `idempotent`; never for errors about the request or the caller.
    pub fn is_retryable(&self, idempotent: bool) -> bool {
        match (self, self.kind().retry()) {
            (Self::ConnectionClosed { sent: false, .. }, _) | (_, Retry::Always) => true,
            (_, Retry::IfIdempotent) => idempotent,
            (_, Retry::Never) => false,
        }
    }

    /// The kind of failure, without its details; handy for metrics and retry decisions.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Connect { .. } => ErrorKind::Connect,
            Self::Timeout(_) => ErrorKind::Timeout,
            Self::ServiceNotFound(_) => ErrorKind::ServiceNotFound,
            Self::MethodNotFound { .. } => ErrorKind::MethodNotFound,
            Self::Encode(_) => ErrorKind::Encode,
            Self::Decode(_) => ErrorKind::Decode,
            Self::Protocol(_) => ErrorKind::Protocol,
            Self::ConnectionClosed { .. } => ErrorKind::ConnectionClosed,
            Self::Overloaded => ErrorKind::Overloaded,
            Self::ShuttingDown => ErrorKind::ShuttingDown,
            Self::NoInstances(_) => ErrorKind::NoInstances,
            Self::Registry(_) => ErrorKind::Registry,
            Self::Internal { .. } => ErrorKind::Internal,
            Self::Unauthenticated(_) => ErrorKind::Unauthenticated,
            Self::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Self::InvalidMetadata(_) => ErrorKind::InvalidMetadata,
            Self::Refused(_) => ErrorKind::Refused,
            Self::Unsupported(_) => ErrorKind::Unsupported,
            Self::SchemaMismatch(_) => ErrorKind::SchemaMismatch,
            Self::Application(_) => ErrorKind::Application,
        }
    }

    /// The status a server answers this error with (see the table on [`ErrorKind`]).
    pub fn status(&self) -> Status {
        self.kind().status()
    }

    /// Whether the failure says something about the instance that was called (rather than
    /// about the request): what outlier ejection counts.
    pub fn blames_instance(&self) -> bool {
        self.kind().blames_instance()
    }
}

/// Whether a caller may try a failed call again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Retry {
    /// Always: the call certainly did not run (it may go to any instance).
    Always,
    /// Only for methods marked `#[idempotent]`: the call may have run.
    IfIdempotent,
    /// Never: another attempt cannot fix it (the request, or the caller, is the problem).
    Never,
}

/// Declares [`ErrorKind`] with its table: label, status, retry class and whether it blames
/// the instance, for each kind, so no two maps can disagree. Kinds that only happen on the client (no connection, no instance,
/// the registry) answer `InternalError` when a server's layer fails with them.
macro_rules! error_kinds {
    ($($(#[$meta:meta])* $kind:ident => ($label:literal, $status:ident, $retry:ident, $blame:literal),)+) => {
        /// The variant of an [`RpcError`], without its payload; see the module docs for the
        /// table that goes with it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorKind {
            $($(#[$meta])* $kind,)+
        }

        impl ErrorKind {
            /// Every kind, in table order.
            pub const ALL: &'static [ErrorKind] = &[$(Self::$kind,)+];

            /// The kind in snake case (`service_not_found`): metric labels and
            /// machine-readable output.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$kind => $label,)+
                }
            }

            /// The response status a server answers this kind of failure with.
            pub fn status(self) -> Status {
                match self {
                    $(Self::$kind => Status::$status,)+
                }
            }

            /// Whether a caller may try again after this kind of failure.
            pub fn retry(self) -> Retry {
                match self {
                    $(Self::$kind => Retry::$retry,)+
                }
            }

            /// Whether this kind of failure counts against the instance called (outlier
            /// ejection) rather than against the request.
            pub fn blames_instance(self) -> bool {
                match self {
                    $(Self::$kind => $blame,)+
                }
            }
        }
    };
}

error_kinds! {
    /// [`RpcError::Connect`]
    Connect => ("connect", InternalError, Always, true),
    /// [`RpcError::Timeout`]
    Timeout => ("timeout", DeadlineExceeded, IfIdempotent, true),
    /// [`RpcError::ServiceNotFound`]
    ServiceNotFound => ("service_not_found", ServiceNotFound, Never, false),
    /// [`RpcError::MethodNotFound`]
    MethodNotFound => ("method_not_found", MethodNotFound, Never, false),
    /// [`RpcError::Encode`]
    Encode => ("encode", EncodeError, Never, false),
    /// [`RpcError::Decode`]
    Decode => ("decode", DecodeError, Never, false),
    /// [`RpcError::Protocol`]
    Protocol => ("protocol", ProtocolError, Never, false),
    /// [`RpcError::ConnectionClosed`] (retried always when the request was not sent)
    ConnectionClosed => ("connection_closed", InternalError, IfIdempotent, true),
    /// [`RpcError::Overloaded`]
    Overloaded => ("overloaded", Overloaded, Always, true),
    /// [`RpcError::ShuttingDown`]
    ShuttingDown => ("shutting_down", ShuttingDown, Always, true),
    /// [`RpcError::NoInstances`]
    NoInstances => ("no_instances", InternalError, Never, false),
    /// [`RpcError::Registry`]
    Registry => ("registry", InternalError, Never, false),
    /// [`RpcError::Internal`]
    Internal => ("internal", InternalError, IfIdempotent, true),
    /// [`RpcError::Unauthenticated`]
    Unauthenticated => ("unauthenticated", Unauthenticated, Never, false),
    /// [`RpcError::PermissionDenied`]
    PermissionDenied => ("permission_denied", PermissionDenied, Never, false),
    /// [`RpcError::InvalidMetadata`]
    InvalidMetadata => ("invalid_metadata", InvalidMetadata, Never, false),
    /// [`RpcError::Refused`]
    Refused => ("refused", Refused, Never, false),
    /// [`RpcError::Unsupported`]
    Unsupported => ("unsupported", Unsupported, Never, false),
    /// [`RpcError::SchemaMismatch`] (the call did not run: an instance of the caller's build
    /// may take it)
    SchemaMismatch => ("schema_mismatch", SchemaMismatch, Always, false),
    /// [`RpcError::Application`]
    Application => ("application", ApplicationError, IfIdempotent, false),
}

impl ErrorKind {
    /// The kind a caller makes of a response status: the kind whose table row answers with
    /// it (the first such row; `InternalError` is [`ErrorKind::Internal`]). `Ok` has no kind
    /// of its own and `Application` stands for it too; a status this build does not know is
    /// internal.
    pub fn from_status(status: Status) -> Self {
        match status {
            Status::Ok | Status::ApplicationError => Self::Application,
            Status::UnsupportedVersion => Self::Protocol,
            Status::InternalError | Status::Unknown(_) => Self::Internal,
            other => Self::ALL
                .iter()
                .copied()
                .find(|kind| kind.status() == other)
                .unwrap_or(Self::Internal),
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interceptor::Outcome;
    use crate::reply::Reply;

    /// An error of each kind, as the framework makes them.
    pub(crate) fn sample(kind: ErrorKind) -> RpcError {
        match kind {
            ErrorKind::Connect => RpcError::Connect {
                addr: "a:1".into(),
                source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            },
            ErrorKind::Timeout => RpcError::Timeout(Duration::from_millis(5)),
            ErrorKind::ServiceNotFound => RpcError::ServiceNotFound("S:1".into()),
            ErrorKind::MethodNotFound => RpcError::MethodNotFound {
                service: "S:1".into(),
                method: "m".into(),
            },
            ErrorKind::Encode => RpcError::Encode("e".into()),
            ErrorKind::Decode => RpcError::Decode("d".into()),
            ErrorKind::Protocol => RpcError::Protocol(ProtocolError::Rejected("p".into())),
            ErrorKind::ConnectionClosed => RpcError::ConnectionClosed {
                addr: "a:1".into(),
                reason: "gone".into(),
                sent: true,
            },
            ErrorKind::Overloaded => RpcError::Overloaded,
            ErrorKind::ShuttingDown => RpcError::ShuttingDown,
            ErrorKind::NoInstances => RpcError::NoInstances("S:1".into()),
            ErrorKind::Registry => RpcError::Registry("down".into()),
            ErrorKind::Internal => RpcError::internal("boom"),
            ErrorKind::Unauthenticated => RpcError::Unauthenticated("who".into()),
            ErrorKind::PermissionDenied => RpcError::PermissionDenied("no".into()),
            ErrorKind::InvalidMetadata => RpcError::InvalidMetadata("bad key".into()),
            ErrorKind::Refused => RpcError::Refused("because".into()),
            ErrorKind::Unsupported => RpcError::Unsupported("streams".into()),
            ErrorKind::SchemaMismatch => RpcError::SchemaMismatch(Box::new(SchemaMismatch {
                service: "S:1".into(),
                method: "m".into(),
                caller: "0123456789abcdef".into(),
                provider: "fedcba9876543210".into(),
                difference: None,
                provider_schema: serde_json::json!({"name": "S"}),
            })),
            ErrorKind::Application => RpcError::Decode("placeholder".into()),
        }
    }

    /// The kind a caller gets when a server fails a call with an error of `kind`: the same,
    /// except for the kinds that only a client makes, which are internal on a server.
    fn expected_remote(kind: ErrorKind) -> ErrorKind {
        match kind.status() {
            Status::InternalError => ErrorKind::Internal,
            _ => kind,
        }
    }

    #[test]
    fn every_kind_takes_the_same_way_through_every_path() {
        assert_eq!(ErrorKind::ALL.len(), 20);
        for &kind in ErrorKind::ALL.iter().filter(|k| **k != ErrorKind::Application) {
            let error = sample(kind);
            assert_eq!(error.kind(), kind);
            // The server's reply, and the caller's error made of it.
            let reply = Reply::from_error(&error);
            assert_eq!(reply.status, kind.status(), "{kind:?}");
            let remote = reply.clone().into_error("S:1", "m");
            assert_eq!(remote.kind(), expected_remote(kind), "{kind:?} came back as {remote:?}");
            // What metrics and interceptors see of that reply.
            let outcome = Outcome::from_status(reply.status);
            assert_eq!(outcome, Outcome::Error(expected_remote(kind)), "{kind:?}");
            assert_eq!(crate::metrics::outcome_label(outcome), expected_remote(kind).as_str());
            // A tower layer failing with it, on either side.
            let layered = RpcError::from_layer_error(Box::new(sample(kind)));
            assert_eq!(layered.kind(), kind, "{kind:?}");
            // Messages the caller reads are the server's.
            if let RpcError::Unauthenticated(m) | RpcError::PermissionDenied(m) | RpcError::Refused(m) = &remote {
                assert_eq!(*m, error.wire_message());
            }
            // Retry decisions agree with the table.
            match kind.retry() {
                Retry::Always => assert!(error.never_ran() && error.is_retryable(false), "{kind:?}"),
                Retry::IfIdempotent => {
                    assert!(error.is_retryable(true) && !error.is_retryable(false), "{kind:?}")
                }
                Retry::Never => assert!(!error.is_retryable(true) && !error.never_ran(), "{kind:?}"),
            }
        }
    }

    #[test]
    fn statuses_map_to_kinds_and_back() {
        for &kind in ErrorKind::ALL {
            if kind.status() != Status::InternalError {
                assert_eq!(ErrorKind::from_status(kind.status()), kind, "{kind:?}");
            }
        }
        assert_eq!(ErrorKind::from_status(Status::Unknown(99)), ErrorKind::Internal);
        assert_eq!(ErrorKind::from_status(Status::UnsupportedVersion), ErrorKind::Protocol);
        let unknown = RpcError::from_status(Status::Unknown(99), "x".into(), "S:1", "m");
        assert!(unknown.to_string().contains("status 99"), "{unknown}");
        let labels: std::collections::HashSet<_> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(labels.len(), ErrorKind::ALL.len(), "labels are distinct");
    }

    #[test]
    fn tower_errors_become_kinds_by_type_and_others_keep_their_source() {
        let elapsed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert_eq!(RpcError::from_layer_error(elapsed).kind(), ErrorKind::Timeout);
        let shed: BoxError = Box::new(tower::load_shed::error::Overloaded::new());
        assert_eq!(RpcError::from_layer_error(shed).kind(), ErrorKind::Overloaded);
        let other: BoxError = Box::new(std::io::Error::other("directory unreachable"));
        let error = RpcError::from_layer_error(other);
        assert_eq!(error.kind(), ErrorKind::Internal);
        assert_eq!(error.to_string(), "internal error: directory unreachable");
        let source = std::error::Error::source(&error).expect("the layer's error is the source");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
        assert_eq!(Reply::from_error(&error).message(), "directory unreachable");
        assert_eq!(
            RpcError::<Infallible>::Timeout(Duration::ZERO).to_string(),
            "deadline exceeded"
        );
    }
}
