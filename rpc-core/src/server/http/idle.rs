//! When an HTTP connection is idle: no request begun or finished for the idle timeout and none
//! being answered, where a response counts until its body is sent (so an NDJSON stream keeps
//! its connection). `serve` then closes the connection gracefully.
//!
//! And when its client stalls it: a response has a frame ready that hyper has not taken for
//! the stream idle timeout. hyper takes a response's next frame only once the client can
//! receive it (an HTTP/2 stream whose window the client never opens, an HTTP/1.1 socket the
//! client does not read), and nothing else ends such a response: its stream would hold its call
//! slot, and the connection its connection slot, for ever. `serve` then closes the connection
//! as for idleness, which drops every response body on it and frees what they hold.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::HttpBody;

/// What tells that an HTTP connection (HTTP/1.1 keep-alive or HTTP/2) is idle: when it last
/// began or finished a request, and how many requests it is answering.
pub(super) struct Idleness {
    opened: Instant,
    /// Milliseconds after `opened` when a request last began or finished.
    last_ms: AtomicU64,
    answering: AtomicUsize,
    /// Responses with a frame ready that the client has not taken, since when, by response.
    unread: Mutex<HashMap<u64, Instant>>,
    /// Told when `unread` gets its first entry.
    first_unread: Notify,
    next_response: AtomicU64,
}

impl Idleness {
    pub(super) fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
            answering: AtomicUsize::new(0),
            unread: Mutex::new(HashMap::new()),
            first_unread: Notify::new(),
            next_response: AtomicU64::new(0),
        }
    }

    fn unread(&self) -> MutexGuard<'_, HashMap<u64, Instant>> {
        self.unread.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// A request began; the guard marks its end (held by its response's body, see
    /// [`Tracked`]).
    pub(super) fn answering(self: &Arc<Self>) -> Answering {
        self.touch();
        self.answering.fetch_add(1, Ordering::Relaxed);
        Answering {
            idleness: self.clone(),
            id: self.next_response.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Returns once a response has had a frame ready that its client did not take for
    /// `timeout`.
    pub(super) async fn reader_stalled_for(&self, timeout: Duration) {
        loop {
            let oldest = self.unread().values().min().copied();
            match oldest {
                Some(since) if since.elapsed() >= timeout => return,
                Some(since) => tokio::time::sleep_until(since + timeout).await,
                None => self.first_unread.notified().await,
            }
        }
    }

    /// Returns once no request has begun or finished for `timeout` and none is being answered
    /// (a response counts until its body is sent: an NDJSON stream keeps its connection).
    pub(super) async fn idle_for(&self, timeout: Duration) {
        loop {
            let quiet_until = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + timeout;
            if Instant::now() < quiet_until {
                tokio::time::sleep_until(quiet_until).await;
            } else if self.answering.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(timeout).await;
            } else {
                return;
            }
        }
    }
}

/// A request being answered (see [`Idleness::answering`]).
pub(super) struct Answering {
    idleness: Arc<Idleness>,
    id: u64,
}

impl Answering {
    /// The response has a frame ready for its client (its head, or a frame of its body just
    /// handed to hyper), unless it had one already.
    fn unread(&self) {
        let mut unread = self.idleness.unread();
        if unread.is_empty() {
            self.idleness.first_unread.notify_one();
        }
        unread.entry(self.id).or_insert_with(Instant::now);
    }

    /// The client took what was ready (hyper asked for the next frame).
    fn taken(&self) {
        self.idleness.unread().remove(&self.id);
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.taken();
        self.idleness.touch();
        self.idleness.answering.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response's body, which keeps its request counted as being answered until it is sent or
/// dropped, and tells when a frame of it waits for the client.
pub(super) struct Tracked {
    body: HttpBody,
    answering: Answering,
}

impl Tracked {
    /// The body of a response whose head is ready to go.
    pub(super) fn new(body: HttpBody, answering: Answering) -> Self {
        if !hyper::body::Body::is_end_stream(&body) {
            answering.unread();
        }
        Self { body, answering }
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.answering.taken();
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        // hyper asks for no frame after the last.
        if matches!(polled, Poll::Ready(Some(_))) && !self.body.is_end_stream() {
            self.answering.unread();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
