//! Pluggable serializers, chosen per frame by the header's serializer id.
//!
//! A client picks one serializer for its calls; the server decodes each request with the
//! serializer named in its header and answers with the same one, so clients using different
//! serializers can share a server.
//!
//! * **msgpack** (the default) writes every value with its type, structs as maps by field
//!   name and variants by name, so the two versions of a service that run side by side during
//!   a rollout understand each other when the newer one only added things (a field with
//!   `#[serde(default)]` or of an `Option` type, a variant, a method, a last `Option`
//!   argument), and fail with an error naming the field otherwise (see the crate's `msgpack`).
//! * **bincode** (2.x, serde mode, standard configuration) and **postcard** are fixed-schema:
//!   a struct is its fields one after the other with nothing marking where one ends, so every
//!   peer must run the same types. They are the most compact and cost a little less CPU.
//! * **json** is for debugging and for peers written in other languages.

use std::fmt;
use std::str::FromStr;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::body::Body;
use crate::error::{ProtocolError, RpcError};
use crate::msgpack;
use crate::shared_bytes;

/// One of the built-in serializers. The discriminant is the wire id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
#[non_exhaustive]
pub enum SerializerKind {
    /// bincode 2 with its serde support and the standard (varint) configuration. Fixed-schema:
    /// every peer must run the same types.
    Bincode = 1,
    /// postcard 1.x. Fixed-schema: every peer must run the same types.
    Postcard = 2,
    /// JSON through serde_json.
    Json = 3,
    /// MessagePack with structs as maps by field name and variants by name: tolerates
    /// additive changes of a service's types both ways.
    #[default]
    MsgPack = 4,
}

impl SerializerKind {
    /// Every serializer, in id order.
    pub const ALL: [SerializerKind; 4] = [Self::Bincode, Self::Postcard, Self::Json, Self::MsgPack];

    /// The serializer with this wire id.
    pub fn from_id(id: u8) -> Result<Self, ProtocolError> {
        match id {
            1 => Ok(Self::Bincode),
            2 => Ok(Self::Postcard),
            3 => Ok(Self::Json),
            4 => Ok(Self::MsgPack),
            other => Err(ProtocolError::UnknownSerializer(other)),
        }
    }

    /// The wire id.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The name used in configuration files: `msgpack`, `bincode`, `postcard` or `json`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bincode => "bincode",
            Self::Postcard => "postcard",
            Self::Json => "json",
            Self::MsgPack => "msgpack",
        }
    }

    /// Whether the format carries its types and field names, so that peers whose types differ
    /// by additive changes understand each other (msgpack, JSON); bincode and postcard need
    /// identical types on both sides.
    pub fn tolerates_additive_changes(self) -> bool {
        matches!(self, Self::MsgPack | Self::Json)
    }

    /// Appends the encoding of `value` to `dst`.
    pub fn encode_into<T: Serialize + ?Sized>(self, value: &T, dst: &mut BytesMut) -> Result<(), RpcError> {
        self.encode_to(value, Sink { dst, shared: None })
    }

    /// Appends the encoding of `value` to `dst`, except the byte strings it shares (see
    /// [`shared_bytes`](crate::shared_bytes)): each goes to `shared` with the offset in `dst`
    /// where it belongs.
    pub(crate) fn encode_sharing<T: Serialize + ?Sized>(
        self,
        value: &T,
        dst: &mut BytesMut,
        shared: &mut Vec<(usize, shared_bytes::Claimed)>,
    ) -> Result<(), RpcError> {
        self.encode_to(
            value,
            Sink {
                dst,
                shared: Some(shared),
            },
        )
    }

    fn encode_to<T: Serialize + ?Sized>(self, value: &T, sink: Sink<'_>) -> Result<(), RpcError> {
        let result = match self {
            Self::Bincode => {
                bincode::serde::encode_into_writer(value, sink, bincode::config::standard()).map_err(|e| e.to_string())
            }
            Self::Postcard => postcard::serialize_with_flavor(value, sink).map_err(|e| e.to_string()),
            Self::Json => serde_json::to_writer(sink.dst.writer(), value).map_err(|e| e.to_string()),
            Self::MsgPack => value
                .serialize(&mut msgpack::write::Encoder::new(sink))
                .map_err(|e| e.to_string()),
        };
        result.map_err(|e| RpcError::Encode(format!("{}: {e}", self.name())))
    }

    /// The encoding of `value` as a [`Body`]: carved from this thread's encode buffer (see
    /// `arena`), reserved at its exact size where the format can tell it up front (bincode,
    /// postcard), with the large byte strings it shares as pieces of their own.
    pub fn encode_body<T: Serialize + ?Sized>(self, value: &T) -> Result<Body, RpcError> {
        crate::arena::encode_with(
            || Ok(self.encoded_size(value)?.unwrap_or(SIZE_GUESS)),
            |buf, shared| self.encode_sharing(value, buf, shared),
        )
    }

    /// The size of `value`'s encoding without the byte strings it shares, when the format can
    /// tell without writing it (bincode and postcard count it; JSON cannot cheaply). Byte
    /// strings count in O(1).
    pub fn encoded_size<T: Serialize + ?Sized>(self, value: &T) -> Result<Option<usize>, RpcError> {
        let size = match self {
            Self::Bincode => {
                let mut counter = Counter(0);
                bincode::serde::encode_into_writer(value, &mut counter, bincode::config::standard())
                    .map(|()| Some(counter.0))
                    .map_err(|e| e.to_string())
            }
            Self::Postcard => postcard::serialize_with_flavor(value, Counter(0))
                .map(Some)
                .map_err(|e| e.to_string()),
            Self::Json => Ok(None),
            Self::MsgPack => {
                let mut counter = msgpack::write::Encoder::new(Counter(0));
                value
                    .serialize(&mut counter)
                    .map(|()| Some(counter.into_inner().0))
                    .map_err(|e| e.to_string())
            }
        };
        size.map_err(|e| RpcError::Encode(format!("{}: {e}", self.name())))
    }

    /// Decodes a whole value from a received body.
    ///
    /// A body read in two pieces (it ends in a byte string, see
    /// [`flags::TAIL`](crate::protocol::flags::TAIL)) is decoded from its first piece with the
    /// byte string's length prefix made an empty one, and the `Vec<u8>` (or `Bytes`) that
    /// decodes that empty byte string takes the second piece as it is: no copy. Should nothing
    /// take it (the sender flagged a body whose value does not end in a byte string), or the
    /// prefix not be the byte string's length, the pieces are joined and decoded as one.
    /// Anything else decodes as [`SerializerKind::decode_shared`] does.
    pub fn decode_body<T: DeserializeOwned>(self, body: Body) -> Result<T, RpcError> {
        let (head, tail) = match body.into_head_and_tail() {
            Ok(split) => split,
            Err(body) => return self.decode_shared(&body.into_one()),
        };
        let tail = match self.without_length_of(&head, tail.len()) {
            Some(rewritten) => {
                let end = rewritten.as_ptr_range().end;
                match shared_bytes::with_tail(end, tail, || self.decode_shared(&rewritten)) {
                    (result, None) => return result,
                    (_, Some(untaken)) => untaken,
                }
            }
            None => tail,
        };
        self.decode_shared(&Body::from_parts([head, tail]).into_one())
    }

    /// `head` with the length prefix it ends in, if that is the encoding of `len` in this
    /// format, replaced by the encoding of an empty byte string.
    fn without_length_of(self, head: &[u8], len: usize) -> Option<Bytes> {
        let mut prefix = [0u8; 10];
        let prefix_len = match self {
            Self::Bincode => {
                // bincode's standard varint: a marker byte, then the value little-endian.
                let (marker, width) = match len {
                    0..=250 => return None,
                    251..=0xffff => (251, 2),
                    0x1_0000..=0xffff_ffff => (252, 4),
                    _ => (253, 8),
                };
                prefix[0] = marker;
                prefix[1..=width].copy_from_slice(&(len as u64).to_le_bytes()[..width]);
                1 + width
            }
            Self::Postcard => {
                // LEB128: seven bits per byte, low first.
                let (mut rest, mut n) = (len as u64, 0);
                loop {
                    prefix[n] = (rest & 0x7f) as u8 | if rest > 0x7f { 0x80 } else { 0 };
                    n += 1;
                    rest >>= 7;
                    if rest == 0 {
                        break n;
                    }
                }
            }
            Self::Json => return None,
            Self::MsgPack => {
                // A byte string, or a string (`String` results and arguments are sent as one).
                return [false, true].into_iter().find_map(|text| {
                    let (header, empty) = msgpack::long_string_header(len, text)?;
                    let kept = head.strip_suffix(&header[..])?;
                    let mut rewritten = BytesMut::with_capacity(kept.len() + empty.len());
                    rewritten.extend_from_slice(kept);
                    rewritten.extend_from_slice(empty);
                    Some(rewritten.freeze())
                });
            }
        };
        let kept = head.strip_suffix(&prefix[..prefix_len])?;
        let mut rewritten = BytesMut::with_capacity(kept.len() + 1);
        rewritten.extend_from_slice(kept);
        // An empty byte string is a single zero byte in both formats.
        rewritten.put_u8(0);
        Some(rewritten.freeze())
    }

    /// Decodes a whole value from the first `len` bytes of `src`, where a large
    /// [`ByteSlice`](crate::byte_string::ByteSlice) shares `src`'s memory (a stream's item in
    /// its batch).
    pub(crate) fn decode_prefix<T: DeserializeOwned>(self, src: &Bytes, len: usize) -> Result<T, RpcError> {
        let part = &src[..len];
        match len < shared_bytes::SHARED_MIN {
            // Too short to hold a byte string worth sharing.
            true => self.decode(part),
            false => shared_bytes::with_source(src, || self.decode(part)),
        }
    }

    /// Decodes a whole value from a body held as `Bytes`, where a large
    /// [`ByteSlice`](crate::byte_string::ByteSlice) shares the body's memory.
    pub fn decode_shared<T: DeserializeOwned>(self, src: &Bytes) -> Result<T, RpcError> {
        shared_bytes::with_source(src, || self.decode(src))
    }

    /// Decodes a whole value from `src`; trailing bytes are an error where the format can tell.
    pub fn decode<T: DeserializeOwned>(self, src: &[u8]) -> Result<T, RpcError> {
        let result = match self {
            Self::Bincode => match decode_bincode(src) {
                Ok((value, used)) if used == src.len() => Ok(value),
                Ok((_, used)) => Err(format!("{} trailing bytes", src.len() - used)),
                Err(e) => Err(e.to_string()),
            },
            Self::Postcard => match postcard::take_from_bytes(src) {
                Ok((value, [])) => Ok(value),
                Ok((_, rest)) => Err(format!("{} trailing bytes", rest.len())),
                Err(e) => Err(e.to_string()),
            },
            Self::Json => serde_json::from_slice(src).map_err(|e| e.to_string()),
            Self::MsgPack => msgpack::read::decode(src).map_err(|e| e.to_string()),
        };
        result.map_err(|e| RpcError::Decode(format!("{}: {}", self.name(), quoted_briefly(e))))
    }
}

/// A decode error's message is sent back to the caller, and serde's messages quote the value
/// they could not take (`invalid type: string "...", expected u64`) whole: longer than this,
/// it is cut, so that a 15 MB string in the wrong place is not echoed back in full.
const MAX_DECODE_MESSAGE: usize = 256;

/// `message`, cut to [`MAX_DECODE_MESSAGE`] bytes (at a character boundary) with a note of how
/// much was left out.
fn quoted_briefly(mut message: String) -> String {
    if message.len() <= MAX_DECODE_MESSAGE {
        return message;
    }
    let mut end = MAX_DECODE_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let left_out = message.len() - end;
    message.truncate(end);
    message.push_str(&format!("... ({left_out} more bytes)"));
    message
}

/// The room reserved for a JSON body before it is written (it grows as needed).
const SIZE_GUESS: usize = 256;

/// The encoders' output: bytes are appended to `dst`, and with `shared`, a write that is a
/// shared byte string is recorded there (with its offset) instead of copied.
struct Sink<'a> {
    dst: &'a mut BytesMut,
    shared: Option<&'a mut Vec<(usize, shared_bytes::Claimed)>>,
}

impl Sink<'_> {
    /// Appends `bytes`, or records them as a piece of the body when they are the offered
    /// shared byte string.
    #[inline]
    fn put_shared(&mut self, bytes: &[u8]) {
        if bytes.len() >= shared_bytes::SHARED_MIN {
            if let Some(shared) = self.shared.as_deref_mut() {
                if let Some(piece) = shared_bytes::claim(bytes) {
                    shared.push((self.dst.len(), piece));
                    return;
                }
            }
        }
        self.dst.extend_from_slice(bytes);
    }
}

impl msgpack::write::Output for Sink<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.dst.extend_from_slice(bytes);
    }

    #[inline]
    fn payload(&mut self, bytes: &[u8]) {
        self.put_shared(bytes);
    }

    #[inline]
    fn position(&self) -> usize {
        self.dst.len()
    }

    fn patch(&mut self, at: usize, bytes: [u8; 4]) {
        self.dst[at..at + 4].copy_from_slice(&bytes);
    }
}

impl bincode::enc::write::Writer for Sink<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.put_shared(bytes);
        Ok(())
    }
}

impl postcard::ser_flavors::Flavor for Sink<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.dst.put_u8(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.put_shared(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Counts the bytes an encoding writes, leaving out the byte strings it will share.
struct Counter(usize);

impl Counter {
    #[inline]
    fn count(&mut self, bytes: &[u8]) {
        if !shared_bytes::is_offered(bytes) {
            self.0 += bytes.len();
        }
    }
}

impl msgpack::write::Output for Counter {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }

    #[inline]
    fn payload(&mut self, bytes: &[u8]) {
        self.count(bytes);
    }

    fn position(&self) -> usize {
        self.0
    }

    fn patch(&mut self, _: usize, _: [u8; 4]) {}
}

impl bincode::enc::write::Writer for Counter {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.count(bytes);
        Ok(())
    }
}

impl postcard::ser_flavors::Flavor for Counter {
    type Output = usize;

    #[inline]
    fn try_push(&mut self, _: u8) -> postcard::Result<()> {
        self.0 += 1;
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.count(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.0)
    }
}

/// Decodes bincode with a byte limit just above the input's length.
///
/// The borrowing decoder, although `T` owns its data: it hands a byte string to the visitor
/// as a slice of the input, which [`ByteVec`](crate::byte_string::ByteVec) copies once,
/// where the owning decoder first zero-fills a vector and then copies into it.
///
/// bincode trusts a length prefix and allocates before it reads, so without a limit a few
/// hostile bytes claiming a 2^60-byte string abort the process. An honest value never claims
/// more bytes than the input holds; the limit (a compile-time constant, hence the tiers) lets
/// a lying prefix claim at most 16 times the input, and never more than the 4 GiB a frame
/// length can announce.
fn decode_bincode<T: DeserializeOwned>(src: &[u8]) -> Result<(T, usize), bincode::error::DecodeError> {
    macro_rules! with_limit {
        ($limit:expr) => {
            bincode::serde::borrow_decode_from_slice(src, bincode::config::standard().with_limit::<{ $limit }>())
        };
    }
    match src.len() {
        0..=4096 => with_limit!(1 << 12),
        4097..=65_536 => with_limit!(1 << 16),
        65_537..=1_048_576 => with_limit!(1 << 20),
        1_048_577..=16_777_216 => with_limit!(1 << 24),
        16_777_217..=268_435_456 => with_limit!(1 << 28),
        _ => with_limit!(1 << 32),
    }
}

impl fmt::Display for SerializerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a serializer name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not one of msgpack, bincode, postcard, json")]
pub struct UnknownSerializerName(pub String);

impl FromStr for SerializerKind {
    type Err = UnknownSerializerName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownSerializerName(s.to_owned()))
    }
}

/// Read by name (`msgpack`, `bincode`, `postcard`, `json`), as configuration files write it.
impl<'de> serde::Deserialize<'de> for SerializerKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors_quote_a_long_value_briefly() {
        let long = format!("[\"{}\"]", "x".repeat(100_000));
        {
            let kind = SerializerKind::Json;
            let err = kind.decode::<(u64,)>(long.as_bytes()).unwrap_err().to_string();
            assert!(err.len() < 400, "{kind}: {} bytes", err.len());
            assert!(err.contains("more bytes)"), "{kind}: {err}");
        }
        let mut encoded = BytesMut::new();
        SerializerKind::MsgPack
            .encode_into(&"é".repeat(50_000), &mut encoded)
            .unwrap();
        let err = SerializerKind::MsgPack.decode::<u64>(&encoded).unwrap_err().to_string();
        assert!(err.len() < 400 && err.contains("more bytes)"), "msgpack: {err}");
    }
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Role {
        Admin,
        Guest { since: u32 },
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct User {
        id: u64,
        name: String,
        tags: Vec<String>,
        role: Role,
        manager: Option<Box<User>>,
        attrs: BTreeMap<String, i64>,
        score: f64,
    }

    fn sample() -> User {
        User {
            id: u64::MAX - 3,
            name: "Ada ✓".into(),
            tags: vec!["a".into(), "".into()],
            role: Role::Guest { since: 7 },
            manager: Some(Box::new(User {
                id: 1,
                name: "root".into(),
                tags: vec![],
                role: Role::Admin,
                manager: None,
                attrs: BTreeMap::new(),
                score: -0.5,
            })),
            attrs: [("x".to_string(), -3i64)].into_iter().collect(),
            score: 1.25,
        }
    }

    #[test]
    fn every_serializer_round_trips_structs_tuples_and_unit() {
        for kind in SerializerKind::ALL {
            let mut buf = BytesMut::new();
            kind.encode_into(&sample(), &mut buf).unwrap();
            assert_eq!(kind.decode::<User>(&buf).unwrap(), sample(), "{kind}");

            let mut buf = BytesMut::new();
            kind.encode_into(&(1u8, "two", [3u16; 3]), &mut buf).unwrap();
            let back: (u8, String, [u16; 3]) = kind.decode(&buf).unwrap();
            assert_eq!(back, (1, "two".to_string(), [3, 3, 3]), "{kind}");

            let mut buf = BytesMut::new();
            kind.encode_into(&(), &mut buf).unwrap();
            kind.decode::<()>(&buf).unwrap();

            let mut buf = BytesMut::new();
            kind.encode_into(&Err::<u8, String>("bad".into()), &mut buf).unwrap();
            assert_eq!(kind.decode::<Result<u8, String>>(&buf).unwrap(), Err("bad".into()));
        }
    }

    #[test]
    fn a_lying_length_prefix_is_an_error_not_an_allocation() {
        // A string claiming 2^60 bytes, in nine bytes of input.
        let mut hostile = vec![0xff];
        hostile.extend_from_slice(&(1u64 << 60).to_le_bytes());
        for kind in SerializerKind::ALL {
            assert!(kind.decode::<String>(&hostile).is_err(), "{kind}");
            assert!(kind.decode::<Vec<u64>>(&hostile).is_err(), "{kind}");
        }
        // Honest values of every size tier still decode.
        for len in [0usize, 4096, 4097, 70_000, 2_000_000] {
            let mut buf = BytesMut::new();
            SerializerKind::Bincode.encode_into(&vec![7u8; len], &mut buf).unwrap();
            assert_eq!(SerializerKind::Bincode.decode::<Vec<u8>>(&buf).unwrap().len(), len);
        }
    }

    #[test]
    fn wrong_type_is_a_decode_error() {
        for kind in SerializerKind::ALL {
            let mut buf = BytesMut::new();
            kind.encode_into(&"not a user", &mut buf).unwrap();
            let err = kind.decode::<User>(&buf).unwrap_err();
            assert!(matches!(err, RpcError::Decode(_)), "{kind}: {err}");
        }
    }

    #[test]
    fn ids_and_names_round_trip() {
        for kind in SerializerKind::ALL {
            assert_eq!(SerializerKind::from_id(kind.id()).unwrap(), kind);
            assert_eq!(kind.name().parse::<SerializerKind>().unwrap(), kind);
        }
        assert!(SerializerKind::from_id(0).is_err());
        let err = "yaml".parse::<SerializerKind>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"yaml\" is not one of msgpack, bincode, postcard, json"
        );
    }
}
