//! The fixed 22-byte frame header and its enumerations.

use bytes::{Buf, BufMut};

use crate::error::ProtocolError;

/// First two bytes of every frame: `"RP"`.
pub const MAGIC: u16 = 0x5250;
/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 22;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// A call from a client to a service method.
    Request = 1,
    /// The answer to a request, carrying the request's id.
    Response = 2,
    /// A liveness probe; the peer answers with a [`MessageType::Pong`].
    Ping = 3,
    /// The answer to a ping.
    Pong = 4,
}

impl MessageType {
    /// Parses the wire value.
    pub fn from_u8(value: u8) -> Result<Self, ProtocolError> {
        match value {
            1 => Ok(Self::Request),
            2 => Ok(Self::Response),
            3 => Ok(Self::Ping),
            4 => Ok(Self::Pong),
            other => Err(ProtocolError::UnknownMessageType(other)),
        }
    }
}

/// Outcome of a call, carried by responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// The method ran; the body is its encoded return value.
    Ok = 0,
    /// The method returned `Err(e)`; the body is the encoded `e`.
    ApplicationError = 1,
    /// No service with the requested key is served here.
    ServiceNotFound = 2,
    /// The service has no method of that name.
    MethodNotFound = 3,
    /// The server could not decode the arguments.
    DecodeError = 4,
    /// The server could not encode the result.
    EncodeError = 5,
    /// The server's concurrency limit was reached; the call did not run.
    Overloaded = 6,
    /// The server is shutting down; the call did not run.
    ShuttingDown = 7,
    /// The handler panicked or failed inside the framework.
    InternalError = 8,
    /// The call's deadline passed on the server before the handler finished.
    DeadlineExceeded = 9,
    /// The server did not understand the request frame.
    ProtocolError = 10,
}

impl Status {
    /// Parses the wire value.
    pub fn from_u8(value: u8) -> Result<Self, ProtocolError> {
        Ok(match value {
            0 => Self::Ok,
            1 => Self::ApplicationError,
            2 => Self::ServiceNotFound,
            3 => Self::MethodNotFound,
            4 => Self::DecodeError,
            5 => Self::EncodeError,
            6 => Self::Overloaded,
            7 => Self::ShuttingDown,
            8 => Self::InternalError,
            9 => Self::DeadlineExceeded,
            10 => Self::ProtocolError,
            other => return Err(ProtocolError::UnknownStatus(other)),
        })
    }
}

/// The decoded fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the frame carries.
    pub message_type: MessageType,
    /// Wire id of the serializer of the body (0 where the body is not serialized).
    pub serializer: u8,
    /// Outcome, for responses.
    pub status: Status,
    /// Matches a response to its request.
    pub request_id: u64,
    /// For requests: how long the caller still waits, in milliseconds; `0` means no limit.
    pub timeout_ms: u32,
    /// Number of body bytes that follow the header.
    pub body_len: u32,
}

impl Header {
    /// A header of the given type with every other field zero.
    pub fn new(message_type: MessageType, request_id: u64) -> Self {
        Self {
            message_type,
            serializer: 0,
            status: Status::Ok,
            request_id,
            timeout_ms: 0,
            body_len: 0,
        }
    }

    /// Appends the 22 header bytes to `dst`.
    pub fn write_to(&self, dst: &mut impl BufMut) {
        dst.put_u16(MAGIC);
        dst.put_u8(PROTOCOL_VERSION);
        dst.put_u8(self.message_type as u8);
        dst.put_u8(self.serializer);
        dst.put_u8(self.status as u8);
        dst.put_u64(self.request_id);
        dst.put_u32(self.timeout_ms);
        dst.put_u32(self.body_len);
    }

    /// Parses and validates a header from exactly [`HEADER_LEN`] bytes.
    ///
    /// Checks the magic, the version, the message type, the status and that the body is not
    /// longer than `max_body_len`.
    pub fn parse(mut src: &[u8], max_body_len: usize) -> Result<Self, ProtocolError> {
        debug_assert!(src.len() >= HEADER_LEN);
        let magic = src.get_u16();
        if magic != MAGIC {
            return Err(ProtocolError::BadMagic(magic));
        }
        let version = src.get_u8();
        if version != PROTOCOL_VERSION {
            return Err(ProtocolError::UnsupportedVersion(version));
        }
        let message_type = MessageType::from_u8(src.get_u8())?;
        let serializer = src.get_u8();
        let status = Status::from_u8(src.get_u8())?;
        let request_id = src.get_u64();
        let timeout_ms = src.get_u32();
        let body_len = src.get_u32();
        if body_len as usize > max_body_len {
            return Err(ProtocolError::FrameTooLarge {
                len: body_len as usize,
                max: max_body_len,
            });
        }
        Ok(Self {
            message_type,
            serializer,
            status,
            request_id,
            timeout_ms,
            body_len,
        })
    }
}
