//! Decodes arbitrary request bodies the way the server does: routing prefix, then the
//! arguments with every serializer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpc_core::protocol::RequestBody;
use rpc_core::SerializerKind;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = RequestBody::parse(bytes::Bytes::copy_from_slice(data)) else { return };
    let _ = request.service_str();
    let _ = request.method_str();
    for kind in SerializerKind::ALL {
        let _ = kind.decode::<(u64, String, Vec<u8>)>(&request.args);
        let _ = kind.decode::<(Option<String>, Vec<(i32, f64)>)>(&request.args);
    }
});
