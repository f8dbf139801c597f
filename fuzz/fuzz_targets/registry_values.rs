//! Feeds arbitrary bytes as the values a registry holds: an instance's JSON, a published
//! schema's text, and a service's rules text. Each is refused or read; an instance read is one
//! that can be dialed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waypost_core::registry::{read_published_schema, ServiceInstance};
use waypost_core::rules::ServiceRules;

fuzz_target!(|data: &[u8]| {
    if let Ok(instance) = ServiceInstance::from_json(data, "S:1", "h:1") {
        assert_eq!(instance.address(), "h:1");
        assert!(instance.port > 0);
        assert!(instance.http.is_none_or(|http| http.port > 0));
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(schema) = read_published_schema("0123456789abcdef", text) {
        assert_eq!(schema.fingerprint(), "0123456789abcdef");
    }
    let _ = ServiceRules::parse(text);
});
