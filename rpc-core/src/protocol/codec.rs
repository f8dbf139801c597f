//! Incremental frame decoding and frame encoding.

use bytes::{BufMut, BytesMut};

use super::header::{Header, HEADER_LEN};
use crate::body::Body;
use crate::error::ProtocolError;

/// Largest body accepted unless configured otherwise: 16 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// One decoded frame: its header and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The fixed header.
    pub header: Header,
    /// The body, `header.body_len` bytes: one piece, or two when the frame was flagged
    /// [`flags::TAIL`](super::flags::TAIL) and read as its head and its byte string.
    pub body: Body,
}

/// Appends one frame (header and body) to `dst`, setting the header's body length from `body`.
pub fn encode_frame(mut header: Header, body: &[u8], dst: &mut BytesMut) {
    header.body_len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    dst.reserve(HEADER_LEN + body.len());
    header.write_to(dst);
    dst.put_slice(body);
}

/// Splits a byte stream into frames.
///
/// Feed it the connection's read buffer after every read; call [`FrameDecoder::decode`] until it
/// returns `Ok(None)`. The magic and version are checked from the first three bytes and the
/// rest of the header as soon as its 24 bytes are there, so a bad magic, version or length is
/// reported before any memory is reserved for the body.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_body_len: usize,
    /// Header of the frame whose body is still arriving.
    pending: Option<Header>,
}

impl FrameDecoder {
    /// A decoder that rejects bodies longer than `max_body_len` bytes.
    pub fn new(max_body_len: usize) -> Self {
        Self {
            max_body_len,
            pending: None,
        }
    }

    /// The largest body this decoder accepts.
    pub fn max_body_len(&self) -> usize {
        self.max_body_len
    }

    /// Whether a header has been taken whose body has not fully arrived.
    pub fn is_mid_frame(&self) -> bool {
        self.pending.is_some()
    }

    /// Takes the header of the frame whose body is still arriving, for a reader that reads
    /// that body itself (into memory of its own) and makes the frame.
    pub fn take_pending(&mut self) -> Option<Header> {
        self.pending.take()
    }

    /// The body length of the frame whose header has been taken and whose body is still
    /// arriving: what the reader should make room for (the length was checked against the
    /// maximum, so the room is bounded).
    pub fn pending_body_len(&self) -> Option<usize> {
        self.pending.map(|h| h.body_len as usize)
    }

    /// The header of the frame whose body is still arriving.
    pub fn pending_header(&self) -> Option<&Header> {
        self.pending.as_ref()
    }

    /// Takes the next complete frame out of `src`, if one is there.
    ///
    /// Returns `Ok(None)` when more bytes are needed; the bytes already read stay in `src`.
    /// After an error the stream is unusable and the connection should be closed; on
    /// [`ProtocolError::UnsupportedVersion`] `src` still starts with the peer's frame, for
    /// [`version_rejection`](super::version_rejection).
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        let header = match self.pending {
            Some(header) => header,
            None => {
                // Magic and version are checked from the first bytes: another version's
                // header may be shorter than ours.
                Header::check_prefix(&src[..src.len().min(3)])?;
                if src.len() < HEADER_LEN {
                    return Ok(None);
                }
                let header = Header::parse(&src[..HEADER_LEN], self.max_body_len)?;
                bytes::Buf::advance(src, HEADER_LEN);
                self.pending = Some(header);
                header
            }
        };
        let body_len = header.body_len as usize;
        if src.len() < body_len {
            // The caller reserves room for the rest (see `pending_body_len`), once it may.
            return Ok(None);
        }
        self.pending = None;
        let body = src.split_to(body_len).freeze().into();
        Ok(Some(Frame { header, body }))
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{MessageType, Status, MAGIC, PROTOCOL_VERSION};

    fn frame(id: u64, body: &[u8]) -> BytesMut {
        let mut header = Header::new(MessageType::Request, id);
        header.serializer = 1;
        header.timeout_ms = 250;
        let mut buf = BytesMut::new();
        encode_frame(header, body, &mut buf);
        buf
    }

    #[test]
    fn round_trips_a_frame() {
        let mut buf = frame(7, b"hello");
        let mut dec = FrameDecoder::default();
        let got = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(got.header.request_id, 7);
        assert_eq!(got.header.timeout_ms, 250);
        assert_eq!(got.header.serializer, 1);
        assert_eq!(got.header.message_type, MessageType::Request);
        assert_eq!(got.header.flags, 0);
        assert_eq!(got.header.status, Status::Ok);
        assert_eq!(&got.body.as_one()[..], b"hello");
        assert!(buf.is_empty());
        assert!(dec.decode(&mut buf).unwrap().is_none());
    }

    #[test]
    fn header_layout_is_big_endian_and_24_bytes() {
        let mut header = Header::new(MessageType::Request, 0x0102_0304_0506_0708);
        header.serializer = 1;
        header.timeout_ms = 250;
        header.flags = crate::protocol::flags::END_OF_STREAM;
        let mut buf = BytesMut::new();
        encode_frame(header, b"xy", &mut buf);
        assert_eq!(buf.len(), HEADER_LEN + 2);
        assert_eq!(&buf[0..2], &MAGIC.to_be_bytes());
        assert_eq!(buf[2], PROTOCOL_VERSION);
        assert_eq!(buf[3], MessageType::Request.to_u8());
        assert_eq!(buf[4], 1, "serializer");
        assert_eq!(buf[5], Status::Ok.to_u8());
        assert_eq!(buf[6], 2, "flags");
        assert_eq!(buf[7], 0, "reserved");
        assert_eq!(&buf[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&buf[16..20], &250u32.to_be_bytes());
        assert_eq!(&buf[20..24], &2u32.to_be_bytes());
    }

    #[test]
    fn partial_reads_byte_by_byte() {
        let whole = frame(42, &[9u8; 300]);
        let mut dec = FrameDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = None;
        for (i, b) in whole.iter().enumerate() {
            buf.put_u8(*b);
            let got = dec.decode(&mut buf).unwrap();
            if i + 1 < whole.len() {
                assert!(got.is_none(), "frame complete too early at byte {i}");
            } else {
                out = got;
            }
        }
        let out = out.expect("frame after last byte");
        assert_eq!(out.header.request_id, 42);
        assert_eq!(out.body.len(), 300);
    }

    #[test]
    fn coalesced_frames_in_one_read() {
        let mut buf = BytesMut::new();
        for id in 0..5u64 {
            buf.extend_from_slice(&frame(id, &vec![id as u8; id as usize * 3]));
        }
        // plus half of a sixth frame
        let sixth = frame(5, b"tail-of-stream");
        buf.extend_from_slice(&sixth[..10]);
        let mut dec = FrameDecoder::default();
        for id in 0..5u64 {
            let f = dec.decode(&mut buf).unwrap().unwrap();
            assert_eq!(f.header.request_id, id);
            assert_eq!(f.body.len(), id as usize * 3);
        }
        assert!(dec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&sixth[10..]);
        let f = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&f.body.as_one()[..], b"tail-of-stream");
    }

    #[test]
    fn rejects_bad_magic() {
        let mut buf = frame(1, b"x");
        buf[0] = 0xde;
        buf[1] = 0xad;
        let err = FrameDecoder::default().decode(&mut buf).unwrap_err();
        assert!(matches!(err, ProtocolError::BadMagic(0xdead)), "{err}");
    }

    #[test]
    fn rejects_unknown_version() {
        let mut buf = frame(1, b"x");
        buf[2] = 99;
        let err = FrameDecoder::default().decode(&mut buf).unwrap_err();
        assert!(matches!(err, ProtocolError::UnsupportedVersion(99)), "{err}");
        assert_eq!(buf.len(), HEADER_LEN + 1, "the frame stays for the rejection");
    }

    #[test]
    fn rejects_another_version_from_its_first_three_bytes() {
        // A version-1 ping is 22 bytes: shorter than our header. It must not wait for more.
        let mut buf = BytesMut::from(&[0x52, 0x50, 1][..]);
        let err = FrameDecoder::default().decode(&mut buf).unwrap_err();
        assert!(matches!(err, ProtocolError::UnsupportedVersion(1)), "{err}");
    }

    #[test]
    fn rejects_unknown_message_type_but_passes_extensions_on() {
        let mut buf = frame(1, b"x");
        buf[3] = 10;
        let err = FrameDecoder::default().decode(&mut buf).unwrap_err();
        assert!(matches!(err, ProtocolError::UnknownMessageType(10)), "{err}");
        let mut buf = frame(1, b"x");
        buf[3] = 200;
        let frame = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.header.message_type, MessageType::Extension(200));
    }

    #[test]
    fn rejects_oversized_body_before_allocating() {
        // A header announcing a 4 GiB - 1 body, and nothing else.
        let mut header = Header::new(MessageType::Request, 1);
        header.body_len = u32::MAX;
        let mut buf = BytesMut::with_capacity(HEADER_LEN);
        header.write_to(&mut buf);
        let before = buf.capacity();
        let err = FrameDecoder::new(1024).decode(&mut buf).unwrap_err();
        assert!(
            matches!(err, ProtocolError::FrameTooLarge { len, max: 1024 } if len == u32::MAX as usize),
            "{err}"
        );
        assert_eq!(buf.capacity(), before, "no memory reserved for the body");
    }

    #[test]
    fn accepts_body_of_exactly_the_maximum() {
        let mut buf = frame(3, &[1u8; 64]);
        let f = FrameDecoder::new(64).decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.body.len(), 64);
        let mut buf = frame(3, &[1u8; 65]);
        assert!(FrameDecoder::new(64).decode(&mut buf).is_err());
    }
}
