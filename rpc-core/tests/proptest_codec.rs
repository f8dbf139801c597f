//! Property tests of everything that parses bytes from the network: the frame decoder (every
//! message type of protocol version 2, extension frames, flags and statuses), the request
//! prefix with its metadata block, and the serializers. The same properties run longer under
//! cargo-fuzz (see `fuzz/`). And the default serializer against an independent MessagePack
//! library (rmpv), both ways, as its documentation says any MessagePack library reads it.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use waypost_core::context::{Metadata, MetadataLimits};
use waypost_core::protocol::{
    encode_frame, encode_request_body, FrameDecoder, Header, MessageType, RequestBody, Status, FIRST_EXTENSION_TYPE,
};
use waypost_core::SerializerKind;

fn message_type() -> impl Strategy<Value = MessageType> {
    prop_oneof![
        Just(MessageType::Request),
        Just(MessageType::Response),
        Just(MessageType::Ping),
        Just(MessageType::Pong),
        Just(MessageType::Cancel),
        Just(MessageType::GoAway),
        (FIRST_EXTENSION_TYPE..=u8::MAX).prop_map(MessageType::Extension),
    ]
}

fn header() -> impl Strategy<Value = Header> {
    (
        message_type(),
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(|(message_type, serializer, status, flags, request_id, timeout_ms)| {
            let mut header = Header::new(message_type, request_id);
            header.serializer = serializer;
            header.status = Status::from_u8(status);
            header.flags = flags;
            header.timeout_ms = timeout_ms;
            header
        })
}

fn metadata() -> impl Strategy<Value = Metadata> {
    proptest::collection::btree_map("[a-z0-9._-]{1,20}", "\\PC{0,40}", 0..8)
        .prop_map(|entries| entries.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any byte stream, cut into any chunks, never panics the decoder, never yields a body over
    /// the limit, and stops at the first error.
    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20)) {
        let mut decoder = FrameDecoder::new(1024);
        let mut buf = BytesMut::new();
        'feed: for chunk in chunks {
            buf.extend_from_slice(&chunk);
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(frame)) => prop_assert!(frame.body.len() <= 1024),
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
    }

    /// Frames survive encoding and any split of the byte stream.
    #[test]
    fn frames_round_trip_across_any_split(
        frames in proptest::collection::vec((header(), proptest::collection::vec(any::<u8>(), 0..200)), 1..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let mut wire = BytesMut::new();
        for (h, body) in &frames {
            encode_frame(*h, body, &mut wire);
        }
        let wire = wire.freeze();
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        points.push(wire.len());
        points.sort_unstable();
        let mut decoder = FrameDecoder::default();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut from = 0;
        for to in points {
            buf.extend_from_slice(&wire[from..to]);
            from = to;
            while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                decoded.push(frame);
            }
        }
        prop_assert_eq!(decoded.len(), frames.len());
        for (frame, (h, body)) in decoded.iter().zip(&frames) {
            let mut expected = *h;
            expected.body_len = body.len() as u32;
            prop_assert_eq!(frame.header, expected);
            prop_assert_eq!(&frame.body.as_one()[..], &body[..]);
        }
    }

    /// Request bodies from the network: parsing arbitrary bytes never panics; valid ones round trip.
    #[test]
    fn request_bodies_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let limits = MetadataLimits { max_entries: 4, max_bytes: 128 };
        if let Ok(request) = RequestBody::parse(Bytes::from(bytes), &limits) {
            let _ = request.service_str();
            let _ = request.method_str();
            prop_assert!(request.metadata.len() <= 4);
            prop_assert!(request.metadata.encoded_len() <= 128);
            for (key, _) in request.metadata.iter() {
                prop_assert!(waypost_core::context::check_key(key.as_bytes()).is_ok());
            }
        }
    }

    #[test]
    fn request_bodies_round_trip(
        service in "[A-Za-z0-9:._-]{1,40}",
        method in "[a-z_]{1,30}",
        metadata in metadata(),
        args in any::<(u64, String, Vec<i16>)>(),
    ) {
        for kind in SerializerKind::ALL {
            let body = encode_request_body(&service, &method, &metadata, kind, &args).unwrap();
            let request = RequestBody::parse(body.into_one(), &MetadataLimits::default()).unwrap();
            prop_assert_eq!(request.service_str(), service.as_str());
            prop_assert_eq!(request.method_str(), method.as_str());
            prop_assert_eq!(&request.metadata, &metadata);
            let back: (u64, String, Vec<i16>) = kind.decode_body(request.args).unwrap();
            prop_assert_eq!(&back, &args);
        }
    }

    /// Arguments from the network: every serializer rejects garbage with an error, not a panic.
    #[test]
    fn serializers_reject_garbage_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        for kind in SerializerKind::ALL {
            let _ = kind.decode::<(u64, String, Vec<Option<bool>>)>(&bytes);
            let _ = kind.decode::<std::collections::BTreeMap<String, Vec<u8>>>(&bytes);
        }
    }
}

/// A record of the kinds a service sends, to check the default serializer against an
/// independent MessagePack library (rmpv), as its documentation claims it can be read.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Order {
    id: u64,
    /// Beyond 64 bits, a MessagePack extension value (type 1, 16 bytes big-endian).
    serial: u128,
    name: String,
    lines: Vec<i32>,
    discount: Option<f64>,
    tier: Tier,
    counts: std::collections::BTreeMap<String, i64>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum Tier {
    Basic,
    Gold(u8),
    Custom { label: String },
}

fn order() -> impl Strategy<Value = Order> {
    let tier = prop_oneof![
        Just(Tier::Basic),
        any::<u8>().prop_map(Tier::Gold),
        "\\PC{0,12}".prop_map(|label| Tier::Custom { label }),
    ];
    (
        (
            any::<u64>(),
            prop_oneof![any::<u128>(), any::<u64>().prop_map(u128::from)],
        ),
        "\\PC{0,24}",
        proptest::collection::vec(any::<i32>(), 0..6),
        proptest::option::of(-1e9f64..1e9),
        tier,
        proptest::collection::btree_map("[a-z]{1,8}", any::<i64>(), 0..4),
    )
        .prop_map(|((id, serial), name, lines, discount, tier, counts)| Order {
            id,
            serial,
            name,
            lines,
            discount,
            tier,
            counts,
        })
}

/// `order` as the documented encoding describes it, in rmpv's terms: a struct is a map from
/// field name to value, `None` is nil and `Some(v)` is `v`, a unit variant is its name, any
/// other variant a map of one entry from its name to its data, a 128-bit integer beyond 64
/// bits an extension value of type 1.
fn documented(order: &Order) -> rmpv::Value {
    use rmpv::Value;
    let map = |entries: Vec<(&str, Value)>| Value::Map(entries.into_iter().map(|(k, v)| (Value::from(k), v)).collect());
    let tier = match &order.tier {
        Tier::Basic => Value::from("Basic"),
        Tier::Gold(level) => map(vec![("Gold", Value::from(*level))]),
        Tier::Custom { label } => map(vec![("Custom", map(vec![("label", Value::from(label.as_str()))]))]),
    };
    map(vec![
        ("id", Value::from(order.id)),
        (
            "serial",
            u64::try_from(order.serial)
                .map_or_else(|_| Value::Ext(1, order.serial.to_be_bytes().to_vec()), Value::from),
        ),
        ("name", Value::from(order.name.as_str())),
        (
            "lines",
            Value::Array(order.lines.iter().map(|n| Value::from(*n)).collect()),
        ),
        ("discount", order.discount.map_or(Value::Nil, Value::from)),
        ("tier", tier),
        (
            "counts",
            Value::Map(
                order
                    .counts
                    .iter()
                    .map(|(k, v)| (Value::from(k.as_str()), Value::from(*v)))
                    .collect(),
            ),
        ),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// rmpv reads what the default serializer writes as the documented value, and the default
    /// serializer reads what rmpv writes of that value back into the record.
    #[test]
    fn an_independent_messagepack_library_reads_and_writes_the_default_encoding(order in order()) {
        let ours = SerializerKind::MsgPack.encode_body(&order).unwrap().into_one();
        let read = rmpv::decode::read_value(&mut &ours[..]).unwrap();
        prop_assert_eq!(&read, &documented(&order));
        let mut theirs = Vec::new();
        rmpv::encode::write_value(&mut theirs, &documented(&order)).unwrap();
        let back: Order = SerializerKind::MsgPack.decode(&theirs).unwrap();
        prop_assert_eq!(back, order);
    }
}
