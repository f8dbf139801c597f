//! Pins the compile errors of `#[service]` on unsupported input.

#[test]
fn unsupported_service_definitions_fail_with_clear_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
