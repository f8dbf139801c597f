//! The framework's error types.
//!
//! [`RpcError`] is the one error a caller sees. It is generic over `E`, the application error
//! type of the called method: a method declared `-> Result<User, UserError>` makes the generated
//! client return `Result<User, RpcError<UserError>>`, and a `UserError` sent by the server
//! arrives as `RpcError::Application(UserError)`, typed, so a caller can match on it. Methods
//! without an application error use the default `E = Infallible`.

use std::convert::Infallible;
use std::fmt;
use std::time::Duration;

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
    InvalidMetadata(String),
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
    /// The call's deadline passed before an answer arrived.
    #[error("call timed out after {0:?}")]
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
    /// The server refused the call because its concurrency limit was reached.
    #[error("server overloaded")]
    Overloaded,
    /// The server refused the call because it is shutting down.
    #[error("server shutting down")]
    ShuttingDown,
    /// Discovery found no instance of the service.
    #[error("no instances of {0}")]
    NoInstances(String),
    /// The registry could not tell which instances exist.
    #[error("discovery failed: {0}")]
    Registry(String),
    /// The server failed to run the call (the handler panicked, or it gave up at the deadline).
    #[error("remote failure: {0}")]
    Remote(String),
    /// The caller did not prove who it is (no or wrong credentials); never retried.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The caller is known but may not make this call; never retried.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The call's metadata is not allowed (a bad key, or over the count or size limit).
    #[error("invalid metadata: {0}")]
    InvalidMetadata(String),
    /// A layer refused the call for a reason of its own; never retried.
    #[error("refused: {0}")]
    Refused(String),
    /// The peer does not support what the call asked for (e.g. a streaming call).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The method ran and returned its own error value.
    #[error("application error: {0:?}")]
    Application(E),
}

impl RpcError<Infallible> {
    /// Re-types an error that cannot hold an application error as one of any method.
    pub fn into_typed<E>(self) -> RpcError<E> {
        self.map_application(|never| match never {})
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
            Self::Registry(m) => RpcError::Registry(m),
            Self::Remote(m) => RpcError::Remote(m),
            Self::Unauthenticated(m) => RpcError::Unauthenticated(m),
            Self::PermissionDenied(m) => RpcError::PermissionDenied(m),
            Self::InvalidMetadata(m) => RpcError::InvalidMetadata(m),
            Self::Refused(m) => RpcError::Refused(m),
            Self::Unsupported(m) => RpcError::Unsupported(m),
            Self::Application(e) => f(e),
        }
    }

    /// Whether the call certainly did not run: no connection, refused before it started
    /// (overloaded, shutting down), or its connection broke before the request was sent. Such
    /// a call is safe to send to another instance whatever the method, and the client does so
    /// whatever the retry policy (within the retry budget).
    pub fn never_ran(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::Overloaded | Self::ShuttingDown | Self::ConnectionClosed { sent: false, .. }
        )
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
            Self::Remote(_) => ErrorKind::Remote,
            Self::Unauthenticated(_) => ErrorKind::Unauthenticated,
            Self::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Self::InvalidMetadata(_) => ErrorKind::InvalidMetadata,
            Self::Refused(_) => ErrorKind::Refused,
            Self::Unsupported(_) => ErrorKind::Unsupported,
            Self::Application(_) => ErrorKind::Application,
        }
    }
}

/// The variant of an [`RpcError`], without its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`RpcError::Connect`]
    Connect,
    /// [`RpcError::Timeout`]
    Timeout,
    /// [`RpcError::ServiceNotFound`]
    ServiceNotFound,
    /// [`RpcError::MethodNotFound`]
    MethodNotFound,
    /// [`RpcError::Encode`]
    Encode,
    /// [`RpcError::Decode`]
    Decode,
    /// [`RpcError::Protocol`]
    Protocol,
    /// [`RpcError::ConnectionClosed`]
    ConnectionClosed,
    /// [`RpcError::Overloaded`]
    Overloaded,
    /// [`RpcError::ShuttingDown`]
    ShuttingDown,
    /// [`RpcError::NoInstances`]
    NoInstances,
    /// [`RpcError::Registry`]
    Registry,
    /// [`RpcError::Remote`]
    Remote,
    /// [`RpcError::Unauthenticated`]
    Unauthenticated,
    /// [`RpcError::PermissionDenied`]
    PermissionDenied,
    /// [`RpcError::InvalidMetadata`]
    InvalidMetadata,
    /// [`RpcError::Refused`]
    Refused,
    /// [`RpcError::Unsupported`]
    Unsupported,
    /// [`RpcError::Application`]
    Application,
}

impl ErrorKind {
    /// The kind in snake case (`service_not_found`): metric labels and machine-readable output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::ServiceNotFound => "service_not_found",
            Self::MethodNotFound => "method_not_found",
            Self::Encode => "encode",
            Self::Decode => "decode",
            Self::Protocol => "protocol",
            Self::ConnectionClosed => "connection_closed",
            Self::Overloaded => "overloaded",
            Self::ShuttingDown => "shutting_down",
            Self::NoInstances => "no_instances",
            Self::Registry => "registry",
            Self::Remote => "remote",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::InvalidMetadata => "invalid_metadata",
            Self::Refused => "refused",
            Self::Unsupported => "unsupported",
            Self::Application => "application",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
