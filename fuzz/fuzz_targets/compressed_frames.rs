//! Feeds arbitrary bytes to the decompression of a compressed frame's body (zstd), under a
//! small output limit: never more than the limit comes out, whatever the frame claims.
#![no_main]

use libfuzzer_sys::fuzz_target;

const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    if let Some(len) = waypost_core::fuzzing::decompress(data, MAX) {
        assert!(len <= MAX, "{len} bytes out of a limit of {MAX}");
    }
});
