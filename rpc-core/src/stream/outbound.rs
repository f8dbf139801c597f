//! The sending side of a stream: items go out as the receiver's credit allows.

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::window::SendWindow;
use super::ItemStream;
use crate::metrics;
use crate::protocol::{Header, MessageType};
use crate::reply::Reply;
use crate::transport::OutFrame;

/// How a stream's items ended on the sending side.
#[derive(Debug)]
pub(crate) enum Sent {
    /// Every item was sent.
    All,
    /// The items ended with this reply (an application error, or a failure).
    Ended(Reply),
    /// The receiver asked to stop, or the connection is gone.
    Stopped,
}

/// Who sends: `server` or `client` (the metrics' `side`).
pub(crate) type Side = &'static str;

/// Sends `items` as StreamItem frames on stream `id` (encoded with the serializer `serializer`)
/// through `tx`, each once `window` has room: the next item is not even taken from `items`
/// before then, so a slow receiver holds back whatever produces them.
pub(crate) async fn send_items(
    items: &mut ItemStream,
    window: &SendWindow,
    tx: &mpsc::Sender<OutFrame>,
    id: u64,
    serializer: u8,
    side: Side,
) -> Sent {
    let mut counted = Counted { side, sent: 0 };
    loop {
        if !window.ready().await {
            return Sent::Stopped;
        }
        let body = match items.next().await {
            None => return Sent::All,
            Some(Err(end)) => return Sent::Ended(end),
            Some(Ok(body)) => body,
        };
        window.spend(body.len());
        let mut header = Header::new(MessageType::StreamItem, id);
        header.serializer = serializer;
        if tx.send(OutFrame::Frame { header, body }).await.is_err() {
            return Sent::Stopped;
        }
        counted.sent += 1;
        if counted.sent == 256 {
            metrics::stream_messages_sent(side, std::mem::take(&mut counted.sent));
        }
    }
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
