//! Decodes arbitrary request bodies the way the server does: prefix and metadata block under
//! tight limits, then the arguments with every serializer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waypost_core::context::{check_key, MetadataLimits};
use waypost_core::protocol::RequestBody;
use waypost_core::SerializerKind;

fuzz_target!(|data: &[u8]| {
    let limits = MetadataLimits {
        max_entries: 8,
        max_bytes: 512,
    };
    let Ok(request) = RequestBody::parse(bytes::Bytes::copy_from_slice(data), &limits) else {
        return;
    };
    let _ = request.service_str();
    let _ = request.method_str();
    assert!(request.metadata.len() <= limits.max_entries);
    assert!(request.metadata.encoded_len() <= limits.max_bytes);
    for (key, value) in request.metadata.iter() {
        assert!(check_key(key.as_bytes()).is_ok());
        assert_eq!(request.metadata.get(key), Some(value));
    }
    for kind in SerializerKind::ALL {
        let _ = kind.decode::<(u64, String, Vec<u8>)>(&request.args.as_one());
        let _ = kind.decode::<(Option<String>, Vec<(i32, f64)>)>(&request.args.as_one());
    }
});
