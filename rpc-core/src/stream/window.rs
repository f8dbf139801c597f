//! Credit: how much a stream's sender may still send ([`SendWindow`]), and how its receiver
//! gives room back as its reader takes items ([`Grant`]).

use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::Deserialize;
use tokio::sync::{mpsc, Notify};

use crate::body::Body;
use crate::protocol::{Credit, Header, MessageType};
use crate::transport::{send_control, OutFrame};

/// A stream receiver's window: the items and bytes its peer may send ahead of its reader.
/// `rpc.server.stream_window` and `rpc.consumer.stream_window` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamWindow {
    /// Items received but not yet read, at most (at least 1).
    pub messages: u32,
    /// Bytes of items received but not yet read, at most (plus one item; at least 1).
    pub bytes: u32,
}

impl Default for StreamWindow {
    fn default() -> Self {
        Self {
            messages: 65536,
            bytes: 1024 * 1024,
        }
    }
}

impl StreamWindow {
    /// The window as the credit that grants it.
    pub fn credit(self) -> Credit {
        Credit {
            messages: self.messages.max(1),
            bytes: self.bytes.max(1),
        }
    }
}

/// The sender's side: the credit left, the wait for more, and whether the receiver asked to
/// stop.
#[derive(Default)]
pub(crate) struct SendWindow {
    state: Mutex<Room>,
    changed: Notify,
}

#[derive(Default)]
struct Room {
    messages: i64,
    bytes: i64,
    /// The receiver granted credit at least once (on a client: the server accepted).
    granted: bool,
    /// The receiver does not want more items.
    stopped: bool,
}

impl SendWindow {
    /// A window with `credit` granted already.
    pub(crate) fn with(credit: Credit) -> Self {
        let window = Self::default();
        window.grant(credit);
        window
    }

    fn room(&self) -> MutexGuard<'_, Room> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The receiver granted more room.
    pub(crate) fn grant(&self, credit: Credit) {
        {
            let mut room = self.room();
            room.messages += i64::from(credit.messages);
            room.bytes += i64::from(credit.bytes);
            room.granted = true;
        }
        self.changed.notify_waiters();
    }

    /// The receiver wants no more items (or the stream ended): waiters give up.
    pub(crate) fn stop(&self) {
        self.room().stopped = true;
        self.changed.notify_waiters();
    }

    /// Waits until one more item may be sent: the room left then (messages, bytes), or `None`
    /// when the receiver stopped the stream.
    pub(crate) async fn ready(&self) -> Option<(i64, i64)> {
        self.wait(|room| match room.stopped {
            true => Some(None),
            false => (room.messages > 0 && room.bytes > 0).then_some(Some((room.messages, room.bytes))),
        })
        .await
    }

    /// Waits for the receiver's first grant (which a stream that ended at once may have
    /// before its stop): `false` when the stream stopped without one.
    pub(crate) async fn accepted(&self) -> bool {
        self.wait(|room| match (room.granted, room.stopped) {
            (true, _) => Some(true),
            (false, true) => Some(false),
            (false, false) => None,
        })
        .await
    }

    /// Waits until `decide` has an answer.
    async fn wait<T>(&self, decide: impl Fn(&Room) -> Option<T>) -> T {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(answer) = decide(&self.room()) {
                return answer;
            }
            changed.await;
        }
    }

    /// `messages` items of `bytes` bytes in all were sent.
    pub(crate) fn spend(&self, messages: i64, bytes: i64) {
        let mut room = self.room();
        room.messages -= messages;
        room.bytes -= bytes;
    }
}

/// The receiver's side: counts what its reader took and grants it back to the sender once
/// half the window has been read (fewer, larger Credit frames than one per item).
pub(crate) struct Grant {
    tx: mpsc::Sender<OutFrame>,
    id: u64,
    window: Credit,
    owed_messages: u32,
    owed_bytes: u64,
}

impl Grant {
    /// Grants on stream `id` of the connection writing through `tx`, whose window is `window`.
    pub(crate) fn new(tx: mpsc::Sender<OutFrame>, id: u64, window: StreamWindow) -> Self {
        Self {
            tx,
            id,
            window: window.credit(),
            owed_messages: 0,
            owed_bytes: 0,
        }
    }

    /// The reader took an item of `len` bytes.
    pub(crate) fn took(&mut self, len: usize) {
        self.owed_messages += 1;
        self.owed_bytes += len as u64;
        if self.owed_messages * 2 >= self.window.messages || self.owed_bytes * 2 >= u64::from(self.window.bytes) {
            let credit = Credit {
                messages: std::mem::take(&mut self.owed_messages),
                bytes: u32::try_from(std::mem::take(&mut self.owed_bytes)).unwrap_or(u32::MAX),
            };
            send_control(&self.tx, credit_frame(self.id, credit));
        }
    }

    /// Asks the sender to stop sending (the reader is gone).
    pub(crate) fn stop_sender(&self) {
        send_control(&self.tx, control_frame(MessageType::Cancel, self.id));
    }
}

/// A Credit frame on stream `id`.
pub(crate) fn credit_frame(id: u64, credit: Credit) -> OutFrame {
    OutFrame::Frame {
        header: Header::new(MessageType::Credit, id),
        body: Body::from(credit.encode()),
    }
}

/// An empty frame of `kind` on stream `id` (Cancel, StreamEnd).
pub(crate) fn control_frame(kind: MessageType, id: u64) -> OutFrame {
    OutFrame::Frame {
        header: Header::new(kind, id),
        body: Body::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_sender_waits_for_credit_and_stops_when_told() {
        let window = Arc::new(SendWindow::with(Credit {
            messages: 2,
            bytes: 100,
        }));
        assert_eq!(window.ready().await, Some((2, 100)));
        window.spend(1, 60);
        assert_eq!(window.ready().await, Some((1, 40)));
        window.spend(1, 60); // overruns the bytes by one item
        let waiting = {
            let window = window.clone();
            tokio::spawn(async move { window.ready().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "no credit: the sender waits");
        window.grant(Credit { messages: 1, bytes: 10 });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "bytes still overdrawn");
        window.grant(Credit {
            messages: 0,
            bytes: 100,
        });
        let room = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(room, Some((1, 90)));
        let stopped = {
            let window = Arc::new(SendWindow::default());
            let waiter = window.clone();
            let task = tokio::spawn(async move { waiter.accepted().await });
            window.stop();
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .unwrap()
                .unwrap()
        };
        assert!(!stopped);
    }

    #[tokio::test]
    async fn a_receiver_grants_back_after_half_its_window() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut grant = Grant::new(
            tx,
            7,
            StreamWindow {
                messages: 4,
                bytes: 1000,
            },
        );
        grant.took(10);
        assert!(rx.try_recv().is_err());
        grant.took(10);
        let Ok(OutFrame::Frame { header, body }) = rx.try_recv() else {
            panic!("a credit frame")
        };
        assert_eq!((header.message_type, header.request_id), (MessageType::Credit, 7));
        assert_eq!(
            Credit::parse(&body.into_one()).unwrap(),
            Credit { messages: 2, bytes: 20 }
        );
        grant.took(600);
        let Ok(OutFrame::Frame { body, .. }) = rx.try_recv() else {
            panic!("bytes alone grant too")
        };
        assert_eq!(
            Credit::parse(&body.into_one()).unwrap(),
            Credit {
                messages: 1,
                bytes: 600
            }
        );
    }
}
