//! Streaming calls on a connection: the streams it carries by request id, the frames that feed
//! them (items, the client's end, credit), and the task that runs each one.
//!
//! An admitted stream gets a slot (the sender of its input, when the method takes a stream,
//! and the credit its own items may use) and a task registered like a call's, so a Cancel or
//! the connection's end drops it. The task runs the handler through the server's layers (the
//! layers see the stream start: the handler answered its items), then sends the items as the
//! client's credit allows, all inside the call's context and under its deadline, and ends the
//! call with a Response. When the server's drain times out, a stream still running ends with
//! `ShuttingDown`.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::FutureExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::call::{Invocation, ServerCall, StreamParts};
use super::finish::{panicked, with_deadline};
use super::limits::CallPermit;
use super::Shared;
use crate::body::Body;
use crate::context::{self, CallContext};
use crate::error::{ProtocolError, RpcError};
use crate::future::BoxFuture;
use crate::interceptor::Outcome;
use crate::metrics;
use crate::protocol::{Credit, Header, MessageType, Status};
use crate::reply::Reply;
use crate::serializer::SerializerKind;
use crate::service::Service;
use crate::stream::{send_items, Grant, Inbound, RawStream, SendWindow, Sent, StreamWindow};
use crate::transport::OutFrame;

/// The streams of one connection, by request id.
#[derive(Default)]
pub(crate) struct Streams {
    slots: Mutex<HashMap<u64, Slot>>,
}

struct Slot {
    /// Where the client's items go, until its StreamEnd.
    input: Option<mpsc::Sender<Inbound>>,
    /// The room the client granted for this side's items.
    window: Arc<SendWindow>,
}

impl Streams {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An item from the client. One beyond the credit this side granted breaks the protocol;
    /// one for a stream that ended, or whose handler dropped its input, is dropped.
    pub(crate) fn item(&self, id: u64, body: Body) -> Result<(), ProtocolError> {
        let slots = self.lock();
        let Some(input) = slots.get(&id).and_then(|slot| slot.input.as_ref()) else {
            return Ok(());
        };
        match input.try_send(Inbound::Batch(body)) {
            Err(mpsc::error::TrySendError::Full(_)) => {
                Err(ProtocolError::Malformed("stream items beyond the credit granted"))
            }
            _ => Ok(()),
        }
    }

    /// The client sent all its items.
    pub(crate) fn end(&self, id: u64) {
        let input = self.lock().get_mut(&id).and_then(|slot| slot.input.take());
        if let Some(input) = input {
            // There is room: the window leaves one place for the end.
            let _ = input.try_send(Inbound::End(Ok(Reply::empty())));
        }
    }

    /// The client granted room for more items.
    pub(crate) fn credit(&self, id: u64, body: &Body) -> Result<(), ProtocolError> {
        let credit = Credit::parse(&body.as_one())?;
        if let Some(slot) = self.lock().get(&id) {
            slot.window.grant(credit);
        }
        Ok(())
    }

    /// Opens the slot of stream `id`; it is forgotten when the returned guard goes.
    fn open(self: &Arc<Self>, id: u64, input: Option<mpsc::Sender<Inbound>>, window: Arc<SendWindow>) -> SlotGuard {
        self.lock().insert(id, Slot { input, window });
        SlotGuard {
            streams: self.clone(),
            id,
        }
    }
}

/// Forgets a stream's slot when its task ends, however it ends.
struct SlotGuard {
    streams: Arc<Streams>,
    id: u64,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(slot) = self.streams.lock().remove(&self.id) {
            slot.window.stop();
        }
    }
}

/// An admitted streaming call, ready to start.
pub(crate) struct StreamCall {
    pub(crate) service: Arc<dyn Service>,
    pub(crate) ctx: CallContext,
    pub(crate) serializer: SerializerKind,
    /// The encoded arguments, without the client's window.
    pub(crate) args: Body,
    /// The client's receive window: the first credit of this side's items.
    pub(crate) client_window: Credit,
    pub(crate) header: Header,
    pub(crate) deadline: Option<Instant>,
    pub(crate) permit: CallPermit,
    pub(crate) held: Option<OwnedSemaphorePermit>,
}

/// What a stream's task needs of its connection.
pub(crate) struct StreamHost<'a> {
    pub(crate) shared: &'a Arc<Shared>,
    pub(crate) streams: &'a Arc<Streams>,
    pub(crate) tx: &'a mpsc::Sender<OutFrame>,
    /// This side's receive window.
    pub(crate) window: StreamWindow,
}

impl StreamCall {
    /// Opens the stream's slot and accepts it (the Credit frame that grants this side's
    /// window); returns the task that runs it.
    pub(crate) async fn start(self, host: StreamHost<'_>) -> Option<impl std::future::Future<Output = ()> + Send> {
        let id = self.header.request_id;
        let takes_stream = self
            .service
            .stream_shape(self.ctx.method())
            .is_some_and(|shape| shape.client_sends());
        let (input_tx, input) = match takes_stream {
            true => {
                let capacity = host.window.credit().messages as usize + 1;
                let (tx, rx) = mpsc::channel(capacity);
                let grant = Grant::new(host.tx.clone(), id, host.window);
                let input = RawStream::new(
                    rx,
                    grant,
                    Arc::new(|| RpcError::internal("the client's connection closed")),
                    "server",
                )
                .with_timeouts(None, host.shared.stream_idle);
                (Some(tx), Some(input))
            }
            false => (None, None),
        };
        let window = Arc::new(SendWindow::with(self.client_window));
        let slot = host.streams.open(id, input_tx, window.clone());
        // The client sends nothing on the stream before this frame.
        let accepted = crate::stream::credit_frame(id, host.window.credit());
        host.tx.send(accepted).await.ok()?;
        let task = StreamTask {
            shared: host.shared.clone(),
            tx: host.tx.clone(),
            window,
            slot,
            input,
            call: self,
        };
        Some(task.run())
    }
}

struct StreamTask {
    shared: Arc<Shared>,
    tx: mpsc::Sender<OutFrame>,
    window: Arc<SendWindow>,
    slot: SlotGuard,
    input: Option<RawStream>,
    call: StreamCall,
}

impl StreamTask {
    /// Runs the stream to its end and sends the Response that ends the call; dropped (the
    /// handler with it) when the client cancels or leaves.
    async fn run(self) {
        let StreamTask {
            shared,
            tx,
            window,
            slot,
            input,
            call,
        } = self;
        let StreamCall {
            service,
            ctx,
            serializer,
            args,
            header,
            deadline,
            permit,
            held,
            ..
        } = call;
        let _held = (slot, permit, held);
        let id = header.request_id;
        let output = Arc::new(Mutex::new(None));
        let parts = StreamParts {
            input,
            output: output.clone(),
        };
        let handler = start_handler(
            &shared,
            ServerCall::streaming(ctx.clone(), serializer, args, service, parts),
        );
        let tx_items = tx.clone();
        let stream_idle = shared.stream_idle;
        let work = async move {
            let reply = handler.await;
            let items = output.lock().unwrap_or_else(PoisonError::into_inner).take();
            match items {
                Some(mut items) if reply.status == Status::Ok => {
                    match send_items(
                        &mut items,
                        &window,
                        &tx_items,
                        id,
                        serializer.id(),
                        "server",
                        stream_idle,
                    )
                    .await
                    {
                        Sent::All => Some(Reply::empty()),
                        Sent::Ended(end) => Some(end),
                        Sent::Stalled(idle) => Some(Reply::failure(
                            Status::DeadlineExceeded,
                            format!("the stream's reader granted no room for its next items for {idle:?}"),
                        )),
                        // The client stopped reading (its Cancel drops this task) or left.
                        Sent::Stopped => None,
                    }
                }
                _ => Some(reply),
            }
        };
        let mut ended = StreamEnded::new(shared.clone(), ctx.clone());
        let scoped = context::scope(ctx.clone(), AssertUnwindSafe(work).catch_unwind());
        let mut scoped = pin!(scoped);
        let outcome = tokio::select! {
            biased;
            _ = shared.abort.cancelled() => return,
            _ = shared.ending.cancelled() => Some(Reply::failure(Status::ShuttingDown, "server shutting down")),
            outcome = with_deadline(scoped.as_mut(), deadline) => match outcome {
                None => Some(Reply::failure(Status::DeadlineExceeded, "deadline exceeded on the server")),
                Some(Ok(reply)) => reply,
                Some(Err(panic)) => Some(panicked("", id, panic.as_ref())),
            },
        };
        if let Some(reply) = outcome {
            ended.outcome = Outcome::from_status(reply.status);
            let mut end = Header::new(MessageType::Response, id);
            end.serializer = header.serializer;
            end.status = reply.status;
            let _ = tx
                .send(OutFrame::Frame {
                    header: end,
                    body: reply.body,
                })
                .await;
        }
    }
}

/// The handler of a streaming call, through the server's layers when it has any: it answers
/// `Ok` (empty) once it returned its items, which the call's [`StreamParts`] then hold.
pub(crate) fn start_handler(shared: &Shared, call: ServerCall) -> BoxFuture<'static, Reply> {
    Box::pin(Invocation::new(shared.stack.as_ref(), call, false))
}

/// Counts a stream's end and tells the interceptors, however it ends (dropped when the
/// client cancels or leaves: `Cancelled`, unless an outcome was set).
pub(crate) struct StreamEnded {
    shared: Arc<Shared>,
    ctx: CallContext,
    pub(crate) outcome: Outcome,
}

impl StreamEnded {
    pub(crate) fn new(shared: Arc<Shared>, ctx: CallContext) -> Self {
        Self {
            shared,
            ctx,
            outcome: Outcome::Cancelled,
        }
    }
}

impl Drop for StreamEnded {
    fn drop(&mut self) {
        metrics::server_stream_ended(self.ctx.service(), self.ctx.method(), self.outcome);
        if !self.shared.interceptors.is_empty() {
            self.shared.interceptors.on_response(&self.ctx, self.outcome);
        }
    }
}
