//! The per-thread buffer that request and reply bodies are encoded into.
//!
//! Every call encodes a body. Allocating a fresh buffer for each (and growing it by doubling
//! while the serializer writes) costs an allocation per call for small bodies, and for large
//! ones several reallocations, the copies between them and the page faults of touching fresh
//! memory. Instead each thread encodes into one buffer and hands out the encoded part as
//! `Bytes` (`split().freeze()`): small bodies are carved from a 64 KiB chunk, and the chunk is
//! reused as soon as every body carved from it is gone (written to the socket and dropped).
//! The caller reserves the body's exact size when the format can say it up front
//! ([`SerializerKind::encoded_size`](crate::serializer::SerializerKind::encoded_size)), so a
//! large body is written once into an allocation of its own size.
//!
//! The thread never keeps more than its current chunk: a large body takes its allocation
//! with it.

use std::cell::RefCell;

use bytes::BytesMut;

use crate::body::Body;
use crate::shared_bytes::Claimed;

/// The size of a fresh chunk.
const CHUNK: usize = 64 * 1024;

thread_local! {
    static ARENA: RefCell<BytesMut> = RefCell::new(BytesMut::with_capacity(CHUNK));
}

/// Runs `fill` on this thread's buffer with at least `reserve` bytes free and returns what it
/// wrote, with the shared byte strings it recorded (each with its offset in what it wrote)
/// as pieces of their own. On error nothing is kept.
pub(crate) fn encode_with<E>(
    reserve: usize,
    fill: impl FnOnce(&mut BytesMut, &mut Vec<(usize, Claimed)>) -> Result<(), E>,
) -> Result<Body, E> {
    let mut shared = Vec::new();
    let written = ARENA.with(|arena| match arena.try_borrow_mut() {
        Ok(mut arena) => {
            arena.reserve(reserve.max(1));
            match fill(&mut arena, &mut shared) {
                Ok(()) => Ok(arena.split().freeze()),
                Err(e) => {
                    arena.clear();
                    Err(e)
                }
            }
        }
        // Re-entered (a `Serialize` impl that encodes a body itself): a buffer of its own.
        Err(_) => {
            let mut own = BytesMut::with_capacity(reserve);
            fill(&mut own, &mut shared)?;
            Ok(own.freeze())
        }
    })?;
    if shared.is_empty() {
        return Ok(Body::from(written));
    }
    // A vector with nothing written after it is the body's tail.
    let ends_in_vector = shared
        .last()
        .is_some_and(|(at, piece)| *at == written.len() && piece.vector);
    let mut parts = Vec::with_capacity(2 * shared.len() + 1);
    let mut start = 0;
    for (at, piece) in shared {
        parts.push(written.slice(start..at));
        parts.push(piece.bytes);
        start = at;
    }
    parts.push(written.slice(start..));
    Ok(match ends_in_vector {
        true => Body::with_tail(parts),
        false => Body::from_parts(parts),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_carved_in_order_and_errors_leave_nothing() {
        let a = encode_with::<()>(3, |b, _| {
            b.extend_from_slice(b"abc");
            Ok(())
        })
        .unwrap();
        let failed = encode_with(5, |b, _| {
            b.extend_from_slice(b"junk");
            Err("no")
        });
        assert_eq!(failed, Err("no"));
        let big = encode_with::<()>(200_000, |b, _| {
            b.extend_from_slice(&vec![7; 200_000]);
            Ok(())
        })
        .unwrap();
        let c = encode_with::<()>(2, |b, _| {
            b.extend_from_slice(b"de");
            Ok(())
        })
        .unwrap();
        assert_eq!(
            (&a.as_one()[..], big.len(), &c.as_one()[..]),
            (&b"abc"[..], 200_000, &b"de"[..])
        );
        assert!(big.as_one().iter().all(|&x| x == 7));
    }
}
