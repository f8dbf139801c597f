//! When an HTTP connection is idle: no request begun or finished for the idle timeout and none
//! being answered, where a response counts until its body is sent (so an NDJSON stream keeps
//! its connection). `serve` then closes the connection gracefully.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::HttpBody;

/// What tells that an HTTP connection (HTTP/1.1 keep-alive or HTTP/2) is idle: when it last
/// began or finished a request, and how many requests it is answering.
pub(super) struct Idleness {
    opened: Instant,
    /// Milliseconds after `opened` when a request last began or finished.
    last_ms: AtomicU64,
    answering: AtomicUsize,
}

impl Idleness {
    pub(super) fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
            answering: AtomicUsize::new(0),
        }
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
        Answering(self.clone())
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
pub(super) struct Answering(Arc<Idleness>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.touch();
        self.0.answering.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response's body, which keeps its request counted as being answered until it is sent or
/// dropped.
pub(super) struct Tracked {
    pub(super) body: HttpBody,
    pub(super) _answering: Answering,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
