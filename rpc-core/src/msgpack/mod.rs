//! The default serializer: MessagePack with structs as maps, so that a service can change.
//!
//! A registry-based fleet runs two versions of a service during every rollout. bincode and
//! postcard write a struct as its fields one after the other with nothing marking where one
//! ends, so a field added in version 2 makes the versions misread each other, sometimes into a
//! wrong value. This format writes every value with its type and length (MessagePack, so any
//! MessagePack library can read it), structs as maps from field name to value and enum
//! variants by name, which makes additive changes safe both ways with plain serde types:
//!
//! * **A struct field added** with `#[serde(default)]` or of an `Option` type: an old reader
//!   skips the key it does not know; a new reader of an old message gets the default.
//! * **An enum variant added**: a reader that does not know it fails that value with an error
//!   naming the enum and the variant, never another value (variants travel by name).
//! * **A last argument (or tuple element) added of an `Option` type**: an old reader skips the
//!   extra element; a new reader of an old message sees `None` (see [`read`]).
//! * **A change that is not additive** (a field's type changed, a required field missing): an
//!   error naming the field and its struct, never a wrong value. Field order does not matter.
//!
//! The encoding, in MessagePack terms (the smallest form of each is written):
//!
//! | Rust (serde)                        | MessagePack                                      |
//! |-------------------------------------|--------------------------------------------------|
//! | `bool`, integers, `f32`, `f64`      | bool, int/uint, float 32/64                      |
//! | `char`, `str`                       | str                                              |
//! | byte strings (`serialize_bytes`)    | bin (a reader of a sequence of `u8` accepts it)  |
//! | `None`, `()`, unit structs          | nil (`Some(v)` is `v`)                           |
//! | sequences, tuples, tuple structs    | array                                            |
//! | maps                                | map                                              |
//! | structs                             | map from field name (str) to value               |
//! | unit variant                        | str: the variant's name                          |
//! | other variants                      | map of one entry: the variant's name to its data |
//! | newtype structs                     | the inner value                                  |
//! | `u128`, `i128` beyond 64 bits       | fixext 16 of extension type 1 (`u128`) or 2      |
//! |                                     | (`i128`): the 16 bytes, big-endian               |
//!
//! MessagePack's integers stop at 64 bits. A 128-bit integer that fits in 64 is written as one
//! (any reader reads it as a number); a wider one is an extension value of 16 bytes, which any
//! MessagePack reader can skip or hand over as its type and bytes. This reader also reads
//! either extension where a 128-bit integer is expected, and refuses every other extension
//! type with an error naming it.
//!
//! Like every serializer of the framework it writes large byte strings as pieces of their own
//! (see the crate's `shared_bytes`) through [`write::Output`], and reads byte strings and
//! strings as slices of its input. Decoding is bounded by the input: a length larger than what
//! is left is an error before anything is allocated, and nesting deeper than
//! [`read::MAX_DEPTH`] is an error, not a stack overflow.

mod error;
mod marker;
pub(crate) mod read;
pub(crate) mod write;

/// The header of a byte string of `len` bytes as this format writes it, and of an empty
/// one (the same type), for a `len` of 256 bytes or more; `text`: a string, else a byte
/// string. This lets the receiver of a body that ends in a large byte string decode the body
/// with that byte string made empty (see `SerializerKind::decode_body`).
pub(crate) fn long_string_header(len: usize, text: bool) -> Option<(Vec<u8>, &'static [u8])> {
    let (short, long, empty): (u8, u8, &'static [u8]) = match text {
        true => (marker::STR16, marker::STR32, &[marker::FIXSTR]),
        false => (marker::BIN16, marker::BIN32, &[marker::BIN8, 0]),
    };
    let mut header = Vec::with_capacity(5);
    match len {
        0..=0xff => return None,
        0x100..=0xffff => {
            header.push(short);
            header.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            header.push(long);
            header.extend_from_slice(&u32::try_from(len).ok()?.to_be_bytes());
        }
    }
    Some((header, empty))
}

#[cfg(test)]
mod tests;
