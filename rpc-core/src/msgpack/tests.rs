//! The format's bytes, its round trips and the changes it tolerates.

use std::collections::BTreeMap;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use super::read::{decode, MAX_DEPTH};
use super::write::{Encoder, Output};

impl Output for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn payload(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn position(&self) -> usize {
        self.len()
    }
    fn patch(&mut self, at: usize, bytes: [u8; 4]) {
        self[at..at + 4].copy_from_slice(&bytes);
    }
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut encoder = Encoder::new(Vec::new());
    value.serialize(&mut encoder).unwrap();
    encoder.into_inner()
}

fn round_trip<T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug>(value: T) {
    let bytes = encode(&value);
    assert_eq!(decode::<T>(&bytes).unwrap(), value, "{bytes:02x?}");
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Dot,
    Circle(f64),
    Line(i32, i32),
    Rect { w: u16, h: u16 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point(i64, i64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Id(u64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Marker;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Everything {
    flag: bool,
    small: i8,
    big: u64,
    negative: i64,
    ratio: f32,
    exact: f64,
    letter: char,
    name: String,
    bytes: Vec<u8>,
    maybe: Option<Box<Everything>>,
    shapes: Vec<Shape>,
    point: Point,
    id: Id,
    marker: Marker,
    unit: (),
    map: BTreeMap<String, Vec<u32>>,
    numbers: BTreeMap<i32, String>,
    nested: Option<Option<u8>>,
    array: [u8; 3],
    wide: u128,
}

fn everything() -> Everything {
    Everything {
        flag: true,
        small: -100,
        big: u64::MAX,
        negative: i64::MIN,
        ratio: 1.5,
        exact: -0.1,
        letter: 'ß',
        name: "Ada ✓".repeat(20),
        bytes: (0..=255).collect(),
        maybe: Some(Box::new(Everything {
            maybe: None,
            shapes: vec![],
            map: BTreeMap::new(),
            ..everything_leaf()
        })),
        shapes: vec![
            Shape::Dot,
            Shape::Circle(2.5),
            Shape::Line(-1, 70_000),
            Shape::Rect { w: 3, h: 65_535 },
        ],
        point: Point(-33, 1 << 40),
        id: Id(7),
        marker: Marker,
        unit: (),
        map: [("a".to_string(), vec![1, 200, 70_000]), ("".to_string(), vec![])]
            .into_iter()
            .collect(),
        numbers: [(-5, "minus five".to_string()), (300, "three hundred".to_string())]
            .into_iter()
            .collect(),
        nested: Some(Some(4)),
        array: [1, 2, 3],
        wide: u128::from(u64::MAX),
    }
}

fn everything_leaf() -> Everything {
    Everything {
        flag: false,
        small: 0,
        big: 0,
        negative: -1,
        ratio: 0.0,
        exact: 0.0,
        letter: 'a',
        name: String::new(),
        bytes: vec![],
        maybe: None,
        shapes: vec![],
        point: Point(0, 0),
        id: Id(0),
        marker: Marker,
        unit: (),
        map: BTreeMap::new(),
        numbers: BTreeMap::new(),
        nested: None,
        array: [0; 3],
        wide: 0,
    }
}

#[test]
fn every_serde_shape_round_trips() {
    round_trip(everything());
    for v in [0u64, 127, 128, 255, 256, 65_535, 65_536, u32::MAX.into(), u64::MAX] {
        round_trip(v);
    }
    for v in [
        0i64,
        -1,
        -32,
        -33,
        -128,
        -129,
        -32_768,
        -32_769,
        i32::MIN.into(),
        i64::MIN,
        i64::MAX,
    ] {
        round_trip(v);
    }
    for len in [0usize, 31, 32, 255, 256, 65_535, 65_536] {
        round_trip("x".repeat(len));
        round_trip(vec![1u16; len.min(70_000)]);
        round_trip((0..len.min(20_000)).map(|i| (i, i)).collect::<BTreeMap<_, _>>());
    }
    round_trip(Ok::<u8, String>(3));
    round_trip(Err::<u8, String>("no".into()));
    round_trip(());
}

#[test]
fn integers_of_128_bits_round_trip_as_numbers_or_as_their_extension() {
    for v in [0u128, 1, u64::MAX.into(), u128::from(u64::MAX) + 1, u128::MAX] {
        round_trip(v);
    }
    for v in [
        0i128,
        -1,
        i64::MIN.into(),
        i128::from(i64::MIN) - 1,
        i128::MIN,
        i128::MAX,
    ] {
        round_trip(v);
    }
    // Within 64 bits: a MessagePack integer, as any reader expects.
    assert_eq!(encode(&7u128), [7]);
    assert_eq!(encode(&-1i128), [0xff]);
    assert_eq!(decode::<u64>(&encode(&u128::from(u64::MAX))).unwrap(), u64::MAX);
    // Beyond: fixext 16 of type 1 (u128) or 2 (i128), the bytes big-endian.
    let wide = u128::MAX - 1;
    let mut expected = vec![0xd8, 1];
    expected.extend_from_slice(&wide.to_be_bytes());
    assert_eq!(encode(&wide), expected);
    assert_eq!(encode(&i128::MIN)[..2], [0xd8, 2]);
    // An i128 that is a valid u128 reads as one, and the other way round; out of range is an
    // error, never a wrong value.
    assert_eq!(decode::<u128>(&encode(&i128::MAX)).unwrap(), i128::MAX as u128);
    assert_eq!(
        decode::<i128>(&encode(&(u128::from(u64::MAX) + 1))).unwrap(),
        i128::from(u64::MAX) + 1
    );
    assert!(decode::<u128>(&encode(&i128::MIN)).is_err());
    assert!(decode::<u64>(&encode(&u128::MAX)).is_err());
    // In a struct, and skipped by a reader that does not know the field.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Order {
        id: u128,
        note: String,
    }
    #[derive(Debug, PartialEq, Deserialize)]
    struct OldOrder {
        note: String,
    }
    let order = Order {
        id: u128::MAX,
        note: "n".into(),
    };
    let bytes = encode(&order);
    assert_eq!(decode::<OldOrder>(&bytes).unwrap(), OldOrder { note: "n".into() });
    round_trip(order);
}

#[test]
fn an_extension_type_the_format_does_not_use_is_an_error_naming_it() {
    // fixext 1 of type 5, and ext 8 of type 1 with 3 bytes (not the 16 a 128-bit integer takes).
    let error = decode::<u128>(&[0xd4, 5, 0]).unwrap_err().to_string();
    assert!(error.contains("extension type 5"), "{error}");
    let error = decode::<u128>(&[0xc7, 3, 1, 0, 0, 0]).unwrap_err().to_string();
    assert!(error.contains("16 bytes, not 3"), "{error}");
    // Skipped like any value where the reader ignores it.
    #[derive(Debug, PartialEq, Deserialize)]
    struct Note {
        note: String,
    }
    let bytes = [0x82, 0xa1, b'x', 0xd4, 5, 0, 0xa4, b'n', b'o', b't', b'e', 0xa1, b'n'];
    assert_eq!(decode::<Note>(&bytes).unwrap(), Note { note: "n".into() });
}

#[test]
fn the_bytes_are_messagepack() {
    #[derive(Serialize)]
    struct S {
        a: u8,
        b: Option<bool>,
    }
    assert_eq!(encode(&S { a: 1, b: None }), [0x82, 0xa1, b'a', 0x01, 0xa1, b'b', 0xc0]);
    assert_eq!(encode(&Shape::Dot), [0xa3, b'D', b'o', b't']);
    assert_eq!(
        encode(&Shape::Line(-1, 200)),
        [0x81, 0xa4, b'L', b'i', b'n', b'e', 0x92, 0xff, 0xcc, 200]
    );
    assert_eq!(encode(&(300u16, -40i8)), [0x92, 0xcd, 0x01, 0x2c, 0xd0, 0xd8]);
    assert_eq!(encode(&1.5f64)[0], 0xcb);
    assert_eq!(encode(&vec![0u8; 2])[..], [0x92, 0, 0]);
    // An iterator of unknown length: a 32-bit count, filled in at its end.
    struct Unsized;
    impl Serialize for Unsized {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq((0..3u8).filter(|_| true))
        }
    }
    assert_eq!(encode(&Unsized), [0xdd, 0, 0, 0, 3, 0, 1, 2]);
    assert_eq!(decode::<Vec<u8>>(&encode(&Unsized)).unwrap(), [0, 1, 2]);
}

#[test]
fn byte_strings_and_sequences_of_bytes_read_as_each_other() {
    let bin = [0xc4, 3, 7, 8, 9];
    assert_eq!(decode::<Vec<u8>>(&bin).unwrap(), [7, 8, 9]);
    assert_eq!(decode::<[u8; 3]>(&bin).unwrap(), [7, 8, 9]);
    let array = encode(&vec![7u8, 8, 9]);
    assert_eq!(decode::<crate::byte_string::ByteVec>(&array).unwrap().0, [7, 8, 9]);
    // A string reads as a byte string (a `String` argument read in place).
    assert_eq!(
        decode::<crate::byte_string::ByteVec>(&encode("hé")).unwrap().0,
        "hé".as_bytes()
    );
}

/// Version 1 and version 2 of a service's types, as the two sides of a rollout have them.
mod v1 {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct User {
        pub id: u64,
        pub name: String,
        pub tier: Tier,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Tier {
        Free,
        Pro { seats: u32 },
    }
}

mod v2 {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct User {
        pub tier: Tier,
        pub email: Option<String>,
        pub name: String,
        #[serde(default)]
        pub score: u32,
        pub id: u64,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Tier {
        Free,
        Gold(u8),
        Pro { seats: u32 },
    }
}

#[test]
fn additive_changes_are_read_both_ways() {
    let old = v1::User {
        id: 1,
        name: "Ada".into(),
        tier: v1::Tier::Pro { seats: 3 },
    };
    let new: v2::User = decode(&encode(&old)).unwrap();
    assert_eq!(
        new,
        v2::User {
            id: 1,
            name: "Ada".into(),
            tier: v2::Tier::Pro { seats: 3 },
            email: None,
            score: 0,
        }
    );
    let new = v2::User {
        email: Some("ada@example.com".into()),
        score: 9,
        ..new
    };
    assert_eq!(decode::<v1::User>(&encode(&new)).unwrap(), old);

    // A tuple (an argument list) that grew by an `Option`, read either way.
    let sent_by_old = encode(&(1u64, "x"));
    assert_eq!(
        decode::<(u64, String, Option<u32>)>(&sent_by_old).unwrap(),
        (1, "x".into(), None)
    );
    let sent_by_new = encode(&(1u64, "x", Some(5u32), &new));
    assert_eq!(decode::<(u64, String)>(&sent_by_new).unwrap(), (1, "x".into()));
}

#[test]
fn what_is_not_additive_fails_naming_the_field_never_a_wrong_value() {
    let gold = v2::User {
        id: 1,
        name: "Ada".into(),
        tier: v2::Tier::Gold(1),
        email: None,
        score: 0,
    };
    let error = decode::<v1::User>(&encode(&gold)).unwrap_err().to_string();
    assert!(
        error.contains("unknown variant `Gold`") && error.contains("enum `Tier`") && error.contains(".tier"),
        "{error}"
    );
    let unit_gold = encode(&(1u8, "Gold"));
    let error = decode::<(u8, v1::Tier)>(&unit_gold).unwrap_err().to_string();
    assert!(
        error.contains("unknown variant `Gold`") && error.contains("enum `Tier`"),
        "{error}"
    );

    #[derive(Serialize)]
    struct ChangedType {
        id: u64,
        name: u32,
        tier: v1::Tier,
    }
    let changed = encode(&ChangedType {
        id: 1,
        name: 5,
        tier: v1::Tier::Free,
    });
    let error = decode::<v1::User>(&changed).unwrap_err().to_string();
    assert_eq!(
        error,
        "invalid type: integer `5`, expected a string (in field `name` of `User`)"
    );

    #[derive(Serialize)]
    struct Removed {
        id: u64,
        tier: v1::Tier,
    }
    let removed = encode(&Removed {
        id: 1,
        tier: v1::Tier::Free,
    });
    let error = decode::<v1::User>(&removed).unwrap_err().to_string();
    assert_eq!(error, "missing field `name`");

    let error = decode::<(u64, String, u32)>(&encode(&(1u64, "x")))
        .unwrap_err()
        .to_string();
    assert!(error.contains("missing") && error.contains("[2]"), "{error}");

    let nested = encode(&vec![(
        0u8,
        ChangedType {
            id: 1,
            name: 5,
            tier: v1::Tier::Free,
        },
    )]);
    let error = decode::<Vec<(u8, v1::User)>>(&nested).unwrap_err().to_string();
    assert!(
        error.ends_with("(in field `name` of `User`, at [0][1].name)"),
        "{error}"
    );
}

#[test]
fn hostile_input_is_an_error_not_an_allocation_or_a_crash() {
    // Lengths far beyond the input.
    for hostile in [
        &[0xdb, 0xff, 0xff, 0xff, 0xff][..],
        &[0xc6, 0xff, 0xff, 0xff, 0xff],
        &[0xdd, 0xff, 0xff, 0xff, 0xff],
        &[0xdf, 0xff, 0xff, 0xff, 0xff],
        &[0xcf, 1, 2],
        &[],
        &[0xc1],
        // Extension values cut short, or longer than the input.
        &[0xd8, 1, 0],
        &[0xc9, 0xff, 0xff, 0xff, 0xff, 1],
    ] {
        assert!(decode::<Everything>(hostile).is_err(), "{hostile:02x?}");
        assert!(decode::<Vec<String>>(hostile).is_err(), "{hostile:02x?}");
        assert!(decode::<serde::de::IgnoredAny>(hostile).is_err(), "{hostile:02x?}");
    }
    // Nesting past the limit, read and skipped.
    let deep = vec![0x91u8; 100_000];
    let error = decode::<serde_json::Value>(&deep).unwrap_err().to_string();
    assert!(error.contains(&format!("nesting deeper than {MAX_DEPTH}")), "{error}");
    assert!(
        decode::<serde::de::IgnoredAny>(&deep).is_err(),
        "truncated, not a stack overflow"
    );
    // Not UTF-8.
    assert!(decode::<String>(&[0xa2, 0xff, 0xfe]).is_err());
    // Bytes after the value.
    let error = decode::<u8>(&[1, 2]).unwrap_err().to_string();
    assert_eq!(error, "1 trailing bytes");
}

#[test]
fn the_encoded_size_is_exact_and_sharing_keeps_the_bytes() {
    use crate::serializer::SerializerKind;
    let value = everything();
    let size = SerializerKind::MsgPack.encoded_size(&value).unwrap();
    let mut buf = BytesMut::new();
    SerializerKind::MsgPack.encode_into(&value, &mut buf).unwrap();
    assert_eq!(size, Some(buf.len()));
    assert_eq!(&buf[..], &encode(&value)[..]);
}

#[test]
fn a_record_of_many_small_fields_round_trips_through_bodies_and_replies() {
    use crate::serializer::SerializerKind;
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Item {
        sku: u64,
        qty: u32,
        price: f64,
    }
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Record {
        id: u64,
        name: String,
        tags: Vec<String>,
        items: Vec<Item>,
    }
    let record = Record {
        id: 42,
        name: "a record of the bench".into(),
        tags: vec!["alpha".into(), "beta".into()],
        items: (0..51u64)
            .map(|i| Item {
                sku: 1_000_000 + i,
                qty: (i % 7) as u32 + 1,
                price: i as f64 * 0.25,
            })
            .collect(),
    };
    let body = SerializerKind::MsgPack.encode_body(&(&record,)).unwrap();
    let (back,): (Record,) = SerializerKind::MsgPack.decode_body(body).unwrap();
    assert_eq!(back, record);
    let reply = crate::Reply::ok(SerializerKind::MsgPack, &record);
    assert_eq!(reply.into_value::<Record>(SerializerKind::MsgPack).unwrap(), record);
}
