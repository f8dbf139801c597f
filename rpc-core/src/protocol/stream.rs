//! The body of a [`Credit`](super::MessageType::Credit) frame, which also opens the arguments
//! of a stream request (the client's receive window).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::body::Body;
use crate::error::ProtocolError;

/// Bytes of an encoded [`Credit`].
pub const CREDIT_LEN: usize = 8;

/// Room granted to the sender of a stream's items: this many more messages and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Credit {
    /// Messages the sender may send beyond what it was granted before.
    pub messages: u32,
    /// Body bytes the sender may send beyond what it was granted before.
    pub bytes: u32,
}

impl Credit {
    /// The 8 wire bytes: messages then bytes, big-endian.
    pub fn encode(self) -> Bytes {
        let mut buf = BytesMut::with_capacity(CREDIT_LEN);
        buf.put_u32(self.messages);
        buf.put_u32(self.bytes);
        buf.freeze()
    }

    /// Parses a Credit frame's body (exactly [`CREDIT_LEN`] bytes).
    pub fn parse(mut body: &[u8]) -> Result<Self, ProtocolError> {
        if body.len() != CREDIT_LEN {
            return Err(ProtocolError::Malformed("a credit body is 8 bytes"));
        }
        Ok(Self {
            messages: body.get_u32(),
            bytes: body.get_u32(),
        })
    }

    /// Splits a stream request's arguments into the client's receive window (their first
    /// [`CREDIT_LEN`] bytes) and the encoded arguments after it.
    pub fn split_from(args: Body) -> Result<(Self, Body), ProtocolError> {
        let (front, rest) = args
            .split_front(CREDIT_LEN)
            .ok_or(ProtocolError::Truncated("stream window"))?;
        Ok((Self::parse(&front)?, rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_round_trips_and_opens_stream_arguments() {
        let credit = Credit {
            messages: 64,
            bytes: 1 << 20,
        };
        assert_eq!(Credit::parse(&credit.encode()).unwrap(), credit);
        assert!(Credit::parse(&[0; 7]).is_err());
        let args = Body::from(Bytes::from_static(b"args")).prepend(credit.encode());
        let (window, rest) = Credit::split_from(args).unwrap();
        assert_eq!(window, credit);
        assert_eq!(&rest.into_one()[..], b"args");
        // In pieces shorter than the window.
        let pieces = Body::from_parts([Bytes::from_static(&[0, 0, 0, 1]), Bytes::from_static(&[0, 0, 0, 2, 7])]);
        let (window, rest) = Credit::split_from(pieces).unwrap();
        assert_eq!((window.messages, window.bytes), (1, 2));
        assert_eq!(&rest.into_one()[..], &[7]);
        assert!(Credit::split_from(Body::from(Bytes::from_static(&[1, 2]))).is_err());
    }
}
