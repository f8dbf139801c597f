//! The receiving side of a stream: [`RawStream`], the encoded items as they arrive, then how
//! the stream ended; credit goes back to the sender as the reader takes items.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use super::window::Grant;
use crate::body::Body;
use crate::error::RpcError;
use crate::interceptor::Outcome;
use crate::protocol::Status;
use crate::reply::Reply;

/// What the connection's reader hands a stream's receiver.
pub(crate) enum Inbound {
    /// One encoded item.
    Item(Body),
    /// The sender's end: its Response (a client) or StreamEnd (a server), or why it broke.
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

    fn end(&mut self, end: Result<Reply, RpcError>, sender_gone: bool) -> Poll<Option<StreamEvent>> {
        self.done = true;
        self.sender_gone = sender_gone;
        if let Some(on_end) = self.on_end.take() {
            on_end(Outcome::from_result(&end, |reply| {
                reply.status == Status::ApplicationError
            }));
        }
        Poll::Ready(Some(StreamEvent::End(end)))
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
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(Inbound::Item(body))) => {
                this.grant.took(body.len());
                this.received += 1;
                if this.received == 256 {
                    crate::metrics::stream_messages_received(this.side, std::mem::take(&mut this.received));
                }
                if let Some(timer) = this.timer.as_mut().filter(|t| t.idle.is_some()) {
                    timer.last = Instant::now();
                }
                Poll::Ready(Some(StreamEvent::Item(body)))
            }
            Poll::Ready(Some(Inbound::End(end))) => this.end(end, true),
            Poll::Ready(None) => {
                let error = (this.closed)();
                this.end(Err(error), true)
            }
            Poll::Pending => match this.poll_timer(cx) {
                Some(timeout) => this.end(Err(timeout), false),
                None => Poll::Pending,
            },
        }
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
