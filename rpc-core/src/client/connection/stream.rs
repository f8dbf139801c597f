//! Opening a stream on a connection, and the task that sends a client's items under the
//! server's credit.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use super::state::{Shared, StreamSlot};
use super::Connection;
use crate::body::Body;
use crate::error::RpcError;
use crate::protocol::{flags, Header, MessageType};
use crate::serializer::SerializerKind;
use crate::stream::{control_frame, send_items, Grant, Inbound, ItemStream, RawStream, SendWindow, Sent, StreamWindow};
use crate::transport::OutFrame;

/// What opening a stream takes besides its request.
pub struct StreamOpen {
    /// The client's items, when the method takes a stream; taken when the server accepts.
    pub input: std::sync::Mutex<Option<ItemStream>>,
    /// The client's receive window for the server's items.
    pub window: StreamWindow,
    /// When the whole stream must have ended; none: no limit.
    pub deadline: Option<Instant>,
    /// The longest wait between two of the server's items (or its end); none: no limit.
    pub idle_timeout: Option<Duration>,
}

impl Connection {
    /// Opens a stream: sends the request (`body`: its prefix, then the client's window, then
    /// the arguments) and waits, until `accept_by`, for the server to accept it. Then the
    /// client's items (if any) go out from a task of their own as the server's credit allows,
    /// and the returned stream yields the server's items and the call's end; it keeps the
    /// connection open while it lasts. Dropping it cancels the call.
    pub(crate) async fn open_stream(
        self: &Arc<Self>,
        service: &str,
        method: &str,
        serializer: SerializerKind,
        body: Body,
        open: &StreamOpen,
        accept_by: Instant,
    ) -> Result<RawStream, RpcError> {
        let asked = Instant::now();
        let shared = &self.shared;
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (events, rx) = mpsc::channel(open.window.credit().messages as usize + 1);
        let window = Arc::new(SendWindow::default());
        {
            let mut pending = shared.pending();
            if pending.closed.is_some() {
                drop(pending);
                return Err(shared.closed_error(false));
            }
            let slot = StreamSlot {
                events: events.clone(),
                window: window.clone(),
                service: service.into(),
                method: method.into(),
            };
            pending.streams.insert(id, slot);
        }
        // An open stream counts as a call in flight (the writer gathers frames while more
        // may follow).
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let registration = StreamRegistration {
            shared: shared.clone(),
            id,
        };
        let closed_by = shared.clone();
        let mut raw = RawStream::new(
            rx,
            Grant::new(self.tx.clone(), id, open.window),
            Arc::new(move || closed_by.closed_error(true)),
            "client",
        );
        let mut header = Header::new(MessageType::Request, id);
        header.serializer = serializer.id();
        header.flags = flags::STREAM;
        header.timeout_ms = match open.deadline {
            Some(d) => u32::try_from(d.saturating_duration_since(Instant::now()).as_millis())
                .unwrap_or(u32::MAX)
                .max(1),
            None => 0,
        };
        if self.tx.send(OutFrame::Frame { header, body }).await.is_err() {
            return Err(shared.closed_error(false));
        }
        // Why a stream ended before it was accepted: the server's refusal, or the connection's end.
        let refusal = |raw: &mut RawStream| match futures_util::StreamExt::next(raw).now_or_never() {
            Some(Some(crate::stream::StreamEvent::End(Err(e)))) => e,
            Some(Some(_)) => RpcError::internal("the server ended the stream before accepting it"),
            _ => shared.closed_error(true),
        };
        let refused = tokio::select! {
            biased;
            accepted = window.accepted() => (!accepted).then(|| refusal(&mut raw)),
            _ = futures_util::StreamExt::next(&mut raw) => Some(refusal(&mut raw)),
            _ = tokio::time::sleep_until(accept_by) => {
                shared.request_probe();
                Some(RpcError::Timeout(asked.elapsed()))
            }
        };
        if let Some(error) = refused {
            return Err(error);
        }
        let input = open.input.lock().unwrap_or_else(PoisonError::into_inner).take();
        let sender = input.map(|input| {
            let pump = ItemPump {
                input,
                window,
                tx: self.tx.clone(),
                events: events.downgrade(),
                id,
                serializer: serializer.id(),
                idle: open.idle_timeout,
            };
            AbortOnDropHandle::new(tokio::spawn(pump.run()))
        });
        drop(events);
        Ok(raw
            .with_timeouts(open.deadline, open.idle_timeout)
            .owning((registration, sender, self.clone())))
    }
}

/// Forgets a stream's slot when its reader goes.
struct StreamRegistration {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for StreamRegistration {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        let slot = self.shared.pending().streams.remove(&self.id);
        if let Some(slot) = slot {
            slot.window.stop();
        }
        self.shared.close_if_drained();
    }
}

/// Sends a client's items, then its StreamEnd.
struct ItemPump {
    input: ItemStream,
    window: Arc<SendWindow>,
    tx: mpsc::Sender<OutFrame>,
    /// The stream's events, to end it when an item cannot be encoded.
    events: mpsc::WeakSender<Inbound>,
    id: u64,
    serializer: u8,
    /// A server that grants no room this long ends the stream.
    idle: Option<std::time::Duration>,
}

impl ItemPump {
    async fn run(mut self) {
        match send_items(
            &mut self.input,
            &self.window,
            &self.tx,
            self.id,
            self.serializer,
            "client",
            self.idle,
        )
        .await
        {
            Sent::All => {
                let _ = self.tx.send(control_frame(MessageType::StreamEnd, self.id)).await;
            }
            Sent::Ended(reply) => {
                // An item could not be encoded: the call fails here and is cancelled there.
                if let Some(events) = self.events.upgrade() {
                    let error = RpcError::Encode(reply.message());
                    let _ = events.try_send(Inbound::End(Err(error)));
                }
            }
            Sent::Stalled(idle) => {
                if let Some(events) = self.events.upgrade() {
                    let _ = events.try_send(Inbound::End(Err(RpcError::Timeout(idle))));
                }
            }
            Sent::Stopped => {}
        }
    }
}
