//! A large frame body being read from the socket into memory of its own.
//!
//! A body from [`POOLED_MIN`](crate::body_pool::POOLED_MIN) bytes on is not read through the
//! connection's read buffer: the kernel copies it straight into a buffer that becomes the
//! body's `Bytes`, with no copy after that one, and no later frame shares (and pins) its
//! memory. Up to [`MAPPED_BODY`] the buffer is a recycled one ([`body_pool`]); above, an
//! anonymous memory map of its own, which goes back to the system as soon as the last `Bytes`
//! of it is dropped. (Through the allocator, a freed 16 MiB buffer raises glibc's mmap
//! threshold and later ones stay in its heap: a process that once read 60 of them kept
//! 240 MiB after they were gone.)
//!
//! A body flagged [`TAIL`](crate::protocol::flags::TAIL) (it ends in a large `Vec<u8>`) is
//! read into two vectors instead, the bytes before the byte string and the byte string (in a
//! recycled buffer up to 2 MiB), so that the `Vec<u8>` argument or result takes over the second
//! one as it is.
//!
//! The reader keeps the body between reads, so a read that is cancelled (the connection's
//! task waits on its reader together with timers and shutdown) and started again continues
//! where it stopped: the bytes already taken from the socket are never lost.

use std::io;

#[cfg(feature = "http")]
use bytes::BytesMut;
use bytes::{BufMut, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::body::Body;
use crate::body_pool;

/// Bodies above this size get a memory map of their own instead of a recycled buffer.
pub(crate) const MAPPED_BODY: usize = body_pool::POOLED_MAX;

/// A body of a known length, partly read.
pub(crate) enum LargeBody {
    /// In a recycled buffer: its length is what has been read.
    Pooled { buf: Vec<u8>, len: usize },
    /// In a memory map of the body's length, `filled` bytes of it read.
    Mapped { map: memmap2::MmapMut, filled: usize },
    /// A body ending in a byte string: `head_len` bytes before it, then `tail_len` bytes of it.
    Split {
        head: Vec<u8>,
        head_len: usize,
        tail: Vec<u8>,
        tail_len: usize,
    },
}

impl LargeBody {
    /// A body of `len` bytes whose first bytes, `start`, have arrived already.
    pub(crate) fn start(len: usize, start: &[u8]) -> io::Result<Self> {
        if len > MAPPED_BODY {
            // Populated up front: one system call maps every page instead of one fault per
            // 4 KiB as the body arrives.
            let mut map = memmap2::MmapOptions::new().len(len).populate().map_anon()?;
            map[..start.len()].copy_from_slice(start);
            return Ok(Self::Mapped {
                map,
                filled: start.len(),
            });
        }
        let mut buf = body_pool::take(len);
        buf.extend_from_slice(start);
        Ok(Self::Pooled { buf, len })
    }

    /// A body of `len` bytes ending in a byte string after its first `head_len` bytes, whose
    /// first bytes, `start`, have arrived already.
    pub(crate) fn start_split(len: usize, head_len: usize, start: &[u8]) -> Self {
        let tail_len = len - head_len;
        let (in_head, in_tail) = start.split_at(start.len().min(head_len));
        let mut head = Vec::with_capacity(head_len);
        head.extend_from_slice(in_head);
        // A recycled buffer, as for any body; the vector it becomes may come back to the pool
        // when it is sent (see `WireBytes::from_vec`).
        let mut tail = match tail_len <= MAPPED_BODY {
            true => body_pool::take(tail_len),
            false => Vec::with_capacity(tail_len),
        };
        tail.extend_from_slice(in_tail);
        Self::Split {
            head,
            head_len,
            tail,
            tail_len,
        }
    }

    /// Bytes still to read.
    pub(crate) fn missing(&self) -> usize {
        match self {
            Self::Pooled { buf, len } => len - buf.len(),
            Self::Mapped { map, filled } => map.len() - filled,
            Self::Split {
                head,
                head_len,
                tail,
                tail_len,
            } => (head_len - head.len()) + (tail_len - tail.len()),
        }
    }

    /// Reads what `reader` has of the rest (at most the rest); `Ok(0)` at the end of the
    /// stream. Cancel-safe: bytes read are kept here before the future completes.
    pub(crate) async fn read_from<R: AsyncRead + Unpin>(&mut self, reader: &mut R) -> io::Result<usize> {
        match self {
            Self::Pooled { buf, len } => {
                let missing = *len - buf.len();
                reader.read_buf(&mut buf.limit(missing)).await
            }
            Self::Mapped { map, filled } => {
                let n = reader.read(&mut map[*filled..]).await?;
                *filled += n;
                Ok(n)
            }
            Self::Split {
                head,
                head_len,
                tail,
                tail_len,
            } => {
                let (buf, len) = match head.len() < *head_len {
                    true => (head, *head_len),
                    false => (tail, *tail_len),
                };
                let missing = len - buf.len();
                reader.read_buf(&mut buf.limit(missing)).await
            }
        }
    }

    /// Copies what of `bytes` the body still misses; returns how many bytes it took (fewer than
    /// `bytes.len()` only when the body is then complete).
    #[cfg(feature = "http")]
    pub(crate) fn fill(&mut self, bytes: &[u8]) -> usize {
        let mut taken = 0;
        while taken < bytes.len() && self.missing() > 0 {
            let rest = &bytes[taken..];
            let (buf, len) = match self {
                Self::Pooled { buf, len } => (buf, *len),
                Self::Mapped { map, filled } => {
                    let n = rest.len().min(map.len() - *filled);
                    map[*filled..*filled + n].copy_from_slice(&rest[..n]);
                    *filled += n;
                    taken += n;
                    continue;
                }
                Self::Split {
                    head,
                    head_len,
                    tail,
                    tail_len,
                } => match head.len() < *head_len {
                    true => (head, *head_len),
                    false => (tail, *tail_len),
                },
            };
            let n = rest.len().min(len - buf.len());
            buf.extend_from_slice(&rest[..n]);
            taken += n;
        }
        taken
    }

    /// The whole body (once nothing is missing).
    pub(crate) fn into_body(self) -> Body {
        match self {
            Self::Pooled { buf, .. } => body_pool::into_bytes(buf).into(),
            Self::Mapped { map, .. } => Bytes::from_owner(map).into(),
            Self::Split { head, tail, .. } => Body::with_tail([Bytes::from(head), Bytes::from(tail)]),
        }
    }
}

/// `pieces` (of `len` bytes together) copied into one `Bytes`: from [`body_pool::POOLED_MIN`]
/// bytes on into memory of its own as a large frame's body is (a recycled buffer, or above
/// [`MAPPED_BODY`] a memory map that goes back to the system when the last `Bytes` of it is
/// dropped), instead of through the allocator.
#[cfg(feature = "http")]
pub(crate) fn gather<'a>(len: usize, pieces: impl IntoIterator<Item = &'a [u8]>) -> io::Result<Bytes> {
    if len < body_pool::POOLED_MIN {
        let mut all = BytesMut::with_capacity(len);
        pieces.into_iter().for_each(|piece| all.extend_from_slice(piece));
        return Ok(all.freeze());
    }
    let mut body = LargeBody::start(len, &[])?;
    for piece in pieces {
        body.fill(piece);
    }
    Ok(body.into_body().into_one())
}
