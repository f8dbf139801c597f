//! The per-thread buffer that request and reply bodies are encoded into.
//!
//! Every call encodes a body. Allocating a fresh buffer for each (and growing it by doubling
//! while the serializer writes) costs an allocation per call for small bodies, and for large
//! ones several reallocations, the copies between them and the page faults of touching fresh
//! memory. Instead each thread encodes into one buffer and hands out the encoded part as
//! `Bytes` (`split().freeze()`): small bodies are carved from a 64 KiB chunk, and the chunk is
//! reused as soon as every body carved from it is gone (written to the socket and dropped).
//! Measuring a body before writing it
//! ([`SerializerKind::encoded_size`](crate::serializer::SerializerKind::encoded_size)) runs the
//! serializer twice, which for a struct of many small fields is a fifth of the client's CPU.
//! So a body is written unmeasured while the chunk has [`UNMEASURED`] bytes of room; one that
//! outgrows the room (the buffer then grows and copies it) makes the thread measure the next
//! bodies, which are then written once into an allocation of their own size, until a measured
//! body is small again.
//!
//! The thread never keeps more than its current chunk: a large body takes its allocation
//! with it.

use std::cell::{Cell, RefCell};

use bytes::BytesMut;

use crate::body::Body;
use crate::shared_bytes::Claimed;

/// The size of a fresh chunk.
const CHUNK: usize = 64 * 1024;

/// A body is written without being measured first while the chunk has this much room (and
/// the thread has not just seen a body outgrow it).
pub(crate) const UNMEASURED: usize = 16 * 1024;

thread_local! {
    static ARENA: RefCell<BytesMut> = RefCell::new(BytesMut::with_capacity(CHUNK));
    /// Whether the next bodies are measured first (a recent one outgrew its room).
    static MEASURE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `fill` on this thread's buffer and returns what it wrote, with the shared byte strings
/// it recorded (each with its offset in what it wrote) as pieces of their own. `size` measures
/// the body, when the module's rule says to (see the module docs); the buffer then has that
/// much room. On error nothing is kept.
pub(crate) fn encode_with<E>(
    size: impl FnOnce() -> Result<usize, E>,
    fill: impl FnOnce(&mut BytesMut, &mut Vec<(usize, Claimed)>) -> Result<(), E>,
) -> Result<Body, E> {
    let mut shared = Vec::new();
    let written = ARENA.with(|arena| match arena.try_borrow_mut() {
        Ok(mut arena) => {
            let room = arena.capacity() - arena.len();
            let measured = room < UNMEASURED || MEASURE.with(Cell::get);
            if measured {
                arena.reserve(size()?.max(1));
            }
            match fill(&mut arena, &mut shared) {
                Ok(()) => {
                    let body = arena.split().freeze();
                    if !measured && body.len() > room {
                        MEASURE.with(|m| m.set(true));
                    } else if measured && body.len() < UNMEASURED / 2 {
                        MEASURE.with(|m| m.set(false));
                    }
                    Ok(body)
                }
                Err(e) => {
                    arena.clear();
                    Err(e)
                }
            }
        }
        // Re-entered (a `Serialize` impl that encodes a body itself): a buffer of its own.
        Err(_) => {
            let mut own = BytesMut::with_capacity(size()?);
            fill(&mut own, &mut shared)?;
            Ok(own.freeze())
        }
    })?;
    Ok(assemble(written, shared))
}

/// A body of `written` with the shared byte strings `shared` (each with its offset in
/// `written`) as pieces of their own; one that ends it, taken from a vector, is its tail.
pub(crate) fn assemble(written: bytes::Bytes, shared: Vec<(usize, Claimed)>) -> Body {
    if shared.is_empty() {
        return Body::from(written);
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
    match ends_in_vector {
        true => Body::with_tail(parts),
        false => Body::from_parts(parts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_carved_in_order_and_errors_leave_nothing() {
        let a = encode_with::<()>(
            || Ok(3),
            |b, _| {
                b.extend_from_slice(b"abc");
                Ok(())
            },
        )
        .unwrap();
        let failed = encode_with(
            || Ok(5),
            |b, _| {
                b.extend_from_slice(b"junk");
                Err("no")
            },
        );
        assert_eq!(failed, Err("no"));
        let big = encode_with::<()>(
            || Ok(200_000),
            |b, _| {
                b.extend_from_slice(&vec![7; 200_000]);
                Ok(())
            },
        )
        .unwrap();
        let c = encode_with::<()>(
            || Ok(2),
            |b, _| {
                b.extend_from_slice(b"de");
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(
            (&a.as_one()[..], big.len(), &c.as_one()[..]),
            (&b"abc"[..], 200_000, &b"de"[..])
        );
        assert!(big.as_one().iter().all(|&x| x == 7));
    }
}
