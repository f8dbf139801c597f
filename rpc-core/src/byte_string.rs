//! `Vec<u8>` and `Bytes` arguments and results as one byte string instead of a sequence of
//! bytes, shared with the body instead of copied where they are large.
//!
//! serde serializes a `Vec<u8>` element by element: one serializer call, and one write into
//! the output buffer, per byte; decoding visits each element in turn. For a 4 KiB payload that
//! is thousands of calls where one `memcpy` would do. The code `#[service]` generates sends
//! every argument and result declared as `Vec<u8>` or `Bytes` as a [`WireBytes`]
//! (`serialize_bytes`, which the formats write in one piece) and decodes it as a [`ByteVec`]
//! or a [`ByteSlice`] (`deserialize_bytes`: the byte string arrives as a slice of the frame).
//!
//! From 16 KiB on, the memory itself travels (see the crate's `shared_bytes` module): a
//! sent byte string becomes its own piece of the body, written to the socket from the caller's
//! memory, and a received `Bytes` is a slice of the frame. A received `Vec<u8>` is the vector
//! the socket was read into when the byte string ends the body (the transport reads such a
//! body in two pieces); elsewhere in a body it is copied once out of the frame, since a vector
//! owns its memory from its start.
//!
//! A `String` argument or result goes the same way ([`WireText`], [`TextString`]): it is sent
//! as a string in one write (shared from 16 KiB on), and received as a byte string where the
//! format allows (bincode and postcard write the two alike; msgpack's byte-string reader takes
//! a string), checked to be UTF-8 once, in place; JSON gets a string as before.
//!
//! A peer built without this (or a hand-written client sending a plain `Vec<u8>`)
//! interoperates: bincode and postcard write a byte string as its length and the raw bytes,
//! exactly as they write a sequence of `u8`, so their bytes on the wire do not change;
//! serde_json writes both as an array of numbers; msgpack writes a bin where a plain vector is
//! an array of numbers, and each of its readers takes the other's form. The tests below pin it
//! for every serializer.

use bytes::Bytes;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::shared_bytes;

/// Bytes to send as one byte string: owned, so that large ones can be written from their own
/// memory instead of being copied into the body.
#[derive(Debug, Clone)]
pub enum WireBytes {
    /// Small: copied into the body.
    Inline(Vec<u8>),
    /// A large vector, shared with the body; when it ends the body, the receiver reads it into
    /// a vector of its own.
    Vector(Bytes),
    /// `Bytes`, shared with the body when large enough.
    Shared(Bytes),
}

impl WireBytes {
    /// Sends a vector; one of 16 KiB or more becomes `Bytes` without a copy, whose memory
    /// goes to the pool of receive buffers once written (when its capacity fits a class of
    /// it): a server that answers with the vector it received, or a client that sends on the
    /// one it got, reads the next one into the same memory.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        match bytes.len() >= shared_bytes::SHARED_MIN {
            true => Self::Vector(crate::body_pool::into_bytes(bytes)),
            false => Self::Inline(bytes),
        }
    }

    /// Sends `Bytes`.
    pub fn from_bytes(bytes: Bytes) -> Self {
        Self::Shared(bytes)
    }
}

impl Serialize for WireBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Inline(bytes) => serializer.serialize_bytes(bytes),
            Self::Vector(bytes) => shared_bytes::with_offer(bytes, true, || serializer.serialize_bytes(bytes)),
            Self::Shared(bytes) => shared_bytes::with_offer(bytes, false, || serializer.serialize_bytes(bytes)),
        }
    }
}

/// A `String` to send: small ones as they are, large ones shared with the body like a vector
/// (see [`WireBytes`]).
#[derive(Debug, Clone)]
pub struct WireText(Text);

#[derive(Debug, Clone)]
enum Text {
    Inline(String),
    /// The string's memory as a vector's (see [`WireBytes::from_vec`]).
    Shared(Bytes),
}

impl WireText {
    /// Sends a string; one of 16 KiB or more is shared, not copied, like a vector.
    pub fn from_string(text: String) -> Self {
        match text.len() >= shared_bytes::SHARED_MIN {
            true => Self(Text::Shared(crate::body_pool::into_bytes(text.into_bytes()))),
            false => Self(Text::Inline(text)),
        }
    }
}

impl Serialize for WireText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Text::Inline(text) => serializer.serialize_str(text),
            Text::Shared(bytes) => {
                // Made from a `String`: always UTF-8 (checked, not assumed: once per 16 KiB
                // or more, against the copy it saves).
                let text = std::str::from_utf8(bytes).map_err(serde::ser::Error::custom)?;
                shared_bytes::with_offer(bytes, true, || serializer.serialize_str(text))
            }
        }
    }
}

/// A `String` deserialized from a string, read as a byte string where the format writes the
/// two alike (so that a large one can be the vector the socket filled), then checked to be
/// UTF-8 in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextString(pub String);

impl<'de> Deserialize<'de> for TextString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match deserializer.is_human_readable() {
            true => deserializer.deserialize_string(TextVisitor).map(TextString),
            false => deserializer.deserialize_bytes(TextVisitor).map(TextString),
        }
    }
}

/// A received byte string as a vector: the body's tail when `bytes` stands for it (no copy),
/// else a copy.
fn owned(bytes: &[u8]) -> Vec<u8> {
    shared_bytes::take_tail(bytes).map_or_else(|| bytes.to_vec(), Vec::from)
}

struct TextVisitor;

impl TextVisitor {
    fn checked<E: serde::de::Error>(bytes: Vec<u8>) -> Result<String, E> {
        String::from_utf8(bytes).map_err(|e| E::invalid_value(serde::de::Unexpected::Bytes(e.as_bytes()), &TextVisitor))
    }
}

impl<'de> Visitor<'de> for TextVisitor {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a UTF-8 string")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<String, E> {
        Ok(text.to_owned())
    }

    fn visit_string<E: serde::de::Error>(self, text: String) -> Result<String, E> {
        Ok(text)
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<String, E> {
        Self::checked(owned(bytes))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<String, E> {
        Self::checked(bytes)
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
        Ok(owned(bytes))
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

/// `Bytes` deserialized from a byte string: a large one decoded from a body held as `Bytes`
/// shares the body's memory; others are copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ByteSlice(pub Bytes);

impl<'de> Deserialize<'de> for ByteSlice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(ByteSliceVisitor).map(ByteSlice)
    }
}

struct ByteSliceVisitor;

impl<'de> Visitor<'de> for ByteSliceVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_borrowed_bytes<E: serde::de::Error>(self, bytes: &'de [u8]) -> Result<Bytes, E> {
        Ok(shared_bytes::slice_of_source(bytes)
            .or_else(|| shared_bytes::take_tail(bytes))
            .unwrap_or_else(|| Bytes::copy_from_slice(bytes)))
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Bytes, E> {
        Ok(shared_bytes::take_tail(bytes).unwrap_or_else(|| Bytes::copy_from_slice(bytes)))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(bytes))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Bytes, A::Error> {
        ByteVecVisitor.visit_seq(seq).map(Bytes::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Body;
    use crate::serializer::SerializerKind;
    use bytes::BytesMut;

    const ALL: [SerializerKind; 4] = SerializerKind::ALL;
    /// The formats that share large byte strings with the body.
    const SHARING: [SerializerKind; 3] = [
        SerializerKind::Bincode,
        SerializerKind::Postcard,
        SerializerKind::MsgPack,
    ];

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
                let fast = encode(kind, &(WireBytes::from_vec(bytes.clone()), 5u32));
                if kind != SerializerKind::MsgPack {
                    assert_eq!(plain, fast, "{kind:?}, {len} bytes");
                }
                // Either decodes into the other.
                let (back, n): (ByteVec, u32) = kind.decode(&plain).unwrap();
                assert_eq!((back.0, n), (bytes.clone(), 5), "{kind:?}");
                let (plain_back, _): (Vec<u8>, u32) = kind.decode(&fast).unwrap();
                assert_eq!(plain_back, bytes, "{kind:?}");
                let (slice, _): (ByteSlice, u32) = kind.decode(&plain).unwrap();
                assert_eq!(slice.0, bytes, "{kind:?}");
            }
        }
    }

    #[test]
    fn large_byte_strings_are_sent_and_received_without_a_copy() {
        let payload: Vec<u8> = (0..100_000).map(|i| (i % 253) as u8).collect();
        let small = vec![9u8; 100];
        for kind in ALL {
            let value = (
                7u8,
                WireBytes::from_vec(payload.clone()),
                WireBytes::from_vec(small.clone()),
                WireBytes::from_bytes(Bytes::from(payload.clone())),
                "end",
            );
            let shared = match &value.1 {
                WireBytes::Vector(b) => b.clone(),
                _ => panic!("a large vector is shared"),
            };
            let body = kind.encode_body(&value).unwrap();
            // The same bytes as copying, whatever the pieces.
            assert_eq!(&body.as_one()[..], &encode(kind, &value)[..], "{kind:?}");
            let one = body.as_one().into_owned();
            let decoded: (u8, ByteSlice, ByteVec, ByteSlice, String) = kind.decode_shared(&one).unwrap();
            assert_eq!(
                (decoded.1 .0.clone(), decoded.2 .0, decoded.3 .0.clone()),
                (
                    Bytes::from(payload.clone()),
                    small.clone(),
                    Bytes::from(payload.clone())
                )
            );
            if kind == SerializerKind::Json {
                assert_eq!(body.parts().count(), 1, "JSON writes numbers: nothing to share");
                continue;
            }
            // bincode, postcard and msgpack: the two large ones are pieces of their own, from the
            // sender's memory, and arrive as slices of the received body.
            let parts: Vec<&Bytes> = body.parts().collect();
            assert_eq!(parts.len(), 5, "{kind:?}");
            assert_eq!(parts[1].as_ptr(), shared.as_ptr(), "{kind:?}: sent from its own memory");
            let within = |b: &Bytes| one.as_ptr_range().contains(&b.as_ptr());
            assert!(
                within(&decoded.1 .0) && within(&decoded.3 .0),
                "{kind:?}: received as slices"
            );
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
        assert!(SerializerKind::MsgPack
            .decode::<ByteVec>(&[0xc6, 0xff, 0xff, 0xff, 0xff])
            .is_err());
        assert!(SerializerKind::MsgPack
            .decode::<Vec<u64>>(&[0xdd, 0xff, 0xff, 0xff, 0xff])
            .is_err());
    }

    #[test]
    fn a_flagged_body_that_does_not_end_as_flagged_decodes_joined() {
        let payload: Vec<u8> = (0..50_000).map(|i| (i % 249) as u8).collect();
        for kind in SHARING {
            let body = kind.encode_body(&(3u8, WireBytes::from_vec(payload.clone()))).unwrap();
            let head_len = body.head_len().unwrap();
            let one = body.into_one();
            let split_at = |at: usize| Body::with_tail([one.slice(..at), Bytes::copy_from_slice(&one[at..])]);
            // As sent: the vector takes the byte string.
            let (n, taken): (u8, ByteVec) = kind.decode_body(split_at(head_len)).unwrap();
            assert!(n == 3 && taken.0 == payload, "{kind:?}");
            // The split one byte early: the head does not end in the byte string's length.
            let (n, joined): (u8, ByteVec) = kind.decode_body(split_at(head_len - 1)).unwrap();
            assert!(n == 3 && joined.0 == payload, "{kind:?}");
            // A type that reads the byte string as a sequence never takes it.
            let (n, seq): (u8, Vec<u8>) = kind.decode_body(split_at(head_len)).unwrap();
            assert!(n == 3 && seq == payload, "{kind:?}");
            // A value that is not a byte string there at all fails as the joined body does.
            assert!(kind.decode_body::<(u8, u32)>(split_at(head_len)).is_err(), "{kind:?}");
        }
    }

    #[test]
    fn strings_keep_their_wire_bytes_and_large_ones_travel_as_vectors() {
        for len in [0usize, 5, 300, 70_000] {
            let text: String = "héllo wörld ".chars().cycle().take(len).collect();
            for kind in ALL {
                let plain = encode(kind, &(text.clone(), 5u32));
                let fast = encode(kind, &(WireText::from_string(text.clone()), 5u32));
                assert_eq!(plain, fast, "{kind:?}, {len} chars");
                let (back, n): (TextString, u32) = kind.decode(&plain).unwrap();
                assert_eq!((back.0, n), (text.clone(), 5), "{kind:?}");
                let (plain_back, _): (String, u32) = kind.decode(&fast).unwrap();
                assert_eq!(plain_back, text, "{kind:?}");
            }
        }
        let text: String = "ünïcode ".repeat(5_000);
        for kind in SHARING {
            let body = kind.encode_body(&(1u8, WireText::from_string(text.clone()))).unwrap();
            let head_len = body.head_len().expect("a large string ends the body as a vector");
            let one = body.into_one();
            let tail = Bytes::copy_from_slice(&one[head_len..]);
            let read_into = tail.as_ptr();
            let (n, back): (u8, TextString) = kind
                .decode_body(Body::with_tail([one.slice(..head_len), tail]))
                .unwrap();
            assert!(n == 1 && back.0 == text, "{kind:?}");
            assert_eq!(back.0.as_ptr(), read_into, "{kind:?}: the vector the socket filled");
        }
    }

    #[test]
    fn a_string_that_is_not_utf8_is_an_error() {
        for bad in [vec![0xff, 0xfe], vec![b'a'; 20_000].into_iter().chain([0xc3]).collect()] {
            for kind in SHARING {
                let body = kind.encode_body(&(WireBytes::from_vec(bad.clone()),)).unwrap();
                let decoded = kind.decode_body::<(TextString,)>(body.clone());
                assert!(decoded.is_err(), "{kind:?}, {} bytes", bad.len());
                if let Some(head_len) = body.head_len() {
                    let one = body.into_one();
                    let split = Body::with_tail([one.slice(..head_len), one.slice(head_len..)]);
                    assert!(kind.decode_body::<(TextString,)>(split).is_err(), "{kind:?}: as a tail");
                }
            }
        }
    }
}
