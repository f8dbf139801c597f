//! Feeds arbitrary bytes to the MessagePack reader (the default serializer) as every kind of
//! value of serde's data model: a self-describing value, and a record of 128-bit integers,
//! chars, tuples, maps with integer keys, options and enums of every variant kind.
//! Whatever reads must encode again and read back the same.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use waypost_core::SerializerKind;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Kind {
    Unit,
    Newtype(i128),
    Tuple(u8, char),
    Struct { on: bool, ratio: Option<u16> },
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Unit;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Record {
    id: u128,
    name: String,
    pairs: Vec<(char, Option<i8>)>,
    by_number: BTreeMap<u16, Vec<u8>>,
    kinds: Vec<Kind>,
    unit: Unit,
    rest: Option<Box<Record>>,
}

fuzz_target!(|data: &[u8]| {
    let kind = SerializerKind::MsgPack;
    let _ = kind.decode::<serde_json::Value>(data);
    let _ = kind.decode::<(u64, String, Vec<u8>)>(data);
    if let Ok(record) = kind.decode::<Record>(data) {
        let mut again = bytes::BytesMut::new();
        kind.encode_into(&record, &mut again).expect("a value read encodes");
        assert_eq!(kind.decode::<Record>(&again).expect("and reads back"), record);
    }
});
