//! Per-call metadata: a small map of string keys to string values that travels with a request.
//!
//! Keys are 1 to 128 bytes of lowercase ASCII letters, digits, `-`, `_` and `.` (so they
//! compare exactly, with no case folding); values are any UTF-8 up to 64 KiB. A key appears at
//! most once; inserting it again replaces the value. The map is an ordered list, not a hash
//! map: calls carry a handful of entries, for which a scan is faster than hashing, and an empty
//! map allocates nothing.
//!
//! Both ends enforce [`MetadataLimits`] (entry count and encoded size): the client refuses to
//! send a call over its limits, and the server refuses (without running it) a request over
//! its own, before it allocates anything for the entries.

use bytes::Bytes;

/// Longest metadata key in bytes.
pub const MAX_KEY_LEN: usize = 128;
/// Longest metadata value in bytes.
pub const MAX_VALUE_LEN: usize = u16::MAX as usize;

/// Bounds on the metadata of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataLimits {
    /// Most entries.
    pub max_entries: usize,
    /// Most bytes of the encoded block (keys, values and their length prefixes).
    pub max_bytes: usize,
}

impl Default for MetadataLimits {
    fn default() -> Self {
        Self {
            max_entries: 64,
            max_bytes: 16 * 1024,
        }
    }
}

/// The metadata of one call. Cheap to clone when empty; entries share their bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// `(key, value)`, both valid UTF-8, keys unique.
    entries: Vec<(Bytes, Bytes)>,
}

impl Metadata {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// A map of already validated entries (keys unique, both sides UTF-8).
    pub(crate) fn from_validated(entries: Vec<(Bytes, Bytes)>) -> Self {
        Self { entries }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_ref() == key.as_bytes())
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Sets `key` to `value`, replacing an earlier value. Keys and values are checked when the
    /// call is sent ([`Metadata::check`]): a bad one fails that call with a clear error.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.insert_bytes(Bytes::from(key.into()), Bytes::from(value.into()));
    }

    /// [`Metadata::insert`] of bytes already held (a static key costs no allocation); both
    /// must be UTF-8.
    pub(crate) fn insert_bytes(&mut self, key: Bytes, value: Bytes) {
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// Removes `key`, returning whether it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(k, _)| k.as_ref() != key.as_bytes());
        self.entries.len() != before
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().filter_map(|(k, v)| {
            let k = std::str::from_utf8(k).ok()?;
            let v = std::str::from_utf8(v).ok()?;
            Some((k, v))
        })
    }

    /// The raw entries, for encoding.
    pub(crate) fn raw(&self) -> &[(Bytes, Bytes)] {
        &self.entries
    }

    /// Bytes of the encoded block: a 2-byte count, then each key and value behind a 2-byte
    /// length.
    pub fn encoded_len(&self) -> usize {
        2 + self.entries.iter().map(|(k, v)| 4 + k.len() + v.len()).sum::<usize>()
    }

    /// Checks every key and value, and the limits; the error says what is wrong.
    pub fn check(&self, limits: &MetadataLimits) -> Result<(), MetadataError> {
        if self.entries.len() > limits.max_entries {
            return Err(MetadataError::TooManyEntries {
                len: self.entries.len(),
                max: limits.max_entries,
            });
        }
        let len = self.encoded_len();
        if len > limits.max_bytes {
            return Err(MetadataError::TooManyBytes {
                len,
                max: limits.max_bytes,
            });
        }
        for (k, v) in &self.entries {
            check_key(k)?;
            if v.len() > MAX_VALUE_LEN {
                return Err(MetadataError::ValueTooLong(String::from_utf8_lossy(k).into_owned()));
            }
        }
        Ok(())
    }
}

/// Metadata that may not be sent or accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// More entries than the limit.
    #[error("{len} entries exceed the limit of {max}")]
    TooManyEntries {
        /// Entries carried.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More encoded bytes than the limit.
    #[error("{len} bytes exceed the limit of {max}")]
    TooManyBytes {
        /// Bytes carried.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A key outside the allowed alphabet or length.
    #[error("key {0:?} is not 1 to {MAX_KEY_LEN} of a-z, 0-9, '-', '_', '.'")]
    InvalidKey(String),
    /// The value of this key is longer than [`MAX_VALUE_LEN`].
    #[error("the value of {0} is longer than {MAX_VALUE_LEN} bytes")]
    ValueTooLong(String),
    /// A key that appears twice in one request.
    #[error("key {0:?} appears twice")]
    DuplicateKey(String),
}

/// Whether `key` is a valid metadata key (see the module docs).
pub fn check_key(key: &[u8]) -> Result<(), MetadataError> {
    let valid = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(MetadataError::InvalidKey(String::from_utf8_lossy(key).into_owned()))
    }
}

impl std::fmt::Debug for Metadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = Metadata::new();
        m.extend(iter);
        m
    }
}

impl<K: Into<String>, V: Into<String>> Extend<(K, V)> for Metadata {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_and_get_finds() {
        let mut m = Metadata::new();
        assert!(m.is_empty());
        m.insert("tenant", "acme");
        m.insert("region", "eu");
        m.insert("tenant", "globex");
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("tenant"), Some("globex"));
        assert_eq!(m.get("region"), Some("eu"));
        assert_eq!(m.get("absent"), None);
        assert!(m.remove("region"));
        assert!(!m.remove("region"));
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![("tenant", "globex")]);
        assert_eq!(m.encoded_len(), 2 + 4 + 6 + 6);
    }

    #[test]
    fn check_names_the_problem() {
        let limits = MetadataLimits {
            max_entries: 2,
            max_bytes: 40,
        };
        let ok: Metadata = [("a", "1"), ("b-c.d_e9", "2")].into_iter().collect();
        ok.check(&limits).unwrap();
        let many: Metadata = [("a", "1"), ("b", "2"), ("c", "3")].into_iter().collect();
        assert_eq!(
            many.check(&limits).unwrap_err().to_string(),
            "3 entries exceed the limit of 2"
        );
        let big: Metadata = [("a", "x".repeat(40))].into_iter().collect();
        assert_eq!(
            big.check(&limits).unwrap_err().to_string(),
            "47 bytes exceed the limit of 40"
        );
        for bad in ["", "Tenant", "a b", "ключ"] {
            let m: Metadata = [(bad, "v")].into_iter().collect();
            assert!(
                matches!(m.check(&limits).unwrap_err(), MetadataError::InvalidKey(_)),
                "{bad:?}"
            );
        }
        let long_key: Metadata = [("k".repeat(MAX_KEY_LEN + 1), "v".to_owned())].into_iter().collect();
        assert!(long_key
            .check(&MetadataLimits {
                max_entries: 1,
                max_bytes: 1000
            })
            .is_err());
    }
}
