//! The MessagePack markers this format writes and reads (the first byte of every value).

pub(super) const POSITIVE_FIXINT_MAX: u8 = 0x7f;
pub(super) const FIXMAP: u8 = 0x80;
pub(super) const FIXMAP_MAX: u8 = 0x8f;
pub(super) const FIXARRAY: u8 = 0x90;
pub(super) const FIXARRAY_MAX: u8 = 0x9f;
pub(super) const FIXSTR: u8 = 0xa0;
pub(super) const FIXSTR_MAX: u8 = 0xbf;
pub(super) const NIL: u8 = 0xc0;
pub(super) const FALSE: u8 = 0xc2;
pub(super) const TRUE: u8 = 0xc3;
pub(super) const BIN8: u8 = 0xc4;
pub(super) const BIN16: u8 = 0xc5;
pub(super) const BIN32: u8 = 0xc6;
pub(super) const EXT8: u8 = 0xc7;
pub(super) const EXT16: u8 = 0xc8;
pub(super) const EXT32: u8 = 0xc9;
pub(super) const FLOAT32: u8 = 0xca;
pub(super) const FLOAT64: u8 = 0xcb;
pub(super) const UINT8: u8 = 0xcc;
pub(super) const UINT16: u8 = 0xcd;
pub(super) const UINT32: u8 = 0xce;
pub(super) const UINT64: u8 = 0xcf;
pub(super) const INT8: u8 = 0xd0;
pub(super) const INT16: u8 = 0xd1;
pub(super) const INT32: u8 = 0xd2;
pub(super) const INT64: u8 = 0xd3;
pub(super) const FIXEXT1: u8 = 0xd4;
pub(super) const FIXEXT16: u8 = 0xd8;
pub(super) const STR8: u8 = 0xd9;
pub(super) const STR16: u8 = 0xda;
pub(super) const STR32: u8 = 0xdb;
pub(super) const ARRAY16: u8 = 0xdc;
pub(super) const ARRAY32: u8 = 0xdd;
pub(super) const MAP16: u8 = 0xde;
pub(super) const MAP32: u8 = 0xdf;
pub(super) const NEGATIVE_FIXINT: u8 = 0xe0;

/// The extension type of a `u128` beyond 64 bits: fixext 16, the value's 16 bytes big-endian.
pub(super) const EXT_U128: i8 = 1;
/// The extension type of an `i128` beyond 64 bits: fixext 16, the value's 16 bytes big-endian
/// (two's complement).
pub(super) const EXT_I128: i8 = 2;
