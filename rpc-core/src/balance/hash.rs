//! A fixed 64-bit hash for hash rings and call keys, identical in every process and build.

use serde::Serialize;

use crate::fnv::{fnv1a, Fnv};

/// FNV-1a over `bytes`, then the murmur3 finalizer so that similar inputs spread over the
/// whole 64-bit ring.
pub fn hash64(bytes: &[u8]) -> u64 {
    spread(fnv1a(bytes))
}

/// The hash of a value's bincode encoding, so any serde type can be a hash key.
pub fn hash_serialized<T: Serialize + ?Sized>(value: &T) -> u64 {
    let mut h = Fnv::new();
    // Writing to a hasher cannot fail; a value that cannot be encoded hashes what was written.
    let _ = bincode::serde::encode_into_std_write(value, &mut h, bincode::config::standard());
    spread(h.value())
}

/// The murmur3 finalizer: every input bit reaches every output bit.
fn spread(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_spread() {
        assert_eq!(hash64(b"10.0.0.1:9001#0"), hash64(b"10.0.0.1:9001#0"));
        assert_ne!(hash64(b"a"), hash64(b"b"));
        assert_eq!(hash_serialized(&42u64), hash_serialized(&42u64));
        assert_ne!(hash_serialized(&42u64), hash_serialized(&43u64));
        // Top bits differ for near-identical inputs (the ring uses the whole range).
        let tops: std::collections::HashSet<u64> = (0..64u32).map(|i| hash64(&i.to_le_bytes()) >> 58).collect();
        assert!(tops.len() > 30, "{}", tops.len());
    }
}
