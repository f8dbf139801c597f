//! [`Body`]: the encoded bytes of a request or a reply, in one piece or several.
//!
//! A body is usually one `Bytes`. When a large byte string was encoded (a `Vec<u8>` or `Bytes`
//! argument or result of 16 KiB or more, see [`WireBytes`](crate::byte_string::WireBytes)),
//! its memory is not copied next to the rest: the body is the bytes before it, the byte
//! string's own memory, and the bytes after it, and the transport writes the pieces with one
//! vectored write. The bytes on the wire are the same either way.
//!
//! A body whose last piece is such a byte string from a `Vec<u8>`, with nothing after it, knows
//! it ([`Body`]'s *tail*): the transport flags the frame so that the receiver reads the byte string into
//! memory of its own, and the received body is then two pieces, the bytes before the byte
//! string and the byte string, which a `Vec<u8>` takes over without a copy (see
//! [`SerializerKind::decode_body`](crate::SerializerKind::decode_body)). Any other body
//! arrives in one piece.

use std::borrow::Cow;
use std::fmt;

use bytes::{Bytes, BytesMut};

/// The encoded bytes of a request or a reply.
#[derive(Clone, Default)]
pub struct Body {
    /// The first piece (the whole body when there is one).
    first: Bytes,
    /// The pieces after the first, in order (no allocation when there are none).
    rest: Vec<Bytes>,
    /// The last piece is one whole byte string, whose length prefix ends the piece before.
    tail: bool,
}

impl Body {
    /// A body of the given pieces, in order.
    pub fn from_parts(parts: impl IntoIterator<Item = Bytes>) -> Self {
        let mut parts = parts.into_iter().filter(|p| !p.is_empty());
        let first = parts.next().unwrap_or_default();
        Self {
            first,
            rest: parts.collect(),
            tail: false,
        }
    }

    /// A body of the given pieces whose last piece is one whole byte string (of at least
    /// `SHARED_MIN` bytes; a shorter one, or a single piece, makes a plain body).
    pub(crate) fn with_tail(parts: impl IntoIterator<Item = Bytes>) -> Self {
        let mut body = Self::from_parts(parts);
        body.tail = body
            .rest
            .last()
            .is_some_and(|last| last.len() >= crate::shared_bytes::SHARED_MIN);
        body
    }

    /// The same body with `head` before its first piece (a tail stays the tail).
    pub fn prepend(self, head: Bytes) -> Self {
        if head.is_empty() {
            return self;
        }
        if self.first.is_empty() {
            return Self { first: head, ..self };
        }
        let mut rest = Vec::with_capacity(self.rest.len() + 1);
        rest.push(self.first);
        rest.extend(self.rest);
        Self {
            first: head,
            rest,
            tail: self.tail,
        }
    }

    /// With a tail: the number of bytes before it.
    pub(crate) fn head_len(&self) -> Option<usize> {
        let tail = self.rest.last().filter(|_| self.tail)?;
        Some(self.len() - tail.len())
    }

    /// With a tail: the bytes before it (joined, when in several pieces) and the tail;
    /// otherwise the body itself back.
    pub(crate) fn into_head_and_tail(mut self) -> Result<(Bytes, Bytes), Self> {
        if !self.tail {
            return Err(self);
        }
        let tail = self.rest.pop().unwrap_or_default();
        self.tail = false;
        Ok((self.into_one(), tail))
    }

    /// Bytes in the body.
    pub fn len(&self) -> usize {
        self.first.len() + self.rest.iter().map(Bytes::len).sum::<usize>()
    }

    /// Whether the body has no bytes.
    pub fn is_empty(&self) -> bool {
        self.first.is_empty() && self.rest.is_empty()
    }

    /// The pieces, in order.
    pub fn parts(&self) -> impl Iterator<Item = &Bytes> {
        std::iter::once(&self.first).chain(&self.rest)
    }

    /// The body as one `Bytes`: itself when it is one piece, else the pieces copied together.
    pub fn as_one(&self) -> Cow<'_, Bytes> {
        if self.rest.is_empty() {
            return Cow::Borrowed(&self.first);
        }
        let mut all = BytesMut::with_capacity(self.len());
        for part in self.parts() {
            all.extend_from_slice(part);
        }
        Cow::Owned(all.freeze())
    }

    /// The body as one `Bytes`, copying only when it is in several pieces.
    pub fn into_one(self) -> Bytes {
        match self.rest.is_empty() {
            true => self.first,
            false => self.as_one().into_owned(),
        }
    }

    /// Takes the body's first `n` bytes off (copying only when its first piece is shorter);
    /// `None` when the body is shorter than `n`. A tail stays the tail.
    pub(crate) fn split_front(mut self, n: usize) -> Option<(Bytes, Body)> {
        if self.first.len() >= n {
            let front = self.first.split_to(n);
            return Some((front, self));
        }
        if self.len() < n {
            return None;
        }
        let tail = self.tail.then(|| self.rest.pop()).flatten();
        let mut all = self.into_one();
        let front = all.split_to(n);
        let rest = match tail {
            Some(tail) => Body::with_tail([all, tail]),
            None => Body::from(all),
        };
        Some((front, rest))
    }

    /// Splits the body into its pieces.
    pub(crate) fn into_parts(self) -> impl Iterator<Item = Bytes> {
        std::iter::once(self.first).chain(self.rest).filter(|p| !p.is_empty())
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Self {
            first: bytes,
            rest: Vec::new(),
            tail: false,
        }
    }
}

impl From<String> for Body {
    fn from(text: String) -> Self {
        Bytes::from(text).into()
    }
}

/// Equal when the bytes are, however they are split.
impl PartialEq for Body {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.as_one() == other.as_one()
    }
}

impl Eq for Body {}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rest.is_empty() {
            true => fmt::Debug::fmt(&self.first, f),
            false => write!(f, "Body({} bytes in {} pieces)", self.len(), 1 + self.rest.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_read_as_one_and_compare_by_content() {
        let one = Body::from(Bytes::from_static(b"hello world"));
        let parts = Body::from_parts([
            Bytes::from_static(b"hel"),
            Bytes::new(),
            Bytes::from_static(b"lo wor"),
            Bytes::from_static(b"ld"),
        ]);
        assert_eq!(parts.len(), 11);
        assert_eq!(parts.parts().count(), 3, "empty pieces are dropped");
        assert_eq!(&parts.as_one()[..], b"hello world");
        assert_eq!(one, parts);
        assert!(matches!(one.as_one(), Cow::Borrowed(_)), "one piece is not copied");
        assert_eq!(parts.clone().into_one(), one.clone().into_one());
        assert!(Body::from_parts([]).is_empty());
        assert_eq!(format!("{parts:?}"), "Body(11 bytes in 3 pieces)");
    }
}
