//! Recycled memory for the bodies of large incoming frames.
//!
//! A frame body from [`POOLED_MIN`] bytes on is read straight from the socket into a buffer of
//! its own, handed on as `Bytes` (to a handler on the server, to the waiting caller on the
//! client) and dropped once decoded. Freshly allocated, every such buffer costs page faults as
//! the kernel copies into pages touched for the first time (glibc serves 128 KiB and more
//! with `mmap` and returns it with `munmap` on free): at 64 KiB echoes, a tenth of the
//! client's CPU went to faults. So a dropped body's buffer goes back to this pool and the next
//! frame of its size class reads into memory that is already mapped.
//!
//! A body that ends in a `Vec<u8>` (see `large_body`) reads that vector into a buffer from
//! here too, and the vector goes to its receiver as it is. Vectors of 16 KiB or more that are
//! *sent* come back here once written (`WireBytes::from_vec`), so memory cycles between
//! sending and receiving instead of through the allocator, which otherwise trims and re-faults
//! it: a server that answers with the vector it received allocates nothing per call.
//!
//! Buffers come in power-of-two size classes from 16 KiB to 2 MiB. Each class keeps at most
//! [`KEPT_PER_CLASS`] buffers and at most [`KEPT_BYTES_PER_CLASS`] bytes (whichever allows
//! more), so the process never holds more than about 24 MiB here however many frames it once
//! read; a buffer returned to a full class is freed. Bodies above 2 MiB are not pooled: they
//! get a memory map of their own (see `large_body`). The pool is shared by every connection
//! of the process: one uncontended lock per large frame, against copying tens of kilobytes.

use std::sync::Mutex;

use bytes::Bytes;

/// The smallest body read into a buffer of its own (the smallest class).
pub(crate) const POOLED_MIN: usize = 16 * 1024;
/// The largest class.
pub(crate) const POOLED_MAX: usize = 2 * 1024 * 1024;
/// Buffers each class keeps at least...
const KEPT_PER_CLASS: usize = 4;
/// ...or as many as fit in this many bytes.
const KEPT_BYTES_PER_CLASS: usize = 2 * 1024 * 1024;

const FIRST_CLASS_SHIFT: u32 = POOLED_MIN.trailing_zeros();
const CLASSES: usize = (POOLED_MAX.trailing_zeros() - FIRST_CLASS_SHIFT + 1) as usize;

static POOL: Mutex<[Vec<Vec<u8>>; CLASSES]> = Mutex::new([const { Vec::new() }; CLASSES]);

/// The class of a buffer of `capacity` bytes (a power of two within the classes).
fn class_of_capacity(capacity: usize) -> Option<usize> {
    if !capacity.is_power_of_two() || !(POOLED_MIN..=POOLED_MAX).contains(&capacity) {
        return None;
    }
    Some((capacity.trailing_zeros() - FIRST_CLASS_SHIFT) as usize)
}

/// How many buffers class `class` keeps.
fn kept(class: usize) -> usize {
    let size = POOLED_MIN << class;
    KEPT_PER_CLASS.max(KEPT_BYTES_PER_CLASS / size)
}

/// An empty buffer with room for `len` bytes (`POOLED_MIN..=POOLED_MAX`), recycled when one
/// of its class is free.
pub(crate) fn take(len: usize) -> Vec<u8> {
    let capacity = len.max(POOLED_MIN).next_power_of_two();
    if let Some(class) = class_of_capacity(capacity) {
        if let Ok(mut pool) = POOL.lock() {
            if let Some(buf) = pool[class].pop() {
                return buf;
            }
        }
    }
    Vec::with_capacity(capacity)
}

/// Returns a buffer to its class, or frees it when the class is full.
fn give_back(mut buf: Vec<u8>) {
    let Some(class) = class_of_capacity(buf.capacity()) else {
        return;
    };
    buf.clear();
    if let Ok(mut pool) = POOL.lock() {
        if pool[class].len() < kept(class) {
            pool[class].push(buf);
        }
    }
}

/// The owner of a body read into a pooled buffer: the buffer goes back when the last `Bytes`
/// of it is dropped.
struct PooledBody(Vec<u8>);

impl AsRef<[u8]> for PooledBody {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        give_back(std::mem::take(&mut self.0));
    }
}

/// The filled buffer as `Bytes` that return it to the pool when dropped.
pub(crate) fn into_bytes(buf: Vec<u8>) -> Bytes {
    Bytes::from_owner(PooledBody(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_16_kib_to_2_mib() {
        assert_eq!(CLASSES, 8);
        assert_eq!(class_of_capacity(POOLED_MIN), Some(0));
        assert_eq!(class_of_capacity(POOLED_MAX), Some(CLASSES - 1));
        assert_eq!(class_of_capacity(3 * POOLED_MIN), None, "not a power of two");
        assert_eq!(class_of_capacity(POOLED_MAX * 2), None);
        assert_eq!(kept(0), 128);
        assert_eq!(kept(CLASSES - 1), KEPT_PER_CLASS);
    }

    #[test]
    fn a_dropped_body_is_reused_and_a_full_class_frees() {
        // A class no other test uses: 512 KiB.
        let len = 300 * 1024;
        let mut buf = take(len);
        assert!(buf.capacity() >= len && buf.is_empty());
        buf.extend_from_slice(&vec![5; len]);
        let address = buf.as_ptr();
        let body = into_bytes(buf);
        let slice = body.slice(10..20);
        drop(body);
        assert_eq!(&slice[..], &[5; 10]);
        drop(slice);
        let again = take(len);
        assert_eq!(again.as_ptr(), address, "the same memory comes back");
        assert!(again.is_empty());
        // Fill the class beyond what it keeps: the extra buffers are freed, not kept.
        let class = class_of_capacity(again.capacity()).unwrap();
        let many: Vec<Vec<u8>> = (0..kept(class) + 3).map(|_| take(len)).chain([again]).collect();
        for buf in many {
            give_back(buf);
        }
        assert_eq!(POOL.lock().unwrap()[class].len(), kept(class));
    }
}
