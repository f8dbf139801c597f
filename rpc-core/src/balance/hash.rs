//! A fixed 64-bit hash for hash rings and call keys, identical in every process and build.

use serde::Serialize;

/// FNV-1a over `bytes`, then the murmur3 finalizer so that similar inputs spread over the
/// whole 64-bit ring.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h = Fnv::new();
    h.write(bytes);
    h.finish()
}

/// The hash of a value's bincode encoding, so any serde type can be a hash key.
pub fn hash_serialized<T: Serialize + ?Sized>(value: &T) -> u64 {
    let mut h = Fnv::new();
    // Writing to a hasher cannot fail; a value that cannot be encoded hashes what was written.
    let _ = bincode::serde::encode_into_std_write(value, &mut h, bincode::config::standard());
    h.finish()
}

struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        let mut k = self.0;
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^ (k >> 33)
    }
}

impl std::io::Write for Fnv {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Fnv::write(self, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
