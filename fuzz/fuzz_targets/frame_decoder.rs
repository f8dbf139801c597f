//! Feeds arbitrary bytes, in arbitrary chunks, to the frame decoder; on a version mismatch,
//! builds the answer for the peer from what was read, as the server does.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use waypost_core::protocol::{version_rejection, FrameDecoder};
use waypost_core::ProtocolError;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, so splits vary too.
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut decoder = FrameDecoder::new(64 * 1024);
    let mut buf = BytesMut::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => assert!(frame.body.len() <= 64 * 1024),
                Ok(None) => break,
                Err(ProtocolError::UnsupportedVersion(_)) => {
                    let _ = version_rejection(&buf);
                    return;
                }
                Err(_) => return,
            }
        }
    }
});
