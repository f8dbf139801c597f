//! Answering a peer that speaks another protocol version.
//!
//! A server that receives a frame of another version answers once, in a layout the peer can
//! read, then closes the connection:
//!
//! * **version 1** (the 22-byte header: magic, version, type, serializer, status, request id,
//!   timeout, body length): a version-1 response to the request, status 10 (protocol error),
//!   whose body says which version this server speaks. A version-1 client reports it as the
//!   server rejecting the request, naming both versions.
//! * **any newer version**: a version-2 response with status
//!   [`UnsupportedVersion`](super::Status::UnsupportedVersion) and request id 0. Newer versions
//!   promise to read this frame, so the contract holds in both directions.
//!
//! A version-2 client that gets this answer fails its calls with
//! [`ProtocolError::VersionRejected`](crate::ProtocolError::VersionRejected). A version-1
//! server closes the connection on a version-2 frame without answering; the client then
//! reports the connection closed before any answer, hinting at a version mismatch.

use bytes::{BufMut, BytesMut};

use super::header::{Header, MessageType, Status, MAGIC, PROTOCOL_VERSION};

/// Length of a version-1 header.
const V1_HEADER_LEN: usize = 22;
/// Version-1 wire values.
const V1_REQUEST: u8 = 1;
const V1_RESPONSE: u8 = 2;
const V1_STATUS_PROTOCOL_ERROR: u8 = 10;

/// The frame that tells the peer whose frame starts `start` (magic and a version other than
/// ours) which version this build speaks; `None` when the peer's frame cannot be answered
/// (a version-1 frame that is not a request, or a version 0).
pub fn version_rejection(start: &[u8]) -> Option<BytesMut> {
    let version = *start.get(2)?;
    match version {
        0 => None,
        1 => {
            if *start.get(3)? != V1_REQUEST || start.len() < 14 {
                return None;
            }
            let message = format!(
                "this server speaks protocol version {PROTOCOL_VERSION} and cannot serve version 1 requests; upgrade the client"
            );
            let mut out = BytesMut::with_capacity(V1_HEADER_LEN + message.len());
            out.put_u16(MAGIC);
            out.put_u8(1);
            out.put_u8(V1_RESPONSE);
            out.put_u8(start[4]); // serializer
            out.put_u8(V1_STATUS_PROTOCOL_ERROR);
            out.put_slice(&start[6..14]); // request id
            out.put_u32(0); // timeout
            out.put_u32(message.len() as u32);
            out.put_slice(message.as_bytes());
            Some(out)
        }
        newer => {
            let message = format!(
                "this server speaks protocol version {PROTOCOL_VERSION} only, the request used version {newer}"
            );
            let mut header = Header::new(MessageType::Response, 0);
            header.status = Status::UnsupportedVersion;
            let mut out = BytesMut::new();
            super::encode_frame(header, message.as_bytes(), &mut out);
            Some(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FrameDecoder;

    fn v1_request(id: u64) -> Vec<u8> {
        let mut f = vec![0x52, 0x50, 1, V1_REQUEST, 1, 0];
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&1000u32.to_be_bytes());
        f.extend_from_slice(&4u32.to_be_bytes());
        f.extend_from_slice(&[0, 1, b's', 0]);
        f
    }

    #[test]
    fn a_version_1_request_gets_a_version_1_answer_naming_both_versions() {
        let answer = version_rejection(&v1_request(77)).unwrap();
        assert_eq!(&answer[0..4], &[0x52, 0x50, 1, V1_RESPONSE]);
        assert_eq!(answer[5], V1_STATUS_PROTOCOL_ERROR);
        assert_eq!(&answer[6..14], &77u64.to_be_bytes());
        let len = u32::from_be_bytes([answer[18], answer[19], answer[20], answer[21]]) as usize;
        let body = std::str::from_utf8(&answer[22..]).unwrap();
        assert_eq!(body.len(), len);
        assert!(body.contains("version 2") && body.contains("version 1"), "{body}");
    }

    #[test]
    fn a_newer_peer_gets_a_version_2_answer() {
        let mut answer = version_rejection(&[0x52, 0x50, 3, 1, 0, 0, 0, 0]).unwrap();
        let frame = FrameDecoder::default().decode(&mut answer).unwrap().unwrap();
        assert_eq!(frame.header.status, Status::UnsupportedVersion);
        assert_eq!(frame.header.message_type, MessageType::Response);
        assert!(std::str::from_utf8(&frame.body.as_one()).unwrap().contains("version 3"));
    }

    #[test]
    fn frames_that_cannot_be_answered() {
        assert!(version_rejection(&[0x52, 0x50]).is_none());
        assert!(version_rejection(&[0x52, 0x50, 0, 1]).is_none());
        let mut ping = v1_request(1);
        ping[3] = 3;
        assert!(version_rejection(&ping).is_none());
    }
}
