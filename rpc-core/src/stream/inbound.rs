//! The receiving side of a stream: [`RawStream`], the encoded items as they arrive, then how
//! the stream ended; credit goes back to the sender as the reader takes items.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use super::window::Grant;
use crate::body::Body;
use crate::error::{ProtocolError, RpcError};
use crate::interceptor::Outcome;
use crate::protocol::Status;
use crate::reply::Reply;

/// What the connection's reader hands a stream's receiver.
pub(crate) enum Inbound {
    /// The items of a StreamItem frame: each a 4-byte length and its bytes.
    Batch(Body),
    /// The sender's end: its Response (a client) or StreamEnd (a server), or why it broke.
    End(Result<Reply, RpcError>),
}

/// Where a received item lies.
pub(crate) enum ItemAt<'a> {
    /// At the start of the batch being read, this many bytes.
    Slice(&'a Bytes, usize),
    /// In a body of its own: the last item of a frame read as its head and its byte string.
    Whole(Body),
}

/// What [`RawStream::poll_with`] yields: an item as its reader read it, or the end.
pub(crate) enum Polled<R> {
    /// The item.
    Item(R),
    /// The stream's end (see [`StreamEvent::End`]).
    End(Result<Reply, RpcError>),
}

/// One event of a [`RawStream`].
#[derive(Debug)]
pub enum StreamEvent {
    /// An encoded item.
    Item(Body),
    /// The stream's end: the sender's closing reply (status `Ok` or `ApplicationError`; its
    /// body: empty after items, or the single result of a method that takes a stream), or the
    /// failure that ended it. Nothing follows it.
    End(Result<Reply, RpcError>),
}

/// The encoded items of a stream received from the other side, as they arrive, then its end
/// (see [`StreamEvent`]). The generated code decodes them into a
/// [`Streaming`](super::Streaming).
///
/// Reading an item gives its room back to the sender (see the protocol docs, "Streams").
/// Dropping the stream before its end tells the sender to stop: a server's handler that drops
/// its input stops the client sending; a client that drops a stream cancels the call.
pub struct RawStream {
    rx: mpsc::Receiver<Inbound>,
    /// The items of a batch not read yet, and the byte string that ends its last one when the
    /// frame was read as its head and that byte string (see `flags::TAIL`).
    batch: Bytes,
    tail: Option<Bytes>,
    grant: Grant,
    /// The error when the connection went away without an end.
    closed: Arc<dyn Fn() -> RpcError + Send + Sync>,
    timer: Option<Timer>,
    /// The end was delivered.
    done: bool,
    /// The sender ended the stream, or cannot be told anything: nothing to cancel.
    sender_gone: bool,
    /// Items read and not yet counted in the metrics, and by which side (`server`, `client`).
    received: u64,
    side: &'static str,
    /// Told how the stream ended (the client's interceptors), once.
    on_end: Option<Box<dyn FnOnce(Outcome) + Send + Sync>>,
    /// What the side that made the stream keeps alive with it (its slot's registration, the
    /// task that sends its own items).
    _owner: Option<Box<dyn Any + Send + Sync>>,
}

/// The deadline of the whole stream and the longest wait between two items.
struct Timer {
    deadline: Option<Instant>,
    idle: Option<Duration>,
    started: Instant,
    last: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl Timer {
    fn next_wake(&self) -> Option<Instant> {
        let idle_end = self.idle.map(|idle| self.last + idle);
        match (self.deadline, idle_end) {
            (Some(d), Some(i)) => Some(d.min(i)),
            (d, i) => d.or(i),
        }
    }
}

impl RawStream {
    /// A stream fed by `rx`, granting credit through `grant`; `closed` says why it ended when
    /// `rx` closes without an end; `side` (`server`, `client`) labels its metrics.
    pub(crate) fn new(
        rx: mpsc::Receiver<Inbound>,
        grant: Grant,
        closed: Arc<dyn Fn() -> RpcError + Send + Sync>,
        side: &'static str,
    ) -> Self {
        Self {
            rx,
            batch: Bytes::new(),
            tail: None,
            grant,
            closed,
            received: 0,
            side,
            timer: None,
            on_end: None,
            done: false,
            sender_gone: false,
            _owner: None,
        }
    }

    /// The same stream ending with a timeout at `deadline`, or after `idle` without an item.
    pub(crate) fn with_timeouts(mut self, deadline: Option<Instant>, idle: Option<Duration>) -> Self {
        let now = Instant::now();
        let mut timer = Timer {
            deadline,
            idle,
            started: now,
            last: now,
            sleep: Box::pin(tokio::time::sleep_until(now)),
        };
        self.timer = timer.next_wake().map(|wake| {
            timer.sleep.as_mut().reset(wake);
            timer
        });
        self
    }

    /// The same stream telling `on_end` how it ended: its end's outcome, or `Cancelled` when
    /// it is dropped before its end.
    pub(crate) fn on_end(mut self, on_end: impl FnOnce(Outcome) + Send + Sync + 'static) -> Self {
        self.on_end = Some(Box::new(on_end));
        self
    }

    /// The same stream keeping `owner` alive until it is dropped.
    pub(crate) fn owning(mut self, owner: impl Any + Send + Sync) -> Self {
        self._owner = Some(Box::new(owner));
        self
    }

    fn end<R>(&mut self, end: Result<Reply, RpcError>, sender_gone: bool) -> Poll<Option<Polled<R>>> {
        self.done = true;
        self.sender_gone = sender_gone;
        if let Some(on_end) = self.on_end.take() {
            on_end(Outcome::from_result(&end, |reply| {
                reply.status == Status::ApplicationError
            }));
        }
        Poll::Ready(Some(Polled::End(end)))
    }

    /// An item of `len` bytes read: its credit given back, the idle timer reset, the metrics
    /// counted.
    fn took(&mut self, len: usize) {
        self.grant.took(len);
        self.received += 1;
        if self.received == 4096 {
            crate::metrics::stream_messages_received(self.side, std::mem::take(&mut self.received));
        }
        if let Some(timer) = self.timer.as_mut().filter(|t| t.idle.is_some()) {
            timer.last = Instant::now();
        }
    }

    /// The next event, the next item read by `read` from where it lies (no copy, no
    /// allocation of its own: the generated code decodes it in place).
    pub(crate) fn poll_with<R>(
        &mut self,
        cx: &mut Context<'_>,
        read: impl FnOnce(ItemAt<'_>) -> R,
    ) -> Poll<Option<Polled<R>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.batch.is_empty() {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Inbound::Batch(batch))) => {
                    (self.batch, self.tail) = match batch.into_head_and_tail() {
                        Ok((head, tail)) => (head, Some(tail)),
                        Err(body) => (body.into_one(), None),
                    };
                }
                Poll::Ready(Some(Inbound::End(end))) => return self.end(end, true),
                Poll::Ready(None) => {
                    let error = (self.closed)();
                    return self.end(Err(error), true);
                }
                Poll::Pending => {
                    return match self.poll_timer(cx) {
                        Some(timeout) => self.end(Err(timeout), false),
                        None => Poll::Pending,
                    }
                }
            }
        }
        self.next_of_batch(read)
    }

    /// The next item of the batch being read, when it lies whole in it (the common case, kept
    /// small so the decoder inlines it); `None` otherwise, for [`RawStream::poll_with`].
    #[inline]
    pub(crate) fn next_in_batch<R>(&mut self, read: impl FnOnce(&Bytes, usize) -> R) -> Option<R> {
        let header = self.batch.get(..4)?;
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if self.batch.len() - 4 < len {
            return None;
        }
        self.batch.advance(4);
        let item = read(&self.batch, len);
        self.batch.advance(len);
        self.took(len);
        Some(item)
    }

    /// The next item of the batch being read.
    fn next_of_batch<R>(&mut self, read: impl FnOnce(ItemAt<'_>) -> R) -> Poll<Option<Polled<R>>> {
        if self.batch.len() >= 4 {
            let len = u32::from_be_bytes([self.batch[0], self.batch[1], self.batch[2], self.batch[3]]) as usize;
            let here = self.batch.len() - 4;
            if here >= len {
                self.batch.advance(4);
                let item = read(ItemAt::Slice(&self.batch, len));
                self.batch.advance(len);
                self.took(len);
                return Poll::Ready(Some(Polled::Item(item)));
            }
            // The last item, ending in the frame's byte string.
            if let Some(tail) = self.tail.take().filter(|tail| here + tail.len() == len) {
                self.batch.advance(4);
                let head = std::mem::take(&mut self.batch);
                let item = read(ItemAt::Whole(Body::with_tail([head, tail])));
                self.took(len);
                return Poll::Ready(Some(Polled::Item(item)));
            }
        }
        (self.batch, self.tail) = (Bytes::new(), None);
        let malformed = RpcError::Protocol(ProtocolError::Malformed("a batch of stream items"));
        self.end(Err(malformed), false)
    }

    /// Whether the timer fired: the stream's end then.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Option<RpcError> {
        let timer = self.timer.as_mut()?;
        timer.sleep.as_mut().poll(cx).is_ready().then_some(())?;
        let now = Instant::now();
        if timer.deadline.is_some_and(|d| now >= d) {
            return Some(RpcError::Timeout(now - timer.started));
        }
        if timer.idle.is_some_and(|idle| now >= timer.last + idle) {
            return Some(RpcError::Timeout(now - timer.last));
        }
        // Woken early (an item came since it was set): sleep until the next wake.
        if let Some(wake) = timer.next_wake() {
            timer.sleep.as_mut().reset(wake);
            let _ = timer.sleep.as_mut().poll(cx);
        }
        None
    }
}

impl Stream for RawStream {
    type Item = StreamEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StreamEvent>> {
        let item = |at: ItemAt<'_>| match at {
            ItemAt::Slice(batch, len) => Body::from(batch.slice(..len)),
            ItemAt::Whole(body) => body,
        };
        self.poll_with(cx, item).map(|event| {
            event.map(|event| match event {
                Polled::Item(body) => StreamEvent::Item(body),
                Polled::End(end) => StreamEvent::End(end),
            })
        })
    }
}

impl Drop for RawStream {
    fn drop(&mut self) {
        if self.received > 0 {
            crate::metrics::stream_messages_received(self.side, self.received);
        }
        if let Some(on_end) = self.on_end.take() {
            on_end(Outcome::Cancelled);
        }
        if !self.sender_gone {
            // Before its end, or timed out: the sender's work is for nobody.
            self.grant.stop_sender();
        }
    }
}

impl std::fmt::Debug for RawStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawStream")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::StreamWindow;
    use futures_util::StreamExt;

    fn batch(items: &[&[u8]]) -> Body {
        let mut out = Vec::new();
        for item in items {
            out.extend_from_slice(&(item.len() as u32).to_be_bytes());
            out.extend_from_slice(item);
        }
        Body::from(Bytes::from(out))
    }

    fn raw() -> (
        mpsc::Sender<Inbound>,
        mpsc::Receiver<crate::transport::OutFrame>,
        RawStream,
    ) {
        let (events, rx) = mpsc::channel(8);
        let (frames, written) = mpsc::channel(8);
        let window = StreamWindow {
            messages: 4,
            bytes: 1024,
        };
        let stream = RawStream::new(
            rx,
            Grant::new(frames, 3, window),
            Arc::new(|| RpcError::internal("closed")),
            "client",
        );
        (events, written, stream)
    }

    #[tokio::test]
    async fn batches_are_read_item_by_item_and_credit_goes_back() {
        let (events, mut written, mut stream) = raw();
        events
            .try_send(Inbound::Batch(batch(&[b"one", b"", b"three"])))
            .unwrap();
        events.try_send(Inbound::End(Ok(Reply::empty()))).unwrap();
        let mut items = Vec::new();
        while let Some(StreamEvent::Item(body)) = stream.next().await {
            items.push(body.into_one());
        }
        assert_eq!(items, [&b"one"[..], b"", b"three"]);
        assert!(stream.next().await.is_none(), "nothing after the end");
        // Half the window (2 of 4 messages) read: a credit went back.
        assert!(written.try_recv().is_ok(), "a credit frame");
    }

    #[tokio::test]
    async fn a_malformed_batch_ends_the_stream_and_dropping_it_tells_the_sender() {
        let (events, mut written, mut stream) = raw();
        let mut bad = batch(&[b"ok"]).into_one().to_vec();
        bad.extend_from_slice(&[0, 0, 0, 9, 1]);
        events.try_send(Inbound::Batch(Body::from(Bytes::from(bad)))).unwrap();
        assert!(matches!(stream.next().await, Some(StreamEvent::Item(_))));
        match stream.next().await {
            Some(StreamEvent::End(Err(RpcError::Protocol(ProtocolError::Malformed(_))))) => {}
            other => panic!("expected a malformed batch to end the stream, got {other:?}"),
        }
        drop(stream);
        let cancel = written.try_recv().expect("a cancel for the sender");
        let crate::transport::OutFrame::Frame { header, .. } = cancel else {
            panic!("a frame")
        };
        assert_eq!(header.message_type, crate::protocol::MessageType::Cancel);
    }
}
