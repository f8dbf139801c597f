//! Frame I/O shared by the client and the server: a buffered frame reader and a batching
//! writer task.

use std::io;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use std::time::Duration;

use tokio::time::Instant;

use crate::body::Body;
use crate::body_pool;
use crate::error::ProtocolError;
use crate::large_body::LargeBody;
use crate::protocol::{flags, Frame, FrameDecoder, Header};

/// Frames queued for a writer before senders wait.
pub(crate) const WRITE_QUEUE: usize = 1024;
/// A writer stops gathering queued frames once its batch reaches this size.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Free space the reader keeps in its buffer before each read, at first and at least.
const READ_RESERVE: usize = 16 * 1024;
/// At most this much: a reader whose reads fill the free space doubles it up to here, so a
/// busy connection takes many frames per system call (at 4 KiB frames, 256 calls outstanding,
/// reads of 64 KiB instead of 16 make a quarter of the reads and cut the server's CPU per call
/// by a fifth), and halves it again after reads that take little.
const MAX_READ_RESERVE: usize = 64 * 1024;
/// After this many frames of one socket read that brought more, a reader's owner lets what
/// the first ones produced go out before it handles the rest (see
/// [`FrameReader::at_early_flush`]).
const EARLY_FLUSH_FRAMES: usize = 8;
/// A read buffer that grew beyond this for a large frame is replaced by a small one once the
/// frame has been taken, so a connection does not keep a large frame's memory for its life.
const MAX_KEPT_BUFFER: usize = 256 * 1024;
/// A budget of request bytes shared by a server's connections: a frame whose body is at least
/// `threshold` bytes takes its size from it before its body is buffered, and gives it back
/// when the call is done. Smaller frames are bounded by the read buffers already.
#[derive(Clone)]
pub(crate) struct ByteBudget {
    /// One permit per KiB.
    permits: Arc<Semaphore>,
    threshold: usize,
}

impl ByteBudget {
    /// A budget of `bytes` for bodies of at least `threshold` bytes.
    pub(crate) fn new(bytes: usize, threshold: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(
                Self::kib(bytes).min(Semaphore::MAX_PERMITS as u64) as usize
            )),
            threshold,
        }
    }

    fn kib(bytes: usize) -> u64 {
        (bytes as u64).div_ceil(1024)
    }

    /// The size from which a body is read under the budget.
    #[cfg(feature = "http")]
    pub(crate) fn threshold(&self) -> usize {
        self.threshold
    }

    /// Waits until `bytes` fit in the budget (`None` once it is closed).
    pub(crate) async fn take(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let kib = u32::try_from(Self::kib(bytes)).unwrap_or(u32::MAX);
        self.permits.clone().acquire_many_owned(kib).await.ok()
    }
}

/// Body pieces from this size on are written from their own buffer (vectored write) instead
/// of being copied next to their header: a copy of a large piece costs more than an extra
/// `iovec`.
const SEPARATE_BODY: usize = 16 * 1024;

/// Frames encoded for writing: headers and small bodies copied together into one buffer,
/// large bodies kept as the `Bytes` they came in, in order.
#[derive(Debug, Default)]
pub(crate) struct Outgoing {
    /// Finished pieces, in order.
    chunks: Vec<Bytes>,
    /// Small frames since the last finished piece.
    small: BytesMut,
    len: usize,
}

impl Outgoing {
    /// Appends one frame; its body's large pieces are kept as they are, the rest is copied.
    pub(crate) fn push_frame(&mut self, header: Header, body: impl Into<Body>) {
        let body: Body = body.into();
        let body_len = body.len();
        self.len += crate::protocol::HEADER_LEN + body_len;
        let mut header = header;
        header.body_len = u32::try_from(body_len).unwrap_or(u32::MAX);
        // A body ending in a byte string lets the receiver read it into memory of its own.
        let head_len = body.head_len().and_then(|n| u8::try_from(n).ok());
        header.flags &= !flags::TAIL;
        if head_len.is_some() {
            header.flags |= flags::TAIL;
        }
        header.head_len = head_len.unwrap_or(0);
        header.write_to(&mut self.small);
        for part in body.into_parts() {
            if part.len() < SEPARATE_BODY {
                self.small.extend_from_slice(&part);
            } else {
                self.finish_small();
                self.chunks.push(part);
            }
        }
    }

    /// Appends bytes already encoded (frames back to back).
    pub(crate) fn push_encoded(&mut self, bytes: &[u8]) {
        self.len += bytes.len();
        self.small.extend_from_slice(bytes);
    }

    /// Appends everything `other` holds.
    fn append(&mut self, mut other: Outgoing) {
        if self.is_empty() {
            *self = other;
            return;
        }
        if other.chunks.is_empty() {
            self.push_encoded(&other.small);
            return;
        }
        self.finish_small();
        other.finish_small();
        self.len += other.len;
        self.chunks.append(&mut other.chunks);
    }

    fn finish_small(&mut self) {
        if !self.small.is_empty() {
            self.chunks.push(self.small.split().freeze());
        }
    }

    /// Bytes held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes everything held, leaving this empty (its small-frame buffer's spare capacity stays).
    pub(crate) fn take(&mut self) -> Outgoing {
        self.finish_small();
        Outgoing {
            chunks: std::mem::take(&mut self.chunks),
            small: BytesMut::new(),
            len: std::mem::take(&mut self.len),
        }
    }

    /// Writes everything held, with as few system calls as the writer allows.
    async fn write_to<W: AsyncWrite + Unpin>(&mut self, writer: &mut W) -> io::Result<()> {
        self.finish_small();
        let mut first = 0;
        while first < self.chunks.len() {
            let slices: Vec<io::IoSlice<'_>> = self.chunks[first..]
                .iter()
                .take(MAX_IOVECS)
                .map(|c| io::IoSlice::new(c))
                .collect();
            let mut written = writer.write_vectored(&slices).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            while written > 0 {
                let chunk = &mut self.chunks[first];
                if written >= chunk.len() {
                    written -= chunk.len();
                    first += 1;
                } else {
                    bytes::Buf::advance(chunk, written);
                    written = 0;
                }
            }
        }
        self.chunks.clear();
        self.len = 0;
        Ok(())
    }
}

/// Slices handed to one vectored write (Linux takes up to 1024).
const MAX_IOVECS: usize = 64;

/// Bytes waiting to be written.
#[derive(Debug)]
pub(crate) enum OutFrame {
    /// One frame, encoded by the writer.
    Frame { header: Header, body: Body },
    /// Frames already encoded.
    Encoded(Outgoing),
}

/// Queues a control frame (a Cancel, a Credit) without waiting: callable from a destructor or
/// a `poll`. When the queue is full the frame goes from a task of its own; when the writer is
/// gone, so is the peer that would have read it.
pub(crate) fn send_control(tx: &mpsc::Sender<OutFrame>, frame: OutFrame) {
    if let Err(mpsc::error::TrySendError::Full(frame)) = tx.try_send(frame) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let tx = tx.clone();
            runtime.spawn(async move {
                let _ = tx.send(frame).await;
            });
        }
    }
}

impl OutFrame {
    fn append_to(self, out: &mut Outgoing) {
        match self {
            Self::Frame { header, body } => out.push_frame(header, body),
            Self::Encoded(frames) => out.append(frames),
        }
    }
}

/// Why reading the next frame failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
}

/// Reads frames from a byte stream.
pub(crate) struct FrameReader<R> {
    reader: R,
    buf: BytesMut,
    decoder: FrameDecoder,
    /// How long a frame may take from its first byte to its last.
    frame_timeout: Option<Duration>,
    /// When the frame being read started to arrive.
    frame_started: Option<Instant>,
    /// The budget large bodies are read under, if any.
    budget: Option<ByteBudget>,
    /// The budget taken for the frame being read, then for the last frame returned.
    held: Option<OwnedSemaphorePermit>,
    /// The large body being read, kept across cancelled reads.
    large: Option<LargeBody>,
    /// The free space to keep before a read (see [`MAX_READ_RESERVE`]).
    read_reserve: usize,
    /// Frames taken since the last socket read.
    since_read: usize,
    /// The last socket read had to wait for its bytes.
    read_waited: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads frames of at most `max_frame_len` body bytes; with a `frame_timeout`, a frame
    /// that starts but does not complete in time is a protocol error.
    pub(crate) fn new(reader: R, max_frame_len: usize, frame_timeout: Option<Duration>) -> Self {
        Self {
            reader,
            buf: BytesMut::with_capacity(READ_RESERVE),
            decoder: FrameDecoder::new(max_frame_len),
            frame_timeout,
            frame_started: None,
            budget: None,
            held: None,
            large: None,
            read_reserve: READ_RESERVE,
            since_read: 0,
            read_waited: false,
        }
    }

    /// Reads large bodies under `budget`.
    pub(crate) fn with_budget(mut self, budget: ByteBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The budget taken by the frame just returned (the caller keeps it until the call is
    /// done); `None` for a small frame.
    pub(crate) fn take_budget(&mut self) -> Option<OwnedSemaphorePermit> {
        self.held.take()
    }

    /// A frame was taken out of the buffer: a buffer that grew for a large frame goes.
    fn frame_taken(&mut self) {
        self.since_read += 1;
        self.frame_started = None;
        if self.buf.is_empty() && self.buf.capacity() > MAX_KEPT_BUFFER {
            self.buf = BytesMut::with_capacity(READ_RESERVE);
        }
    }

    /// Whether the frame just taken is the [`EARLY_FLUSH_FRAMES`]th of a socket read that had
    /// to wait for its bytes and brought more. Both ends then let the work of the frames so far
    /// go out before they handle the rest: the server writes the replies ready so far, the
    /// client (with few calls in flight) lets the callers it answered run and queue their
    /// next requests. The peer works on those while this end
    /// handles the rest of the read, so under load two processes overlap instead of taking
    /// turns (at 32 calls outstanding of 64-512 bytes, 1.5x the calls per second for less CPU
    /// per call). Only after a read that waited: an end that is busy (its reads find bytes
    /// waiting) gains nothing from it and keeps its batches whole, and it is once per read, so
    /// it costs one extra write at most.
    pub(crate) fn at_early_flush(&self) -> bool {
        self.since_read == EARLY_FLUSH_FRAMES && self.read_waited && !self.buf.is_empty()
    }

    /// The bytes read but not yet taken as frames (after a decode error: the offending
    /// frame's start).
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf
    }

    fn is_mid_frame(&self) -> bool {
        !self.buf.is_empty() || self.decoder.is_mid_frame()
    }

    /// The next frame if one is already buffered; never reads the socket.
    pub(crate) fn try_next(&mut self) -> Result<Option<Frame>, ReadError> {
        let frame = self.decoder.decode(&mut self.buf)?;
        if frame.is_some() {
            self.frame_taken();
        }
        Ok(frame)
    }

    /// The next frame; `Ok(None)` when the peer closed the stream between frames.
    pub(crate) async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf)? {
                self.frame_taken();
                return Ok(Some(frame));
            }
            if !self.is_mid_frame() {
                self.frame_started = None;
            } else if self.frame_started.is_none() {
                self.frame_started = Some(Instant::now());
            }
            if let Some(body_len) = self.decoder.pending_body_len() {
                self.take_budget_for(body_len).await?;
                if body_len >= body_pool::POOLED_MIN {
                    return self.read_own_body(body_len).await.map(Some);
                }
                if self.buf.len() < body_len {
                    self.buf.reserve(body_len - self.buf.len());
                }
            }
            let n = self.read_socket().await?;
            if n == 0 {
                return if !self.is_mid_frame() {
                    Ok(None)
                } else {
                    Err(ReadError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "stream ended inside a frame",
                    )))
                };
            }
        }
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// One socket read into the buffer, within the frame's deadline: notes whether it had to
    /// wait for bytes (see [`FrameReader::at_early_flush`]) and adapts the read reserve to
    /// what it got.
    async fn read_socket(&mut self) -> Result<usize, ReadError> {
        if self.buf.capacity() - self.buf.len() < self.read_reserve / 4 {
            self.buf.reserve(self.read_reserve);
        }
        let room = self.buf.capacity() - self.buf.len();
        self.since_read = 0;
        let deadline = self.frame_deadline();
        let mut waited = false;
        let read = std::future::poll_fn(|cx| {
            let poll = tokio_util::io::poll_read_buf(Pin::new(&mut self.reader), cx, &mut self.buf);
            waited |= poll.is_pending();
            poll
        });
        let n = within(deadline, read).await??;
        self.read_waited = waited;
        self.adapt_read_reserve(n, room);
        Ok(n)
    }

    /// After a read of `n` bytes into `room` free bytes: a read that filled the room doubles
    /// the reserve (more was probably waiting), one that took under a quarter of the reserve
    /// halves it, within [`READ_RESERVE`]..=[`MAX_READ_RESERVE`].
    fn adapt_read_reserve(&mut self, n: usize, room: usize) {
        if n >= room {
            self.read_reserve = (self.read_reserve * 2).min(MAX_READ_RESERVE);
        } else if n < self.read_reserve / 4 {
            self.read_reserve = (self.read_reserve / 2).max(READ_RESERVE);
        }
    }

    /// When the frame being read must be complete, and its timeout.
    fn frame_deadline(&self) -> Option<(Instant, Duration)> {
        match (self.frame_timeout, self.frame_started) {
            (Some(limit), Some(started)) => Some((started + limit, limit)),
            _ => None,
        }
    }

    /// A large body first waits for its share of the budget (within the frame timeout, whose
    /// expiry closes the connection).
    async fn take_budget_for(&mut self, body_len: usize) -> Result<(), ReadError> {
        if let Some(budget) = self.budget.clone() {
            if body_len >= budget.threshold && self.held.is_none() {
                self.held = within(self.frame_deadline(), budget.take(body_len)).await?;
            }
        }
        Ok(())
    }

    /// Reads the rest of the pending body of `len` bytes into memory of its own (see
    /// [`LargeBody`]) and makes the frame. Cancel-safe: a body begun stays with the reader.
    async fn read_own_body(&mut self, len: usize) -> Result<Frame, ReadError> {
        // Large frames read best with small reads in between: what a read takes of a large
        // body is copied out of the buffer, the rest goes straight where it belongs.
        self.read_reserve = READ_RESERVE;
        if self.large.is_none() {
            // What already arrived is the body's start: a whole body would have made a frame.
            let have = self.buf.len().min(len);
            let start = &self.buf[..have];
            self.large = Some(match self.decoder.pending_header().and_then(tail_split) {
                Some(head_len) => LargeBody::start_split(len, head_len, start),
                None => LargeBody::start(len, start)?,
            });
            bytes::Buf::advance(&mut self.buf, have);
        }
        let deadline = self.frame_deadline();
        while let Some(large) = self.large.as_mut().filter(|b| b.missing() > 0) {
            let n = within(deadline, large.read_from(&mut self.reader)).await??;
            if n == 0 {
                return Err(ReadError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended inside a frame",
                )));
            }
        }
        let body = self.large.take().map(LargeBody::into_body).unwrap_or_default();
        let header = self
            .decoder
            .take_pending()
            .ok_or(ProtocolError::Malformed("a large body without its header"))?;
        self.frame_taken();
        Ok(Frame { header, body })
    }
}

/// Where a flagged body's final byte string starts (see [`flags::TAIL`]), when it is a large
/// one: the bytes before it are read apart from it.
fn tail_split(header: &Header) -> Option<usize> {
    let head_len = usize::from(header.head_len);
    let body_len = header.body_len as usize;
    let flagged = header.flags & flags::TAIL != 0;
    (flagged && body_len.saturating_sub(head_len) >= crate::shared_bytes::SHARED_MIN).then_some(head_len)
}

/// Runs `io` until `deadline` (a frame's), failing with the frame timeout after it.
async fn within<T>(
    deadline: Option<(Instant, Duration)>,
    io: impl std::future::Future<Output = T>,
) -> Result<T, ReadError> {
    match deadline {
        Some((at, limit)) => tokio::time::timeout_at(at, io)
            .await
            .map_err(|_| ReadError::Protocol(ProtocolError::FrameTimeout(limit))),
        None => Ok(io.await),
    }
}

/// Writes every frame sent on `rx`, gathering whatever is queued into one write.
///
/// Woken by a single frame, the writer yields once before draining the queue: tokio runs a
/// task woken by another task right after it, so without the yield every sender's frame would
/// be written on its own, one syscall each; after it, every caller that was ready has queued
/// its frame and one write carries them all. `others_in_flight` says whether anyone else could
/// be about to queue a frame; when not (a single caller), the yield would only add latency and
/// is skipped. Returns when every sender is gone (after flushing) or on the first write error.
pub(crate) async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::Receiver<OutFrame>,
    others_in_flight: impl Fn() -> bool,
) -> io::Result<()> {
    let mut out = Outgoing::default();
    while let Some(first) = rx.recv().await {
        // A pre-encoded batch is complete already; single frames wait for their peers.
        if matches!(first, OutFrame::Frame { .. }) && others_in_flight() {
            tokio::task::yield_now().await;
        }
        first.append_to(&mut out);
        while out.len() < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(frame) => frame.append_to(&mut out),
                Err(_) => break,
            }
        }
        out.write_to(&mut writer).await?;
    }
    writer.shutdown().await
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;
    use crate::protocol::MessageType;

    /// Takes at most `per_call` bytes per write, across slices.
    struct Trickle {
        written: Vec<u8>,
        per_call: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.per_call);
            self.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut left = self.per_call;
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(left);
                self.written.extend_from_slice(&buf[..take]);
                (left, n) = (left - take, n + take);
                if left == 0 {
                    break;
                }
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn small_and_large_frames_go_out_in_order_whatever_each_write_takes() {
        let piece = |len: usize, fill: u8| Bytes::from(vec![fill; len]);
        let mut bodies: Vec<Body> = [10usize, SEPARATE_BODY, 3, 100_000, 0, SEPARATE_BODY - 1]
            .iter()
            .enumerate()
            .map(|(i, &len)| piece(len, i as u8 + 1).into())
            .collect();
        // A body in pieces, as a shared byte string leaves it: small ones are copied next to
        // the header, large ones go as they are.
        bodies.push(Body::from_parts([
            piece(5, 20),
            piece(SEPARATE_BODY, 21),
            piece(2, 22),
            piece(70_000, 23),
        ]));
        let mut expected = BytesMut::new();
        let mut out = Outgoing::default();
        let mut other = Outgoing::default();
        for (id, body) in bodies.iter().enumerate() {
            let header = Header::new(MessageType::Response, id as u64);
            crate::protocol::encode_frame(header, &body.as_one(), &mut expected);
            // Half through a second batch appended afterwards, as the writer gathers them.
            if id < 3 {
                out.push_frame(header, body.clone());
            } else {
                other.push_frame(header, body.clone());
            }
        }
        out.append(other);
        out.push_encoded(b"tail");
        expected.extend_from_slice(b"tail");
        assert_eq!(out.len(), expected.len());
        for per_call in [1, 7, 4096, usize::MAX] {
            let mut copy = Outgoing {
                chunks: out.chunks.clone(),
                small: out.small.clone(),
                len: out.len,
            };
            let mut sink = Trickle {
                written: Vec::new(),
                per_call,
            };
            copy.write_to(&mut sink).await.unwrap();
            assert!(sink.written == expected[..], "per_call {per_call}");
            assert!(copy.is_empty());
        }
    }

    #[test]
    fn the_read_reserve_grows_while_reads_fill_it_and_shrinks_when_they_do_not() {
        let (_, server) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(server, 1 << 20, None);
        for _ in 0..10 {
            let room = reader.read_reserve;
            reader.adapt_read_reserve(room, room);
        }
        assert_eq!(reader.read_reserve, MAX_READ_RESERVE);
        reader.adapt_read_reserve(MAX_READ_RESERVE / 2, MAX_READ_RESERVE);
        assert_eq!(reader.read_reserve, MAX_READ_RESERVE, "a read of half keeps it");
        for _ in 0..10 {
            reader.adapt_read_reserve(100, MAX_READ_RESERVE);
        }
        assert_eq!(reader.read_reserve, READ_RESERVE);
    }

    #[tokio::test]
    async fn a_read_that_waited_and_brought_many_frames_offers_one_early_flush() {
        let frames = |n: u64| {
            let mut wire = BytesMut::new();
            for id in 0..n {
                crate::protocol::encode_frame(Header::new(MessageType::Request, id), b"x", &mut wire);
            }
            wire
        };
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut reader = FrameReader::new(server, 1 << 20, None);
        // Nothing is there when the reader reads: it waits, then 20 frames arrive at once.
        let wire = frames(20);
        let writer = tokio::spawn(async move {
            tokio::task::yield_now().await;
            client.write_all(&wire).await.unwrap();
            client
        });
        let mut early = Vec::new();
        for taken in 1..=20 {
            reader.next().await.unwrap().unwrap();
            if reader.at_early_flush() {
                early.push(taken);
            }
        }
        assert_eq!(early, [EARLY_FLUSH_FRAMES]);
        // Frames that were there before the read (the reader is behind, not waiting): none.
        let mut client = writer.await.unwrap();
        client.write_all(&frames(20)).await.unwrap();
        for _ in 0..20 {
            reader.next().await.unwrap().unwrap();
            assert!(!reader.at_early_flush());
        }
    }

    #[tokio::test]
    async fn a_large_body_read_that_is_cancelled_loses_nothing() {
        // Pooled (40 KB) and mapped (3 MB) bodies, each followed by a small frame.
        for len in [40_000usize, 3_000_000] {
            let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut wire = BytesMut::new();
            crate::protocol::encode_frame(Header::new(MessageType::Request, 1), &body, &mut wire);
            crate::protocol::encode_frame(Header::new(MessageType::Request, 2), b"after", &mut wire);
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let mut reader = FrameReader::new(server, 16 << 20, None);
            // The header and a third of the body arrive; the read is given up halfway, as the
            // connection's select does when a timer fires; then the rest arrives.
            let split = crate::protocol::HEADER_LEN + len / 3;
            let (first, rest) = (wire[..split].to_vec(), wire[split..].to_vec());
            let (go_on, resume) = tokio::sync::oneshot::channel::<()>();
            let writer = tokio::spawn(async move {
                client.write_all(&first).await.unwrap();
                resume.await.unwrap();
                client.write_all(&rest).await.unwrap();
            });
            let gave_up = tokio::time::timeout(Duration::from_millis(100), reader.next()).await;
            assert!(gave_up.is_err(), "{len}: the frame cannot be complete yet");
            go_on.send(()).unwrap();
            let frame = reader.next().await.unwrap().unwrap();
            assert_eq!((frame.header.request_id, frame.body.len()), (1, len));
            assert!(
                frame.body.as_one()[..] == body[..],
                "{len}: the body arrives whole after the cancelled read"
            );
            let next = reader.next().await.unwrap().unwrap();
            assert_eq!((next.header.request_id, &next.body.as_one()[..]), (2, &b"after"[..]));
            writer.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_body_ending_in_a_byte_string_arrives_as_a_vector_of_its_own() {
        use crate::byte_string::{ByteVec, WireBytes};
        use crate::serializer::SerializerKind;
        use crate::shared_bytes::SHARED_MIN;
        let payload: Vec<u8> = (0..100_000).map(|i| (i % 251) as u8).collect();
        for kind in [SerializerKind::Bincode, SerializerKind::Postcard] {
            let body = kind.encode_body(&(7u32, WireBytes::from_vec(payload.clone()))).unwrap();
            let head_len = body.len() - payload.len();
            let mut out = Outgoing::default();
            out.push_frame(Header::new(MessageType::Request, 1), body);
            out.push_frame(Header::new(MessageType::Request, 2), Bytes::from_static(b"after"));
            // A large body that does not end in a byte string is not flagged, nor one that ends
            // in `Bytes` (a slice of a recycled buffer serves those best).
            let large = Bytes::from(vec![1u8; SHARED_MIN + 10]);
            out.push_frame(Header::new(MessageType::Request, 3), large);
            let ends_in_bytes = kind
                .encode_body(&(7u32, WireBytes::from_bytes(payload.clone().into())))
                .unwrap();
            assert_eq!(ends_in_bytes.parts().count(), 2);
            out.push_frame(Header::new(MessageType::Request, 4), ends_in_bytes);
            let mut sink = Trickle {
                written: Vec::new(),
                per_call: usize::MAX,
            };
            out.write_to(&mut sink).await.unwrap();
            let wire = sink.written;
            assert_eq!((wire[6], usize::from(wire[7])), (flags::TAIL, head_len), "{kind:?}");
            // Cut inside the head and inside the byte string, with the read given up there.
            for cut in [2, head_len + 1000].map(|at| crate::protocol::HEADER_LEN + at) {
                let (mut client, server) = tokio::io::duplex(64 * 1024);
                let mut reader = FrameReader::new(server, 16 << 20, None);
                let (first, rest) = (wire[..cut].to_vec(), wire[cut..].to_vec());
                let (go_on, resume) = tokio::sync::oneshot::channel::<()>();
                let writer = tokio::spawn(async move {
                    client.write_all(&first).await.unwrap();
                    resume.await.unwrap();
                    client.write_all(&rest).await.unwrap();
                });
                let gave_up = tokio::time::timeout(Duration::from_millis(50), reader.next()).await;
                assert!(gave_up.is_err(), "{kind:?}, cut at {cut}");
                go_on.send(()).unwrap();
                let frame = reader.next().await.unwrap().unwrap();
                let parts: Vec<usize> = frame.body.parts().map(Bytes::len).collect();
                assert_eq!(parts, [head_len, payload.len()], "{kind:?}: head and byte string apart");
                let read_into = frame.body.parts().last().map(|p| p.as_ptr());
                let (n, bytes): (u32, ByteVec) = kind.decode_body(frame.body).unwrap();
                assert!(n == 7 && bytes.0 == payload, "{kind:?}");
                assert_eq!(
                    Some(bytes.0.as_ptr()),
                    read_into,
                    "{kind:?}: the vector the socket filled"
                );
                let next = reader.next().await.unwrap().unwrap();
                assert_eq!((next.header.request_id, &next.body.as_one()[..]), (2, &b"after"[..]));
                for id in [3, 4] {
                    let plain = reader.next().await.unwrap().unwrap();
                    assert_eq!((plain.header.request_id, plain.header.flags), (id, 0));
                    assert_eq!((plain.header.head_len, plain.body.parts().count()), (0, 1));
                }
                writer.await.unwrap();
            }
        }
    }
}
