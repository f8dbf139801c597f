//! [`Reply`]: the outcome of one call as it travels back to the caller.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::body::Body;
use crate::error::RpcError;
use crate::protocol::Status;
use crate::serializer::SerializerKind;

/// A response status and its body.
///
/// On the server a [`Service`](crate::server::Service) produces one per call; on the client the
/// transport hands one back for every call that reached a method ([`Status::Ok`] or
/// [`Status::ApplicationError`]); every other status is turned into an [`RpcError`] by the
/// transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Outcome of the call.
    pub status: Status,
    /// Encoded value or error, or a UTF-8 message (see the protocol docs).
    pub body: Body,
}

impl Reply {
    /// A successful reply carrying `value`; an encoding failure becomes an
    /// [`Status::EncodeError`] reply.
    pub fn ok<T: Serialize + ?Sized>(serializer: SerializerKind, value: &T) -> Self {
        Self::encode(serializer, Status::Ok, value)
    }

    /// A reply carrying the method's own error value.
    pub fn application_error<E: Serialize + ?Sized>(serializer: SerializerKind, error: &E) -> Self {
        Self::encode(serializer, Status::ApplicationError, error)
    }

    /// A reply with a non-value status and a human-readable message.
    pub fn failure(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            body: Body::from(message.into()),
        }
    }

    /// An `Ok` reply without a body: a stream's end after its items (and, inside a server,
    /// the reply its layers see when a handler returned its items).
    pub fn empty() -> Self {
        Self {
            status: Status::Ok,
            body: Body::default(),
        }
    }

    /// The reply for a method name the service does not have.
    pub fn method_not_found(service: &str, method: &str) -> Self {
        Self::failure(Status::MethodNotFound, format!("{service}/{method}"))
    }

    /// The reply for arguments the server could not decode.
    pub fn decode_failed(error: RpcError) -> Self {
        Self::failure(Status::DecodeError, error.to_string())
    }

    fn encode<T: Serialize + ?Sized>(serializer: SerializerKind, status: Status, value: &T) -> Self {
        match serializer.encode_body(value) {
            Ok(body) => Self { status, body },
            Err(e) => Self::failure(Status::EncodeError, e.to_string()),
        }
    }

    /// The human-readable message of a failure reply.
    pub fn message(&self) -> String {
        String::from_utf8_lossy(&self.body.as_one()).into_owned()
    }

    /// Decodes the value of a method without an application error type.
    ///
    /// An [`Status::ApplicationError`] reply is unexpected for such a method and reported as a
    /// decode failure.
    pub fn into_value<T: DeserializeOwned>(self, serializer: SerializerKind) -> Result<T, RpcError> {
        match self.status {
            Status::Ok => serializer.decode_body(self.body),
            other => Err(RpcError::Decode(format!(
                "unexpected {other:?} reply for a method without an error type"
            ))),
        }
    }

    /// Decodes the value or the application error of a method returning `Result<T, E>`.
    pub fn into_result<T: DeserializeOwned, E: DeserializeOwned>(
        self,
        serializer: SerializerKind,
    ) -> Result<T, RpcError<E>> {
        match self.status {
            Status::Ok => serializer.decode_body(self.body).map_err(RpcError::into_typed),
            Status::ApplicationError => match serializer.decode_body::<E>(self.body) {
                Ok(e) => Err(RpcError::Application(e)),
                Err(e) => Err(e.into_typed()),
            },
            other => Err(RpcError::Decode(format!("unexpected {other:?} reply"))),
        }
    }

    /// The failure reply a server answers `error` with: its status and message from the error
    /// table (see [`crate::error`]), so the caller gets the same kind.
    pub fn from_error(error: &RpcError) -> Self {
        Self::failure(error.status(), error.wire_message())
    }

    /// Maps a failure status (anything but `Ok` and `ApplicationError`) to the caller's error,
    /// through the error table.
    pub fn into_error(self, service: &str, method: &str) -> RpcError {
        let message = self.message();
        RpcError::from_status(self.status, message, service, method)
    }
}
