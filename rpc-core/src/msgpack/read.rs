//! Decoding: a serde `Deserializer` over a slice, reading the format described in the module
//! above.
//!
//! Two rules make additive changes safe beyond what serde's derive does by itself with maps:
//!
//! * A tuple (the argument list of a call is one) longer than its reader is read up to the
//!   reader's length and the rest skipped: an old server ignores a new last argument.
//! * A tuple shorter than its reader lends the reader's extra elements a value that reads as
//!   `None` and as nothing else: a new server called by an old client sees `None` for a new
//!   `Option` argument, and a clear "missing" error for any other type.

use serde::de::{self, DeserializeSeed, Deserializer, Unexpected, Visitor};

use super::error::{Error, Segment};
use super::marker::*;

/// The deepest nesting of arrays and maps a value may have.
pub(crate) const MAX_DEPTH: u32 = 128;

/// Decodes a whole value from `src`; bytes after it are an error.
pub(crate) fn decode<'de, T: de::Deserialize<'de>>(src: &'de [u8]) -> Result<T, Error> {
    let mut decoder = Decoder {
        input: src,
        pos: 0,
        depth: 0,
    };
    let value = T::deserialize(&mut decoder)?;
    match src.len() - decoder.pos {
        0 => Ok(value),
        left => Err(Error::new(format!("{left} trailing bytes"))),
    }
}

/// Reads values from a slice.
struct Decoder<'de> {
    input: &'de [u8],
    pos: usize,
    depth: u32,
}

/// A value's marker and what follows it up to its contents.
#[derive(Debug, Clone, Copy)]
enum Header<'de> {
    Nil,
    Bool(bool),
    Uint(u64),
    Int(i64),
    F32(f32),
    F64(f64),
    /// A string's bytes (not yet checked to be UTF-8).
    Str(&'de [u8]),
    Bin(&'de [u8]),
    Array(usize),
    Map(usize),
    /// An extension value: its type and its data.
    Ext(i8, &'de [u8]),
}

impl<'de> Header<'de> {
    fn unexpected(self) -> Unexpected<'de> {
        match self {
            Self::Nil => Unexpected::Unit,
            Self::Bool(b) => Unexpected::Bool(b),
            Self::Uint(v) => Unexpected::Unsigned(v),
            Self::Int(v) => Unexpected::Signed(v),
            Self::F32(v) => Unexpected::Float(v.into()),
            Self::F64(v) => Unexpected::Float(v),
            Self::Str(s) => std::str::from_utf8(s).map_or(Unexpected::Bytes(s), Unexpected::Str),
            Self::Bin(b) => Unexpected::Bytes(b),
            Self::Array(_) => Unexpected::Seq,
            Self::Map(_) => Unexpected::Map,
            Self::Ext(..) => Unexpected::Other("a MessagePack extension value"),
        }
    }
}

/// The 16 bytes of a 128-bit integer's extension value.
fn wide(data: &[u8]) -> Result<[u8; 16], Error> {
    data.try_into()
        .map_err(|_| Error::new(format!("a 128-bit integer takes 16 bytes, not {}", data.len())))
}

fn truncated(wanted: usize, left: usize) -> Error {
    Error::new(format!("truncated: {wanted} more bytes expected, {left} left"))
}

fn text(bytes: &[u8]) -> Result<&str, Error> {
    std::str::from_utf8(bytes).map_err(|e| Error::new(format!("a string that is not UTF-8: {e}")))
}

impl<'de> Decoder<'de> {
    #[inline]
    fn left(&self) -> usize {
        self.input.len() - self.pos
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'de [u8], Error> {
        if n > self.left() {
            return Err(truncated(n, self.left()));
        }
        let bytes = &self.input[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    #[inline]
    fn peek(&self) -> Result<u8, Error> {
        self.input.get(self.pos).copied().ok_or_else(|| truncated(1, 0))
    }

    /// Reads a length of `width` bytes (1, 2 or 4).
    #[inline]
    fn length(&mut self, width: usize) -> Result<usize, Error> {
        Ok(match width {
            1 => self.array::<1>()?[0] as usize,
            2 => u16::from_be_bytes(self.array()?) as usize,
            _ => u32::from_be_bytes(self.array()?) as usize,
        })
    }

    /// The next value if it is a positive fixint (the common small number), read.
    #[inline]
    fn fixint(&mut self) -> Option<u8> {
        let b = *self.input.get(self.pos)?;
        (b <= POSITIVE_FIXINT_MAX).then(|| {
            self.pos += 1;
            b
        })
    }

    /// The next value if it is a fixstr (a string under 32 bytes: field names, variant names,
    /// short text), read.
    #[inline]
    fn fixstr(&mut self) -> Option<&'de [u8]> {
        let b = *self.input.get(self.pos)?;
        if !(FIXSTR..=FIXSTR_MAX).contains(&b) {
            return None;
        }
        let end = self.pos + 1 + usize::from(b & 0x1f);
        let s = self.input.get(self.pos + 1..end)?;
        self.pos = end;
        Some(s)
    }

    /// Reads the next value's header (a string's or byte string's contents with it).
    #[inline]
    fn header(&mut self) -> Result<Header<'de>, Error> {
        let marker = self.take(1)?[0];
        Ok(match marker {
            0..=POSITIVE_FIXINT_MAX => Header::Uint(marker.into()),
            FIXMAP..=FIXMAP_MAX => Header::Map((marker & 0x0f).into()),
            FIXARRAY..=FIXARRAY_MAX => Header::Array((marker & 0x0f).into()),
            FIXSTR..=FIXSTR_MAX => Header::Str(self.take((marker & 0x1f).into())?),
            NIL => Header::Nil,
            FALSE => Header::Bool(false),
            TRUE => Header::Bool(true),
            BIN8 | BIN16 | BIN32 => {
                let len = self.length(1 << (marker - BIN8))?;
                Header::Bin(self.take(len)?)
            }
            FLOAT32 => Header::F32(f32::from_be_bytes(self.array()?)),
            FLOAT64 => Header::F64(f64::from_be_bytes(self.array()?)),
            UINT8 => Header::Uint(self.array::<1>()?[0].into()),
            UINT16 => Header::Uint(u16::from_be_bytes(self.array()?).into()),
            UINT32 => Header::Uint(u32::from_be_bytes(self.array()?).into()),
            UINT64 => Header::Uint(u64::from_be_bytes(self.array()?)),
            INT8 => Header::Int(i8::from_be_bytes(self.array()?).into()),
            INT16 => Header::Int(i16::from_be_bytes(self.array()?).into()),
            INT32 => Header::Int(i32::from_be_bytes(self.array()?).into()),
            INT64 => Header::Int(i64::from_be_bytes(self.array()?)),
            STR8 | STR16 | STR32 => {
                let len = self.length(1 << (marker - STR8))?;
                Header::Str(self.take(len)?)
            }
            ARRAY16 => Header::Array(self.length(2)?),
            ARRAY32 => Header::Array(self.length(4)?),
            MAP16 => Header::Map(self.length(2)?),
            MAP32 => Header::Map(self.length(4)?),
            FIXEXT1..=FIXEXT16 => {
                let len = 1 << (marker - FIXEXT1);
                let ext = self.array::<1>()?[0] as i8;
                Header::Ext(ext, self.take(len)?)
            }
            EXT8 | EXT16 | EXT32 => {
                let len = self.length(1 << (marker - EXT8))?;
                let ext = self.array::<1>()?[0] as i8;
                Header::Ext(ext, self.take(len)?)
            }
            NEGATIVE_FIXINT..=0xff => Header::Int((marker as i8).into()),
            other => return Err(Error::new(format!("marker 0x{other:02x} is not used by this format"))),
        })
    }

    /// Runs `read` one level of nesting deeper.
    #[inline]
    fn nested<R>(&mut self, read: impl FnOnce(&mut Self) -> Result<R, Error>) -> Result<R, Error> {
        if self.depth >= MAX_DEPTH {
            return Err(Error::new(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        let result = read(self);
        self.depth -= 1;
        result
    }

    /// Skips one value, whatever it holds (without recursion: a count of values still to
    /// skip, which each array and map adds its items to).
    fn skip(&mut self) -> Result<(), Error> {
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            match self.header()? {
                Header::Array(n) => pending += n as u64,
                Header::Map(n) => pending += 2 * n as u64,
                _ => {}
            }
        }
        Ok(())
    }

    /// Visits a value whose header has been read.
    fn visit<V: Visitor<'de>>(&mut self, header: Header<'de>, visitor: V) -> Result<V::Value, Error> {
        match header {
            Header::Nil => visitor.visit_unit(),
            Header::Bool(b) => visitor.visit_bool(b),
            Header::Uint(v) => visitor.visit_u64(v),
            Header::Int(v) => visitor.visit_i64(v),
            Header::F32(v) => visitor.visit_f32(v),
            Header::F64(v) => visitor.visit_f64(v),
            Header::Str(s) => visitor.visit_borrowed_str(text(s)?),
            Header::Bin(b) => visitor.visit_borrowed_bytes(b),
            Header::Array(len) => self.visit_items(len, None, visitor),
            Header::Map(len) => self.visit_entries(len, None, visitor),
            Header::Ext(EXT_U128, data) => visitor.visit_u128(u128::from_be_bytes(wide(data)?)),
            Header::Ext(EXT_I128, data) => visitor.visit_i128(i128::from_be_bytes(wide(data)?)),
            Header::Ext(ext, _) => Err(Error::new(format!(
                "MessagePack extension type {ext} is not a value this format reads (it reads types {EXT_U128} and {EXT_I128}: 128-bit integers)"
            ))),
        }
    }

    /// Visits an array of `len` items as a sequence; `wanted`: the reader's tuple length.
    fn visit_items<V: Visitor<'de>>(
        &mut self,
        len: usize,
        wanted: Option<usize>,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.nested(|de| {
            let mut items = Items {
                de,
                left: len,
                sent: len,
                index: 0,
                wanted,
            };
            let value = visitor.visit_seq(&mut items)?;
            let left = items.left;
            match (left, wanted) {
                (0, _) => Ok(value),
                // A tuple that grew: the elements its reader does not know are skipped.
                (_, Some(_)) => {
                    for _ in 0..left {
                        items.de.skip()?;
                    }
                    Ok(value)
                }
                (_, None) => Err(Error::new(format!("{left} items left unread in a sequence of {len}"))),
            }
        })
    }

    /// Visits a map of `len` entries; `owner`: the struct it fills.
    fn visit_entries<V: Visitor<'de>>(
        &mut self,
        len: usize,
        owner: Option<&'static str>,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.nested(|de| {
            let mut entries = Entries {
                de,
                left: len,
                owner,
                key_at: 0,
            };
            let value = visitor.visit_map(&mut entries)?;
            match entries.left {
                0 => Ok(value),
                left => Err(Error::new(format!("{left} entries left unread in a map of {len}"))),
            }
        })
    }

    fn invalid<V: Visitor<'de>, R>(header: Header<'de>, visitor: &V) -> Result<R, Error> {
        Err(de::Error::invalid_type(header.unexpected(), visitor))
    }
}

/// `deserialize_*` methods for unsigned integers that read a positive fixint in place and
/// anything else through [`Decoder::header`].
macro_rules! fixint_first {
    ($($method:ident => $visit:ident),*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                match self.fixint() {
                    Some(v) => visitor.$visit(v.into()),
                    None => self.deserialize_any(visitor),
                }
            }
        )*
    };
}

impl<'de> Deserializer<'de> for &mut Decoder<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let header = self.header()?;
        self.visit(header, visitor)
    }

    // Small unsigned numbers (counts, ids, enum-like codes) skip the full header.
    fixint_first! {
        deserialize_u8 => visit_u8,
        deserialize_u16 => visit_u16,
        deserialize_u32 => visit_u32,
        deserialize_u64 => visit_u64
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.input.get(self.pos) == Some(&FLOAT64) {
            if let Some(bytes) = self.input.get(self.pos + 1..self.pos + 9) {
                self.pos += 9;
                let mut be = [0; 8];
                be.copy_from_slice(bytes);
                return visitor.visit_f64(f64::from_be_bytes(be));
            }
        }
        self.deserialize_any(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.fixstr() {
            Some(s) => visitor.visit_borrowed_str(text(s)?),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.peek()? == NIL {
            self.pos += 1;
            return visitor.visit_none();
        }
        visitor.visit_some(self)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.header()? {
            Header::Nil => visitor.visit_unit(),
            other => Decoder::invalid(other, &visitor),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.header()? {
            Header::Array(len) => self.visit_items(len, None, visitor),
            // A byte string read as a sequence of `u8` (a `Vec<u8>` sent as one byte string).
            Header::Bin(bytes) => visitor.visit_seq(de::value::SeqDeserializer::new(bytes.iter().copied())),
            other => Decoder::invalid(other, &visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        match self.header()? {
            Header::Array(sent) => self.visit_items(sent, Some(len), visitor),
            Header::Bin(bytes) => visitor.visit_seq(de::value::SeqDeserializer::new(bytes.iter().copied())),
            other => Decoder::invalid(other, &visitor),
        }
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.header()? {
            Header::Map(len) => self.visit_entries(len, Some(name), visitor),
            Header::Array(len) => self.visit_items(len, None, visitor),
            other => Decoder::invalid(other, &visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let result = match self.peek()? {
            FIXSTR..=FIXSTR_MAX | STR8 | STR16 | STR32 => visitor.visit_enum(Variant {
                de: self,
                name,
                data: false,
            }),
            _ => match self.header()? {
                Header::Map(1) => self.nested(|de| visitor.visit_enum(Variant { de, name, data: true })),
                Header::Map(len) => Err(Error::new(format!(
                    "a map of {len} entries where a variant is a name or a map of one entry"
                ))),
                other => Decoder::invalid(other, &visitor),
            },
        };
        result.map_err(|e| e.within(Segment::Enum(name)))
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.header()? {
            Header::Bin(bytes) | Header::Str(bytes) => visitor.visit_borrowed_bytes(bytes),
            Header::Array(len) => self.visit_items(len, None, visitor),
            other => Decoder::invalid(other, &visitor),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    /// A field or variant name: handed over as bytes, which serde's derived name visitors
    /// match without checking UTF-8 first (a name that matches none is not checked either).
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if let Some(name) = self.fixstr() {
            return visitor.visit_borrowed_bytes(name);
        }
        match self.header()? {
            Header::Str(name) => visitor.visit_borrowed_bytes(name),
            other => self.visit(other, visitor),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.skip()?;
        visitor.visit_unit()
    }

    fn is_human_readable(&self) -> bool {
        false
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u128 f32 char map
    }
}

/// The items of an array.
struct Items<'a, 'de> {
    de: &'a mut Decoder<'de>,
    left: usize,
    /// How many items the array has.
    sent: usize,
    index: usize,
    /// The reader's tuple length, when it reads a tuple.
    wanted: Option<usize>,
}

impl<'de> de::SeqAccess<'de> for Items<'_, 'de> {
    type Error = Error;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        let index = self.index;
        if self.left == 0 {
            return match self.wanted {
                Some(wanted) if index < wanted => {
                    self.index += 1;
                    seed.deserialize(Missing { sent: self.sent })
                        .map(Some)
                        .map_err(|e| e.within(Segment::Element(index)))
                }
                _ => Ok(None),
            };
        }
        self.left -= 1;
        self.index += 1;
        seed.deserialize(&mut *self.de)
            .map(Some)
            .map_err(|e| e.within(Segment::Element(index)))
    }

    fn size_hint(&self) -> Option<usize> {
        // Every item takes a byte at least: a lying count cannot make the reader reserve more.
        Some(self.left.min(self.de.left()))
    }
}

/// A tuple element the sender did not send: `None` to an `Option`, an error to anything else.
struct Missing {
    /// How many elements the sender sent.
    sent: usize,
}

impl<'de> Deserializer<'de> for Missing {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(Error::new(format!(
            "missing: the sender sent {} elements and only an `Option` may be left out",
            self.sent
        )))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_none()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// The entries of a map or a struct.
struct Entries<'a, 'de> {
    de: &'a mut Decoder<'de>,
    left: usize,
    /// The struct being filled, if any.
    owner: Option<&'static str>,
    /// Where the current entry's key starts (read again only to name it in an error).
    key_at: usize,
}

impl Entries<'_, '_> {
    /// The current key as text, for an error.
    fn key(&self) -> String {
        let mut again = Decoder {
            input: self.de.input,
            pos: self.key_at,
            depth: 0,
        };
        match again.header() {
            Ok(Header::Str(s)) => String::from_utf8_lossy(s).into_owned(),
            Ok(Header::Uint(v)) => v.to_string(),
            Ok(Header::Int(v)) => v.to_string(),
            _ => "?".to_owned(),
        }
    }
}

impl<'de> de::MapAccess<'de> for Entries<'_, 'de> {
    type Error = Error;

    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        self.key_at = self.de.pos;
        seed.deserialize(&mut *self.de).map(Some)
    }

    #[inline]
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(&mut *self.de).map_err(|e| {
            let field = self.key();
            e.within(match self.owner {
                Some(ty) => Segment::Field { ty, field },
                None => Segment::Key(field),
            })
        })
    }

    fn size_hint(&self) -> Option<usize> {
        // Every entry takes two bytes at least.
        Some(self.left.min(self.de.left() / 2))
    }
}

/// An enum's variant: a name alone (`data: false`), or the one entry of a map, the name and
/// the variant's data.
struct Variant<'a, 'de> {
    de: &'a mut Decoder<'de>,
    name: &'static str,
    data: bool,
}

impl<'a, 'de> de::EnumAccess<'de> for Variant<'a, 'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), Error> {
        let variant = seed.deserialize(&mut *self.de)?;
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_, 'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.data {
            false => Ok(()),
            true => <() as de::Deserialize>::deserialize(self.de),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        match self.data {
            true => seed.deserialize(self.de),
            false => Err(de::Error::invalid_type(Unexpected::UnitVariant, &"a variant with data")),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        match self.data {
            true => self.de.deserialize_tuple(len, visitor),
            false => Err(de::Error::invalid_type(Unexpected::UnitVariant, &visitor)),
        }
    }

    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], visitor: V) -> Result<V::Value, Error> {
        match self.data {
            true => self.de.deserialize_struct(self.name, fields, visitor),
            false => Err(de::Error::invalid_type(Unexpected::UnitVariant, &visitor)),
        }
    }
}
