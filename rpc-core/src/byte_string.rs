//! `Vec<u8>` arguments and results as one byte string instead of a sequence of bytes.
//!
//! serde serializes a `Vec<u8>` element by element: one serializer call, and one write into
//! the output buffer, per byte; decoding visits each element in turn. For a 4 KiB payload that
//! is thousands of calls where one `memcpy` would do. The code `#[service]` generates wraps
//! every argument and result declared as `Vec<u8>` in [`AsBytes`] when it encodes and decodes
//! it as a [`ByteVec`]: `serialize_bytes` and `deserialize_bytes`, which the formats handle
//! in one piece (decoding from the frame, a byte string arrives as a slice of it and is copied
//! once into the vector).
//!
//! The bytes on the wire do not change: bincode and postcard write a byte string as its length
//! and the raw bytes, exactly as they write a sequence of `u8`; serde_json writes both as an
//! array of numbers. A peer built without this (or a hand-written client sending a plain
//! `Vec<u8>`) interoperates; the tests below pin it for every serializer.

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Serializes bytes as one byte string.
#[derive(Debug, Clone, Copy)]
pub struct AsBytes<'a>(pub &'a [u8]);

impl Serialize for AsBytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// A `Vec<u8>` deserialized from a byte string (or, from JSON, an array of numbers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ByteVec(pub Vec<u8>);

impl<'de> Deserialize<'de> for ByteVec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(ByteVecVisitor).map(ByteVec)
    }
}

struct ByteVecVisitor;

impl<'de> Visitor<'de> for ByteVecVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
        Ok(bytes.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(bytes)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        // Bounded by what the input holds, not by a length it claims.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64 * 1024));
        while let Some(byte) = seq.next_element::<u8>()? {
            out.push(byte);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serializer::SerializerKind;
    use bytes::BytesMut;

    const ALL: [SerializerKind; 3] = [SerializerKind::Bincode, SerializerKind::Postcard, SerializerKind::Json];

    fn encode<T: Serialize>(kind: SerializerKind, value: &T) -> Vec<u8> {
        let mut buf = BytesMut::new();
        kind.encode_into(value, &mut buf).unwrap();
        buf.to_vec()
    }

    #[test]
    fn the_wire_bytes_are_those_of_a_plain_vec() {
        for len in [0usize, 1, 127, 128, 300, 70_000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            for kind in ALL {
                let plain = encode(kind, &(bytes.clone(), 5u32));
                let fast = encode(kind, &(AsBytes(&bytes), 5u32));
                assert_eq!(plain, fast, "{kind:?}, {len} bytes");
                // Either decodes into the other.
                let (back, n): (ByteVec, u32) = kind.decode(&plain).unwrap();
                assert_eq!((back.0, n), (bytes.clone(), 5), "{kind:?}");
                let (plain_back, _): (Vec<u8>, u32) = kind.decode(&fast).unwrap();
                assert_eq!(plain_back, bytes, "{kind:?}");
            }
        }
    }

    #[test]
    fn a_lying_length_is_an_error_not_an_allocation() {
        // A length prefix of 2^60 with nothing after it.
        let mut hostile = vec![0xffu8];
        hostile.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(SerializerKind::Bincode.decode::<ByteVec>(&hostile).is_err());
        assert!(SerializerKind::Postcard
            .decode::<ByteVec>(&[0xff, 0xff, 0xff, 0xff, 0x0f])
            .is_err());
        assert!(SerializerKind::Json.decode::<ByteVec>(b"[1, 2, 300]").is_err());
    }
}
