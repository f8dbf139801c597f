//! `Feed`: a service with one streaming method per behaviour the stream tests need, and an
//! implementation that counts what its streams produce and notices when they are dropped.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use waypost_core::Streaming;

/// The error of [`Feed`]'s fallible methods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeedError {
    /// The stream failed on purpose at this item.
    FailedAt(u64),
    /// The client sent a number the method refuses.
    Refused(u64),
}

/// Streams of every shape.
#[waypost_core::service(name = "Feed", version = "1.0")]
pub trait Feed {
    /// `count` numbers from 0, `delay_ms` apart (`u64::MAX`: without end).
    async fn count(&self, count: u64, delay_ms: u64) -> Streaming<u64>;
    /// The sum of the first `limit` numbers the client sends (then the handler drops the
    /// rest); refuses 13.
    async fn sum(&self, limit: u64, numbers: Streaming<u64>) -> Result<u64, FeedError>;
    /// Each message back, prefixed, as it arrives.
    async fn chat(&self, prefix: String, messages: Streaming<String>) -> Streaming<String>;
    /// Numbers from 0, then the typed error `FailedAt(fail_at)`.
    async fn faulty(&self, fail_at: u64) -> Streaming<Result<u64, FeedError>>;
    /// Byte strings of `size` bytes without end, as fast as the reader takes them.
    async fn blobs(&self, size: u32) -> Streaming<Vec<u8>>;
    /// The bytes the client uploads, counted.
    async fn upload(&self, chunks: Streaming<Vec<u8>>) -> u64;
}

/// What a [`FeedImpl`]'s streams did, shared with the test.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Items the server's streams produced (taken by the server to send).
    pub produced: AtomicU64,
    /// Streams the server created that were dropped, ended or not.
    pub dropped: AtomicUsize,
    /// Client items the handlers read.
    pub read: AtomicU64,
}

/// The [`Feed`] implementation.
#[derive(Debug, Default, Clone)]
pub struct FeedImpl {
    /// What its streams did.
    pub stats: Arc<FeedStats>,
}

/// Counts a stream's drop in [`FeedStats::dropped`].
struct DropCount(Arc<FeedStats>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

impl FeedImpl {
    /// `items`, counted as they are taken and when dropped.
    fn counted<T: Send + 'static>(&self, items: impl futures_util::Stream<Item = T> + Send + 'static) -> Streaming<T> {
        let stats = self.stats.clone();
        let guard = DropCount(stats.clone());
        Streaming::from_stream(items.map(move |item| {
            let _ = &guard;
            stats.produced.fetch_add(1, Ordering::SeqCst);
            item
        }))
    }
}

impl Feed for FeedImpl {
    async fn count(&self, count: u64, delay_ms: u64) -> Streaming<u64> {
        self.counted(futures_util::stream::iter(0..count).then(move |i| async move {
            if delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            i
        }))
    }

    async fn sum(&self, limit: u64, mut numbers: Streaming<u64>) -> Result<u64, FeedError> {
        let mut sum = 0;
        let mut taken = 0;
        while taken < limit {
            match numbers.next().await {
                Some(Ok(13)) => return Err(FeedError::Refused(13)),
                Some(Ok(n)) => sum += n,
                Some(Err(_)) | None => break,
            }
            taken += 1;
            self.stats.read.fetch_add(1, Ordering::SeqCst);
        }
        Ok(sum)
    }

    async fn chat(&self, prefix: String, messages: Streaming<String>) -> Streaming<String> {
        let stats = self.stats.clone();
        self.counted(messages.filter_map(move |message| {
            let reply = message.ok().map(|m| {
                stats.read.fetch_add(1, Ordering::SeqCst);
                format!("{prefix}{m}")
            });
            async move { reply }
        }))
    }

    async fn faulty(&self, fail_at: u64) -> Streaming<Result<u64, FeedError>> {
        self.counted(
            futures_util::stream::iter(0..=fail_at).map(move |i| match i == fail_at {
                true => Err(FeedError::FailedAt(i)),
                false => Ok(i),
            }),
        )
    }

    async fn blobs(&self, size: u32) -> Streaming<Vec<u8>> {
        self.counted(futures_util::stream::repeat_with(move || vec![7u8; size as usize]))
    }

    async fn upload(&self, mut chunks: Streaming<Vec<u8>>) -> u64 {
        let mut total = 0;
        while let Some(Ok(chunk)) = chunks.next().await {
            total += chunk.len() as u64;
            self.stats.read.fetch_add(1, Ordering::SeqCst);
        }
        total
    }
}
