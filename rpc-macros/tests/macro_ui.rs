//! Pins the compile errors of `#[service]` on unsupported input.
//!
//! The cases live beside the macro: on an unsupported definition it emits only the error, so a
//! case needs no runtime crate, and trybuild checks nothing but this crate (the runtime's
//! dependencies took it two minutes of compiling on a fresh machine).

#[test]
fn unsupported_service_definitions_fail_with_clear_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
