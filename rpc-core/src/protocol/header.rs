//! The fixed 24-byte frame header and its enumerations.

use bytes::{Buf, BufMut};

use crate::error::ProtocolError;

/// First two bytes of every frame: `"RP"`.
pub const MAGIC: u16 = 0x5250;
/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 2;
/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 24;
/// Message types from this value up are extensions: a receiver that does not know one skips
/// the frame instead of closing the connection.
pub const FIRST_EXTENSION_TYPE: u8 = 0x80;

/// Bits of the header's flags byte.
pub mod flags {
    /// On a request: the call is a stream (see the protocol docs, "Streams"). A server
    /// without streaming answers such a request `Unsupported`.
    pub const STREAM: u8 = 0x01;
    /// Reserved (was: ends the stream of its request id; streams end with their own frames).
    pub const END_OF_STREAM: u8 = 0x02;
    /// The body ends in one byte string (a large `Vec<u8>` or `String` argument or result), and
    /// the header's `head_len` byte says how many body bytes come before it (the byte string's
    /// length prefix is the last of them). A receiver may read the byte string straight into
    /// memory of its own; one that ignores the flag reads the same body.
    pub const TAIL: u8 = 0x04;
    /// The body is zstd-compressed: a request's arguments (its prefix stays plain), or a
    /// response's whole body. Sent only to a peer that set [`DECOMPRESSES`] (see
    /// `waypost_core::compression`).
    pub const COMPRESSED: u8 = 0x08;
    /// The sender decodes compressed bodies: on a request, compressed responses; on a
    /// response, compressed requests.
    pub const DECOMPRESSES: u8 = 0x10;
}

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageType {
    /// A call from a client to a service method.
    Request,
    /// The answer to a request, carrying the request's id.
    Response,
    /// A liveness probe; the peer answers with a [`MessageType::Pong`].
    Ping,
    /// The answer to a ping.
    Pong,
    /// Client to server: the caller of the request with this id stopped waiting; the server
    /// drops the call's handler and sends no answer.
    Cancel,
    /// Server to client: send no new calls on this connection; calls in flight still complete.
    GoAway,
    /// Either way: one item of the stream with this request id.
    StreamItem,
    /// Client to server: the client's items of the stream with this request id are all sent.
    StreamEnd,
    /// Either way: the receiver of a stream's items grants the sender room for more (a count
    /// of messages and of bytes); the server's first one also says it accepted the stream.
    Credit,
    /// An extension type (at or above [`FIRST_EXTENSION_TYPE`]) this build does not know;
    /// receivers skip the frame.
    Extension(u8),
}

impl MessageType {
    /// Parses the wire value.
    pub fn from_u8(value: u8) -> Result<Self, ProtocolError> {
        match value {
            1 => Ok(Self::Request),
            2 => Ok(Self::Response),
            3 => Ok(Self::Ping),
            4 => Ok(Self::Pong),
            5 => Ok(Self::Cancel),
            6 => Ok(Self::GoAway),
            7 => Ok(Self::StreamItem),
            8 => Ok(Self::StreamEnd),
            9 => Ok(Self::Credit),
            ext if ext >= FIRST_EXTENSION_TYPE => Ok(Self::Extension(ext)),
            other => Err(ProtocolError::UnknownMessageType(other)),
        }
    }

    /// The wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Request => 1,
            Self::Response => 2,
            Self::Ping => 3,
            Self::Pong => 4,
            Self::Cancel => 5,
            Self::GoAway => 6,
            Self::StreamItem => 7,
            Self::StreamEnd => 8,
            Self::Credit => 9,
            Self::Extension(v) => v,
        }
    }
}

/// Declares [`Status`] with its wire values, so parsing and encoding cannot disagree.
macro_rules! statuses {
    ($($(#[$meta:meta])* $variant:ident = $value:literal,)+) => {
        /// Outcome of a call, carried by responses.
        ///
        /// A status this build does not know (sent by a newer peer) parses as
        /// [`Status::Unknown`] and fails that call only.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Status {
            $($(#[$meta])* $variant,)+
            /// A status value this build does not know.
            Unknown(u8),
        }

        impl Status {
            /// Parses the wire value; never fails (see [`Status::Unknown`]).
            pub fn from_u8(value: u8) -> Self {
                match value {
                    $($value => Self::$variant,)+
                    other => Self::Unknown(other),
                }
            }

            /// The wire value.
            pub fn to_u8(self) -> u8 {
                match self {
                    $(Self::$variant => $value,)+
                    Self::Unknown(other) => other,
                }
            }
        }
    };
}

statuses! {
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
    /// The caller did not prove who it is; the call did not run.
    Unauthenticated = 11,
    /// The caller may not make this call; the call did not run.
    PermissionDenied = 12,
    /// The request's metadata is invalid or over the server's limits; the call did not run.
    InvalidMetadata = 13,
    /// The request used a protocol version the server does not speak; the body says which
    /// it speaks. The connection closes after it.
    UnsupportedVersion = 14,
    /// The server does not support what the request asks for (a streaming call, say).
    Unsupported = 15,
    /// A server layer refused the call for a reason of its own; the call did not run.
    Refused = 16,
    /// The caller's fixed-schema serializer writes the method's types differently from the
    /// provider's (their fingerprints differ); the call did not run. The body is JSON: the two
    /// fingerprints and the provider's schema of the method.
    SchemaMismatch = 17,
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
    /// See [`flags`].
    pub flags: u8,
    /// With [`flags::TAIL`]: the body bytes before its final byte string; else `0`.
    pub head_len: u8,
    /// Matches a response (or a cancel) to its request.
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
            flags: 0,
            head_len: 0,
            request_id,
            timeout_ms: 0,
            body_len: 0,
        }
    }

    /// Appends the 24 header bytes to `dst`.
    pub fn write_to(&self, dst: &mut impl BufMut) {
        dst.put_u16(MAGIC);
        dst.put_u8(PROTOCOL_VERSION);
        dst.put_u8(self.message_type.to_u8());
        dst.put_u8(self.serializer);
        dst.put_u8(self.status.to_u8());
        dst.put_u8(self.flags);
        dst.put_u8(self.head_len);
        dst.put_u64(self.request_id);
        dst.put_u32(self.timeout_ms);
        dst.put_u32(self.body_len);
    }

    /// Checks the start of a frame as soon as its first bytes are there: the magic from two
    /// bytes on, the version from three, so a peer of another version is told apart before
    /// a whole header (whose length differs between versions) has arrived.
    pub fn check_prefix(src: &[u8]) -> Result<(), ProtocolError> {
        if src.len() >= 2 {
            let magic = u16::from_be_bytes([src[0], src[1]]);
            if magic != MAGIC {
                return Err(ProtocolError::BadMagic(magic));
            }
        }
        match src.get(2) {
            Some(&version) if version != PROTOCOL_VERSION => Err(ProtocolError::UnsupportedVersion(version)),
            _ => Ok(()),
        }
    }

    /// Parses and validates a header from at least [`HEADER_LEN`] bytes.
    ///
    /// Checks the magic, the version, the message type and that the body is not longer than
    /// `max_body_len`. Unknown flag bits are ignored (room to grow).
    pub fn parse(mut src: &[u8], max_body_len: usize) -> Result<Self, ProtocolError> {
        if src.len() < HEADER_LEN {
            return Err(ProtocolError::Truncated("header"));
        }
        Self::check_prefix(src)?;
        src.advance(3);
        let message_type = MessageType::from_u8(src.get_u8())?;
        let serializer = src.get_u8();
        let status = Status::from_u8(src.get_u8());
        let flags = src.get_u8();
        let head_len = src.get_u8();
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
            flags,
            head_len,
            request_id,
            timeout_ms,
            body_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_and_unknown_ones_are_kept() {
        for v in 0..=u8::MAX {
            assert_eq!(Status::from_u8(v).to_u8(), v);
        }
        assert_eq!(Status::from_u8(200), Status::Unknown(200));
        assert_eq!(Status::from_u8(12), Status::PermissionDenied);
    }

    #[test]
    fn message_types_round_trip_and_extensions_are_typed() {
        for v in [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 0x80, 0xff] {
            assert_eq!(MessageType::from_u8(v).unwrap().to_u8(), v);
        }
        assert_eq!(MessageType::from_u8(0x93).unwrap(), MessageType::Extension(0x93));
        assert!(MessageType::from_u8(0).is_err());
        assert!(MessageType::from_u8(10).is_err());
    }

    #[test]
    fn the_prefix_tells_a_version_apart_from_three_bytes() {
        assert!(Header::check_prefix(&[0x52]).is_ok());
        assert!(Header::check_prefix(&[0x52, 0x50]).is_ok());
        assert_eq!(
            Header::check_prefix(&[0x52, 0x50, 1]),
            Err(ProtocolError::UnsupportedVersion(1))
        );
        assert_eq!(
            Header::check_prefix(&[0xde, 0xad]),
            Err(ProtocolError::BadMagic(0xdead))
        );
    }
}
