//! Encoding: a serde `Serializer` writing the format described in the module above.

use serde::ser::{self, Serialize};

use super::error::Error;
use super::marker::*;

/// Where the encoder writes. Byte strings and strings go through [`Output::payload`], which
/// may keep a large one as a piece of its own instead of copying it.
pub(crate) trait Output {
    /// Appends `bytes` (a marker, a length, a number).
    fn put(&mut self, bytes: &[u8]);
    /// Appends the contents of a byte string or a string.
    fn payload(&mut self, bytes: &[u8]);
    /// How many bytes were appended so far.
    fn position(&self) -> usize;
    /// Overwrites the four bytes at `at` (a length written before it was known).
    fn patch(&mut self, at: usize, bytes: [u8; 4]);
}

/// Writes values to an [`Output`].
pub(crate) struct Encoder<O> {
    out: O,
}

impl<O: Output> Encoder<O> {
    pub(crate) fn new(out: O) -> Self {
        Self { out }
    }

    pub(crate) fn into_inner(self) -> O {
        self.out
    }

    #[inline]
    /// A 128-bit integer beyond 64 bits: a fixext 16 of extension type `ext` (see the module
    /// docs).
    fn wide(&mut self, ext: i8, be: [u8; 16]) {
        self.out.put(&[FIXEXT16, ext as u8]);
        self.out.put(&be);
    }

    fn uint(&mut self, v: u64) {
        if v <= u64::from(POSITIVE_FIXINT_MAX) {
            self.out.put(&[v as u8]);
        } else if v <= u64::from(u8::MAX) {
            self.out.put(&[UINT8, v as u8]);
        } else if v <= u64::from(u16::MAX) {
            let b = (v as u16).to_be_bytes();
            self.out.put(&[UINT16, b[0], b[1]]);
        } else if v <= u64::from(u32::MAX) {
            let b = (v as u32).to_be_bytes();
            self.out.put(&[UINT32, b[0], b[1], b[2], b[3]]);
        } else {
            self.out.put(&[UINT64]);
            self.out.put(&v.to_be_bytes());
        }
    }

    #[inline]
    fn int(&mut self, v: i64) {
        if v >= 0 {
            self.uint(v as u64);
        } else if v >= -32 {
            self.out.put(&[v as u8]);
        } else if v >= i64::from(i8::MIN) {
            self.out.put(&[INT8, v as u8]);
        } else if v >= i64::from(i16::MIN) {
            let b = (v as i16).to_be_bytes();
            self.out.put(&[INT16, b[0], b[1]]);
        } else if v >= i64::from(i32::MIN) {
            let b = (v as i32).to_be_bytes();
            self.out.put(&[INT32, b[0], b[1], b[2], b[3]]);
        } else {
            self.out.put(&[INT64]);
            self.out.put(&v.to_be_bytes());
        }
    }

    /// A header of the kind whose short form is `fix` (holding up to `fix_max` in its low
    /// bits, `None` for none) and long forms are the markers in `sized` (8, 16, 32-bit length).
    #[inline]
    fn header(&mut self, len: usize, fix: Option<(u8, usize)>, sized: [Option<u8>; 3]) -> Result<(), Error> {
        match (fix, sized) {
            (Some((fix, max)), _) if len <= max => self.out.put(&[fix | len as u8]),
            (_, [Some(m8), _, _]) if len <= 0xff => self.out.put(&[m8, len as u8]),
            (_, [_, Some(m16), _]) if len <= 0xffff => {
                let b = (len as u16).to_be_bytes();
                self.out.put(&[m16, b[0], b[1]]);
            }
            (_, [_, _, Some(m32)]) => {
                let b = u32::try_from(len)
                    .map_err(|_| Error::new(format!("a length of {len} is beyond the format's 2^32 - 1")))?
                    .to_be_bytes();
                self.out.put(&[m32, b[0], b[1], b[2], b[3]]);
            }
            _ => unreachable!("every header kind has a 32-bit form"),
        }
        Ok(())
    }

    #[inline]
    fn str(&mut self, s: &str) -> Result<(), Error> {
        if s.len() <= 31 {
            // Field and variant names: the marker holds the length.
            self.out.put(&[FIXSTR | s.len() as u8]);
            self.out.put(s.as_bytes());
            return Ok(());
        }
        self.header(s.len(), None, [Some(STR8), Some(STR16), Some(STR32)])?;
        self.out.payload(s.as_bytes());
        Ok(())
    }

    #[inline]
    fn array(&mut self, len: usize) -> Result<(), Error> {
        self.header(len, Some((FIXARRAY, 15)), [None, Some(ARRAY16), Some(ARRAY32)])
    }

    #[inline]
    fn map(&mut self, len: usize) -> Result<(), Error> {
        self.header(len, Some((FIXMAP, 15)), [None, Some(MAP16), Some(MAP32)])
    }

    /// Starts a container of `len` items, or of a count patched in at its end when `len` is
    /// unknown.
    fn open(&mut self, len: Option<usize>, kind: Container) -> Result<Compound<'_, O>, Error> {
        let unknown_at = match len {
            Some(len) => {
                match kind {
                    Container::Array => self.array(len)?,
                    Container::Map => self.map(len)?,
                }
                None
            }
            None => {
                let marker = match kind {
                    Container::Array => ARRAY32,
                    Container::Map => MAP32,
                };
                self.out.put(&[marker, 0, 0, 0, 0]);
                Some(self.out.position() - 4)
            }
        };
        Ok(Compound {
            enc: self,
            declared: len,
            unknown_at,
            count: 0,
        })
    }

    /// Writes the one-entry map that holds a variant with data: its name, then the data.
    fn variant(&mut self, variant: &str) -> Result<(), Error> {
        self.out.put(&[FIXMAP | 1]);
        self.str(variant)
    }
}

#[derive(Clone, Copy)]
enum Container {
    Array,
    Map,
}

/// A container being written: sequences, tuples, maps, structs and their variants.
pub(crate) struct Compound<'a, O> {
    enc: &'a mut Encoder<O>,
    declared: Option<usize>,
    unknown_at: Option<usize>,
    count: usize,
}

impl<O: Output> Compound<'_, O> {
    #[inline]
    fn item<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.count += 1;
        value.serialize(&mut *self.enc)
    }

    fn close(self) -> Result<(), Error> {
        match (self.declared, self.unknown_at) {
            (Some(declared), _) if declared != self.count => Err(Error::new(format!(
                "a value announced {declared} items and wrote {}",
                self.count
            ))),
            (_, Some(at)) => {
                let count = u32::try_from(self.count)
                    .map_err(|_| Error::new(format!("{} items are beyond the format's 2^32 - 1", self.count)))?;
                self.enc.out.patch(at, count.to_be_bytes());
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl<'a, O: Output> ser::Serializer for &'a mut Encoder<O> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'a, O>;
    type SerializeTuple = Compound<'a, O>;
    type SerializeTupleStruct = Compound<'a, O>;
    type SerializeTupleVariant = Compound<'a, O>;
    type SerializeMap = Compound<'a, O>;
    type SerializeStruct = Compound<'a, O>;
    type SerializeStructVariant = Compound<'a, O>;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.out.put(&[if v { TRUE } else { FALSE }]);
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.int(v.into());
        Ok(())
    }

    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.int(v.into());
        Ok(())
    }

    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.int(v.into());
        Ok(())
    }

    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        self.int(v);
        Ok(())
    }

    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        match i64::try_from(v) {
            Ok(v) => self.int(v),
            Err(_) => self.wide(EXT_I128, v.to_be_bytes()),
        }
        Ok(())
    }

    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.uint(v.into());
        Ok(())
    }

    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.uint(v.into());
        Ok(())
    }

    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.uint(v.into());
        Ok(())
    }

    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        self.uint(v);
        Ok(())
    }

    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        match u64::try_from(v) {
            Ok(v) => self.uint(v),
            Err(_) => self.wide(EXT_U128, v.to_be_bytes()),
        }
        Ok(())
    }

    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        let b = v.to_be_bytes();
        self.out.put(&[FLOAT32, b[0], b[1], b[2], b[3]]);
        Ok(())
    }

    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        self.out.put(&[FLOAT64]);
        self.out.put(&v.to_be_bytes());
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.str(v.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.str(v)
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        self.header(v.len(), None, [Some(BIN8), Some(BIN16), Some(BIN32)])?;
        self.out.payload(v);
        Ok(())
    }

    fn serialize_none(self) -> Result<(), Error> {
        self.out.put(&[NIL]);
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Error> {
        self.serialize_none()
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        self.serialize_none()
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<(), Error> {
        self.str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.variant(variant)?;
        value.serialize(self)
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Compound<'a, O>, Error> {
        self.open(len, Container::Array)
    }

    fn serialize_tuple(self, len: usize) -> Result<Compound<'a, O>, Error> {
        self.open(Some(len), Container::Array)
    }

    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Compound<'a, O>, Error> {
        self.open(Some(len), Container::Array)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'a, O>, Error> {
        self.variant(variant)?;
        self.open(Some(len), Container::Array)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Compound<'a, O>, Error> {
        self.open(len, Container::Map)
    }

    fn serialize_struct(self, _: &'static str, len: usize) -> Result<Compound<'a, O>, Error> {
        self.open(Some(len), Container::Map)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'a, O>, Error> {
        self.variant(variant)?;
        self.open(Some(len), Container::Map)
    }
}

impl<O: Output> ser::SerializeSeq for Compound<'_, O> {
    type Ok = ();
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.item(value)
    }

    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl<O: Output> ser::SerializeTuple for Compound<'_, O> {
    type Ok = ();
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.item(value)
    }

    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl<O: Output> ser::SerializeTupleStruct for Compound<'_, O> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.item(value)
    }

    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl<O: Output> ser::SerializeTupleVariant for Compound<'_, O> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.item(value)
    }

    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl<O: Output> ser::SerializeMap for Compound<'_, O> {
    type Ok = ();
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.item(key)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        // An entry counts once: its key counted it.
        value.serialize(&mut *self.enc)
    }

    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl<O: Output> ser::SerializeStruct for Compound<'_, O> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
        self.count += 1;
        self.enc.str(key)?;
        value.serialize(&mut *self.enc)
    }

    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl<O: Output> ser::SerializeStructVariant for Compound<'_, O> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
        ser::SerializeStruct::serialize_field(self, key, value)
    }

    fn end(self) -> Result<(), Error> {
        self.close()
    }
}
