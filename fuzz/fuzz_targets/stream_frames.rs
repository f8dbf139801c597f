//! Feeds arbitrary bytes to the readers of a stream's frames: a Credit frame's body, and a
//! StreamItem frame's batch of items (each a 4-byte length and its bytes), plain or ending in a
//! byte string carried apart, read item by item as a stream's reader does, with every
//! serializer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waypost_core::protocol::Credit;
use waypost_core::SerializerKind;

fuzz_target!(|data: &[u8]| {
    if let Ok(credit) = Credit::parse(data) {
        assert_eq!(&credit.encode()[..], data);
    }
    // The first byte picks where a flagged body's byte string starts (none at 0).
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let split = usize::from(split);
    for kind in SerializerKind::ALL {
        let items = waypost_core::fuzzing::stream_batch(rest, None, kind);
        assert!(items * 4 <= rest.len(), "{items} items in {} bytes", rest.len());
        if split > 0 && split < rest.len() {
            let (batch, tail) = rest.split_at(split);
            waypost_core::fuzzing::stream_batch(batch, Some(tail), kind);
        }
    }
});
