//! The sending side of a stream: items are encoded straight into the frame that carries them,
//! and go out as the receiver's credit allows.
//!
//! Every StreamItem frame is a batch: each item a 4-byte length and its encoding. The sender
//! takes the items that are ready at once, while the credit lasts and the frame is under
//! 32 KiB, so a fast producer costs one frame (and one hand-over to the writer) per batch, not
//! per item, and no item is encoded twice or copied. A large byte string in an item stays a
//! piece of its own, written without a copy (see `shared_bytes`).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use futures_util::{FutureExt, Stream, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc;

use super::window::SendWindow;
use crate::arena::assemble;
use crate::body::Body;
use crate::metrics;
use crate::protocol::{Header, MessageType};
use crate::reply::Reply;
use crate::serializer::SerializerKind;
use crate::shared_bytes::Claimed;
use crate::transport::OutFrame;

/// A batch stops taking ready items at this many bytes.
const BATCH_BYTES: usize = 64 * 1024;

/// The items one side sends, each encoded when the sender takes it. Made by the generated
/// code ([`encode_items`](super::encode_items) and the like).
pub struct ItemStream {
    source: Pin<Box<dyn Source>>,
}

impl std::fmt::Debug for ItemStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemStream").finish_non_exhaustive()
    }
}

/// What an [`ItemStream`] wraps: its items, and how each is encoded into a batch.
trait Source: Send {
    /// The next item encoded at the end of `batch`; `None` at the end of the items; the reply
    /// that ends them instead (an application error, a failure).
    fn poll_encode(self: Pin<&mut Self>, cx: &mut Context<'_>, batch: &mut Batch) -> Poll<Option<Result<(), Reply>>>;
}

/// The items of `S`, each encoded by `F`.
struct Encoding<S, F> {
    items: S,
    encode: F,
}

impl<S, F> Source for Encoding<S, F>
where
    S: Stream + Send + Unpin,
    F: FnMut(S::Item, &mut Batch) -> Result<(), Reply> + Send + Unpin,
{
    fn poll_encode(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        batch: &mut Batch,
    ) -> Poll<Option<Result<(), Reply>>> {
        let this = &mut *self;
        this.items
            .poll_next_unpin(cx)
            .map(|item| item.map(|item| (this.encode)(item, batch)))
    }
}

impl ItemStream {
    /// The items of `items`, each encoded into the batch by `encode`.
    pub(crate) fn new<S, F>(items: S, encode: F) -> Self
    where
        S: Stream + Send + 'static,
        F: FnMut(S::Item, &mut Batch) -> Result<(), Reply> + Send + Unpin + 'static,
    {
        Self {
            source: Box::pin(Encoding {
                items: Box::pin(items),
                encode,
            }),
        }
    }

    fn poll_encode(&mut self, cx: &mut Context<'_>, batch: &mut Batch) -> Poll<Option<Result<(), Reply>>> {
        self.source.as_mut().poll_encode(cx, batch)
    }

    /// The next item alone, encoded; `Err` with the reply that ends the items (the HTTP
    /// ingress's NDJSON lines).
    #[cfg(feature = "http")]
    pub(crate) fn poll_next_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Body, Reply>>> {
        let mut batch = Batch::default();
        self.poll_encode(cx, &mut batch).map(|item| {
            item.map(|encoded| encoded.map(|()| batch.take().split_front(4).map(|(_, item)| item).unwrap_or_default()))
        })
    }
}

/// Items being encoded into one StreamItem frame: each a 4-byte length and its encoding, the
/// large byte strings it shares kept as pieces of their own.
#[derive(Default)]
pub(crate) struct Batch {
    buf: BytesMut,
    shared: Vec<(usize, Claimed)>,
    /// Bytes of the shared pieces.
    shared_len: usize,
    /// Items in the batch, and their bytes (without the lengths).
    items: usize,
    item_bytes: usize,
}

impl Batch {
    /// Encodes `value` with `serializer` as the batch's next item.
    pub(crate) fn put<T: Serialize + ?Sized>(&mut self, serializer: SerializerKind, value: &T) -> Result<(), Reply> {
        let start = self.buf.len();
        let shared_before = self.shared.len();
        self.buf.put_u32(0);
        if let Err(e) = serializer.encode_sharing(value, &mut self.buf, &mut self.shared) {
            self.buf.truncate(start);
            self.shared.truncate(shared_before);
            return Err(Reply::from_error(&e));
        }
        let shared: usize = self.shared[shared_before..].iter().map(|(_, c)| c.bytes.len()).sum();
        let len = self.buf.len() - start - 4 + shared;
        self.buf[start..start + 4].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
        self.shared_len += shared;
        self.items += 1;
        self.item_bytes += len;
        Ok(())
    }

    /// Bytes of the frame so far.
    fn len(&self) -> usize {
        self.buf.len() + self.shared_len
    }

    /// The frame's body; the batch is empty again.
    fn take(&mut self) -> Body {
        let shared = std::mem::take(&mut self.shared);
        (self.shared_len, self.items, self.item_bytes) = (0, 0, 0);
        assemble(self.buf.split().freeze(), shared)
    }
}

/// How a stream's items ended on the sending side.
#[derive(Debug)]
pub(crate) enum Sent {
    /// Every item was sent.
    All,
    /// The items ended with this reply (an application error, or a failure).
    Ended(Reply),
    /// The receiver asked to stop, or the connection is gone.
    Stopped,
    /// The receiver granted no room for the next items for this long.
    Stalled(Duration),
}

/// Who sends: `server` or `client` (the metrics' `side`).
pub(crate) type Side = &'static str;

/// Sends `items` as StreamItem frames on stream `id` (encoded with the serializer `serializer`)
/// through `tx`, each once `window` has room: the next item is not even taken from `items`
/// before then, so a slow receiver holds back whatever produces them, and one that grants no
/// room for `idle` ends the sending.
pub(crate) async fn send_items(
    items: &mut ItemStream,
    window: &SendWindow,
    tx: &mpsc::Sender<OutFrame>,
    id: u64,
    serializer: u8,
    side: Side,
    idle: Option<Duration>,
) -> Sent {
    let mut counted = Counted { side, sent: 0 };
    let mut batch = Batch::default();
    loop {
        // Most batches find room at once: no timer for them.
        let ready = match (window.ready().now_or_never(), idle) {
            (Some(ready), _) => ready,
            (None, None) => window.ready().await,
            (None, Some(idle)) => match tokio::time::timeout(idle, window.ready()).await {
                Ok(ready) => ready,
                Err(_) => return Sent::Stalled(idle),
            },
        };
        let Some((messages, bytes)) = ready else {
            return Sent::Stopped;
        };
        // The first item may wait; those after it are taken only while they are ready.
        let mut end = match std::future::poll_fn(|cx| items.poll_encode(cx, &mut batch)).await {
            None => return Sent::All,
            Some(Err(reply)) => return Sent::Ended(reply),
            Some(Ok(())) => None,
        };
        if end.is_none() {
            end = take_ready(items, &mut batch, messages, bytes);
        }
        let (sent, sent_bytes) = (batch.items, batch.item_bytes);
        window.spend(sent as i64, sent_bytes as i64);
        counted.sent += sent as u64;
        let mut header = Header::new(MessageType::StreamItem, id);
        header.serializer = serializer;
        if tx
            .send(OutFrame::Frame {
                header,
                body: batch.take(),
            })
            .await
            .is_err()
        {
            return Sent::Stopped;
        }
        if counted.sent >= 4096 {
            metrics::stream_messages_sent(side, std::mem::take(&mut counted.sent));
        }
        if let Some(end) = end {
            return end;
        }
    }
}

/// Adds to `batch` the items of `items` that are ready now, while the room (`messages`,
/// `bytes`) lasts and the frame is under [`BATCH_BYTES`]; how the items ended, if they did.
fn take_ready(items: &mut ItemStream, batch: &mut Batch, messages: i64, bytes: i64) -> Option<Sent> {
    let mut now = Context::from_waker(futures_util::task::noop_waker_ref());
    while messages > batch.items as i64 && bytes > batch.item_bytes as i64 && batch.len() < BATCH_BYTES {
        match items.poll_encode(&mut now, batch) {
            Poll::Pending => return None,
            Poll::Ready(None) => return Some(Sent::All),
            Poll::Ready(Some(Err(reply))) => return Some(Sent::Ended(reply)),
            Poll::Ready(Some(Ok(()))) => {}
        }
    }
    None
}

/// Items sent and not yet counted in the metrics; counted when the sending ends, however.
struct Counted {
    side: Side,
    sent: u64,
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.sent > 0 {
            metrics::stream_messages_sent(self.side, self.sent);
        }
    }
}
