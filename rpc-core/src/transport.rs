//! Frame I/O shared by the client and the server: a buffered frame reader and a batching
//! writer task.

use std::io;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use std::time::Duration;

use tokio::time::Instant;

use crate::error::ProtocolError;
use crate::protocol::{encode_frame, Frame, FrameDecoder, Header};

/// Frames queued for a writer before senders wait.
pub(crate) const WRITE_QUEUE: usize = 1024;
/// A writer stops gathering queued frames once its batch reaches this size.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Free space the reader keeps in its buffer before each read.
const READ_RESERVE: usize = 16 * 1024;

/// Bytes waiting to be written.
#[derive(Debug)]
pub(crate) enum OutFrame {
    /// One frame, encoded by the writer.
    Frame { header: Header, body: Bytes },
    /// Frames already encoded back to back.
    Encoded(Bytes),
}

impl OutFrame {
    fn append_to(self, buf: &mut BytesMut) {
        match self {
            Self::Frame { header, body } => encode_frame(header, &body, buf),
            Self::Encoded(bytes) => buf.extend_from_slice(&bytes),
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
        }
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
            self.frame_started = None;
        }
        Ok(frame)
    }

    /// The next frame; `Ok(None)` when the peer closed the stream between frames.
    pub(crate) async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf)? {
                self.frame_started = None;
                return Ok(Some(frame));
            }
            if !self.is_mid_frame() {
                self.frame_started = None;
            } else if self.frame_started.is_none() {
                self.frame_started = Some(Instant::now());
            }
            if self.buf.capacity() - self.buf.len() < READ_RESERVE / 4 {
                self.buf.reserve(READ_RESERVE);
            }
            let read = self.reader.read_buf(&mut self.buf);
            let n = match (self.frame_timeout, self.frame_started) {
                (Some(limit), Some(started)) => tokio::time::timeout_at(started + limit, read)
                    .await
                    .map_err(|_| ProtocolError::FrameTimeout(limit))??,
                _ => read.await?,
            };
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
    let mut buf = BytesMut::with_capacity(16 * 1024);
    while let Some(first) = rx.recv().await {
        // A pre-encoded batch is complete already; single frames wait for their peers.
        if matches!(first, OutFrame::Frame { .. }) && others_in_flight() {
            tokio::task::yield_now().await;
        }
        let mut next = rx.try_recv().ok();
        if next.is_none() {
            // A lone pre-encoded batch goes out as it is, without a copy.
            if let OutFrame::Encoded(bytes) = first {
                writer.write_all(&bytes).await?;
                continue;
            }
        }
        first.append_to(&mut buf);
        while let Some(frame) = next {
            frame.append_to(&mut buf);
            next = if buf.len() < MAX_BATCH_BYTES {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        writer.write_all(&buf).await?;
        buf.clear();
    }
    writer.shutdown().await
}
