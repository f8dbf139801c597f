//! Byte strings shared with a body instead of copied into it or out of it.
//!
//! serde hands a serializer a byte string as `&[u8]` and a visitor a byte string as `&[u8]`,
//! so by serde alone a large payload is copied once into the encoded body and once out of the
//! received one. Two thread-local hand-offs, scoped to one `serialize` or one decode, remove
//! those copies where the caller owns the memory:
//!
//! * **Sending.** [`WireBytes`](crate::byte_string::WireBytes) holds its bytes as `Bytes` and
//!   *offers* them ([`with_offer`]) for the duration of its `serialize_bytes` call. The
//!   framework's encoders write through a sink that *claims* ([`claim`]) a write that is
//!   exactly the offered memory (same address, same length) and records it as a piece of the
//!   [`Body`](crate::Body) instead of copying it; the format itself writes the length prefix
//!   as usual, so the bytes on the wire do not change. Any other serializer (the hasher of the
//!   consistent-hash balancer, JSON, which writes numbers) never claims and copies as before.
//! * **Receiving.** While a body held as `Bytes` is decoded ([`with_source`]), a
//!   [`ByteSlice`](crate::byte_string::ByteSlice) that the format hands a slice of its input
//!   ([`slice_of_source`]) becomes a `Bytes` sharing the body's memory: a `Bytes` argument
//!   reaches the handler, and a `Bytes` result the caller, with no copy after the socket's.
//! * **Receiving into a vector.** A `Vec<u8>` owns its memory from its first byte, so it cannot
//!   be a slice of a body. A body that ends in a byte string is flagged on the wire and read as
//!   two pieces, the byte string in a vector of its own (see the crate's `large_body`). While
//!   the bytes before it are decoded ([`with_tail`]), with the byte string's length prefix
//!   rewritten to an empty one, the [`ByteVec`](crate::byte_string::ByteVec) or `ByteSlice`
//!   that meets that empty byte string at their very end takes the byte string
//!   ([`take_tail`]): the vector read from the socket becomes the argument or result.
//!
//! Only byte strings of [`SHARED_MIN`] bytes or more are shared: below that a copy costs less
//! than the extra piece in the vectored write, and nothing is allocated for them.

use std::cell::{Cell, RefCell};
use std::ptr::NonNull;

use bytes::Bytes;

/// The smallest byte string that is shared instead of copied.
pub(crate) const SHARED_MIN: usize = 16 * 1024;

/// A byte string the encoder's sink took as a piece of the body.
pub(crate) struct Claimed {
    /// Its memory.
    pub(crate) bytes: Bytes,
    /// It was a `Vec<u8>`: when it ends the body, the receiver reads it into a vector of its
    /// own (a `Bytes` is better off as a slice of a recycled buffer).
    pub(crate) vector: bool,
}

thread_local! {
    /// The byte string being serialized, while it is.
    static OFFER: RefCell<Option<Claimed>> = const { RefCell::new(None) };
    /// The body being decoded, while it is.
    static SOURCE: Cell<Option<NonNull<Bytes>>> = const { Cell::new(None) };
    /// A body's final byte string, while the bytes before it are decoded: the address where
    /// they end, and the byte string.
    static TAIL: RefCell<Option<(usize, Bytes)>> = const { RefCell::new(None) };
}

/// Runs `serialize` (which writes `bytes` as a byte string) with `bytes` offered to the
/// encoder's sink; `vector`: they were a `Vec<u8>`.
pub(crate) fn with_offer<R>(bytes: &Bytes, vector: bool, serialize: impl FnOnce() -> R) -> R {
    if bytes.len() < SHARED_MIN {
        return serialize();
    }
    let offer = Claimed {
        bytes: bytes.clone(),
        vector,
    };
    let previous = OFFER.with(|cell| cell.replace(Some(offer)));
    let result = serialize();
    OFFER.with(|offer| offer.replace(previous));
    result
}

fn is_offer(offer: &Option<Claimed>, written: &[u8]) -> bool {
    matches!(offer, Some(o) if o.bytes.as_ptr() == written.as_ptr() && o.bytes.len() == written.len())
}

/// The offered byte string, if `written` is exactly its memory (it is then the sink's to keep
/// as a piece of the body). Encoders call this for every write, so the test that rules out
/// nearly all of them (the length) is inlined and the thread-local is read only past it.
#[inline]
pub(crate) fn claim(written: &[u8]) -> Option<Claimed> {
    if written.len() < SHARED_MIN {
        return None;
    }
    claim_large(written)
}

#[inline(never)]
fn claim_large(written: &[u8]) -> Option<Claimed> {
    OFFER.with(|offer| {
        let mut offer = offer.borrow_mut();
        is_offer(&offer, written).then(|| offer.take()).flatten()
    })
}

/// Whether `written` is exactly the offered byte string (a sink that counts the body's size
/// leaves it out: it will not be copied). Inlined like [`claim`].
#[inline]
pub(crate) fn is_offered(written: &[u8]) -> bool {
    written.len() >= SHARED_MIN && is_offered_large(written)
}

#[inline(never)]
fn is_offered_large(written: &[u8]) -> bool {
    OFFER.with(|offer| is_offer(&offer.borrow(), written))
}

/// Runs `decode` (which reads from `source`) with `source` available to [`slice_of_source`].
pub(crate) fn with_source<R>(source: &Bytes, decode: impl FnOnce() -> R) -> R {
    /// Puts the previous source back, also when `decode` panics.
    struct Restore(Option<NonNull<Bytes>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SOURCE.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SOURCE.with(|s| s.replace(Some(NonNull::from(source)))));
    decode()
}

/// `slice` as `Bytes` sharing the memory of the body being decoded, when it lies within it.
pub(crate) fn slice_of_source(slice: &[u8]) -> Option<Bytes> {
    if slice.len() < SHARED_MIN {
        return None;
    }
    let source = SOURCE.with(Cell::get)?;
    // SAFETY: the pointer was made from a `&Bytes` in `with_source`, whose borrow outlives
    // the `decode` closure this runs within (on this thread: the cell is thread-local), and
    // it is reset when that closure returns or unwinds.
    let source = unsafe { source.as_ref() };
    let range = source.as_ptr_range();
    let within = range.start <= slice.as_ptr() && slice.as_ptr_range().end <= range.end;
    within.then(|| source.slice_ref(slice))
}

/// Runs `decode` (which reads a body's bytes before its final byte string, ending at `end`)
/// with `tail` available to [`take_tail`]. Returns `decode`'s result and the tail when nothing
/// took it.
pub(crate) fn with_tail<R>(end: *const u8, tail: Bytes, decode: impl FnOnce() -> R) -> (R, Option<Bytes>) {
    /// Puts the previous tail back if `decode` panics (else that is done below).
    struct Restore(Option<Option<(usize, Bytes)>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(previous) = self.0.take() {
                TAIL.with(|t| t.replace(previous));
            }
        }
    }
    let mut restore = Restore(Some(TAIL.with(|t| t.replace(Some((end as usize, tail))))));
    let result = decode();
    let previous = restore.0.take().flatten();
    let left = TAIL.with(|t| t.replace(previous));
    (result, left.map(|(_, tail)| tail))
}

/// The body's final byte string, when `slice` is the empty byte string that stands for it (see
/// [`with_tail`]); once.
pub(crate) fn take_tail(slice: &[u8]) -> Option<Bytes> {
    if !slice.is_empty() {
        return None;
    }
    TAIL.with(|t| {
        let mut t = t.borrow_mut();
        match &*t {
            Some((end, _)) if *end == slice.as_ptr() as usize => t.take().map(|(_, tail)| tail),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_offered_memory_is_claimed_and_only_while_offered() {
        let big = Bytes::from(vec![1u8; SHARED_MIN]);
        let copy = big.to_vec();
        with_offer(&big, true, || {
            assert!(is_offered(&big));
            assert!(!is_offered(&copy), "same bytes elsewhere are not the offer");
            assert!(claim(&big[1..]).is_none(), "a part is not the offer");
            let claimed = claim(&big).unwrap();
            assert_eq!((claimed.bytes.as_ptr(), claimed.vector), (big.as_ptr(), true));
            assert!(claim(&big).is_none(), "claimed once");
        });
        let small = Bytes::from(vec![1u8; SHARED_MIN - 1]);
        with_offer(&small, false, || {
            assert!(claim(&small).is_none(), "small ones are copied")
        });
        with_offer(&big, false, || {});
        assert!(claim(&big).is_none(), "withdrawn after serializing");
    }

    #[test]
    fn slices_of_the_source_share_its_memory() {
        let body = Bytes::from(vec![2u8; 3 * SHARED_MIN]);
        let elsewhere = vec![2u8; 2 * SHARED_MIN];
        with_source(&body, || {
            let inner = &body[10..10 + SHARED_MIN];
            let shared = slice_of_source(inner).unwrap();
            assert_eq!(shared.as_ptr(), inner.as_ptr());
            assert!(slice_of_source(&elsewhere).is_none());
            assert!(
                slice_of_source(&body[..SHARED_MIN - 1]).is_none(),
                "small ones are copied"
            );
        });
        assert!(
            slice_of_source(&body[..SHARED_MIN]).is_none(),
            "no source after decoding"
        );
    }
}
