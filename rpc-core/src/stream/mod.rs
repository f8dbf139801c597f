//! Streaming calls: a method that returns a stream of items, takes one as its last argument,
//! or both (see the protocol docs, "Streams", for the frames).
//!
//! * [`Streaming<T, E>`] is the stream a user holds: what a handler returns (made with
//!   [`Streaming::from_stream`] or [`Streaming::from_iter`]), what a handler receives as its
//!   streamed argument, and what a generated client returns. It is a
//!   `Stream<Item = Result<T, RpcError<E>>>`; an error ends it.
//! * Underneath, a [`RawStream`] (module `inbound`) receives encoded items from a connection
//!   and gives credit back as they are read, and the sending side (module `outbound`) sends
//!   an [`ItemStream`]'s items only while the receiver's credit lasts ([`StreamWindow`],
//!   module `window`), taking and encoding the next item only then: a slow reader holds back
//!   the writer, and neither side buffers more than a window. Items ready at once travel in
//!   one frame.
//! * Dropping a stream cancels the other side's work: a client that drops its stream cancels
//!   the call (the server drops the handler's future); a handler that drops its input stream
//!   stops the client sending.

mod inbound;
mod outbound;
mod window;

/// Re-exported so a stream's user needs no other crate: `use waypost::stream::StreamExt;` for
/// `.next().await`, `waypost::stream::iter(items)` for a stream of a collection's items.
pub use futures_util::stream::{iter, Stream, StreamExt};
pub use inbound::{RawStream, StreamEvent};
pub use window::StreamWindow;

pub(crate) use inbound::{Inbound, ItemAt, Polled};
pub use outbound::ItemStream;
pub(crate) use outbound::{send_items, Sent};
pub(crate) use window::{control_frame, credit_frame, Grant, SendWindow};

use std::convert::Infallible;
use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::stream::BoxStream;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::body::Body;
use crate::error::RpcError;
use crate::protocol::Status;
use crate::reply::Reply;
use crate::serializer::SerializerKind;

/// Which way a method's items flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamShape {
    /// The server sends a stream (`-> Streaming<T>`).
    Server,
    /// The client sends a stream (its last argument) and gets one value back.
    Client,
    /// Both send a stream.
    Bidi,
}

impl StreamShape {
    /// Whether the client sends items.
    pub fn client_sends(self) -> bool {
        matches!(self, Self::Client | Self::Bidi)
    }

    /// Whether the server sends items.
    pub fn server_sends(self) -> bool {
        matches!(self, Self::Server | Self::Bidi)
    }
}

/// A stream of items of a streaming call: `Stream<Item = Result<T, RpcError<E>>>`.
///
/// A handler returns one ([`Streaming::from_stream`], [`Streaming::from_iter`]) and reads
/// the one a client sends; a generated client returns the server's. An item that is an
/// error ends the stream: a handler's `Streaming<Result<T, E>>` that yields `Err(e)` ends it
/// with the typed error the client receives as `RpcError::Application(e)`.
pub struct Streaming<T, E = Infallible> {
    inner: BoxStream<'static, Result<T, RpcError<E>>>,
}

impl<T: Send + 'static, E: Send + 'static> Streaming<T, E> {
    /// The items of `stream`.
    pub fn from_stream(stream: impl Stream<Item = T> + Send + 'static) -> Self {
        Self::from_results(stream.map(Ok))
    }

    /// The items and errors of `stream` (the first error ends it).
    pub fn from_results(stream: impl Stream<Item = Result<T, RpcError<E>>> + Send + 'static) -> Self {
        Self { inner: stream.boxed() }
    }

    /// The items of `items`.
    #[allow(clippy::should_implement_trait)] // a constructor like `from_stream`, not a collect
    pub fn from_iter<I>(items: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        Self::from_stream(futures_util::stream::iter(items))
    }

    /// A stream without items.
    pub fn empty() -> Self {
        Self::from_stream(futures_util::stream::empty())
    }
}

impl<T, E> Stream for Streaming<T, E> {
    type Item = Result<T, RpcError<E>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl<T, E> fmt::Debug for Streaming<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Streaming").finish_non_exhaustive()
    }
}

impl<T: Send + 'static, E: Send + 'static> From<Vec<T>> for Streaming<T, E> {
    fn from(items: Vec<T>) -> Self {
        Self::from_iter(items)
    }
}

impl<T: Send + 'static> Streaming<T> {
    /// The items of `raw` decoded with `serializer` as `W` and turned into `T` by `from_wire`
    /// (the generated code receives byte strings as one). Generated code calls it.
    pub fn decoding<W: DeserializeOwned + 'static>(
        raw: RawStream,
        serializer: SerializerKind,
        from_wire: fn(W) -> T,
    ) -> Self {
        Self::decoded(raw, serializer, from_wire, |_, _| {
            RpcError::Decode("an application error ended a stream whose method has no error type".to_owned())
        })
    }
}

impl<T: Send + 'static, E: DeserializeOwned + Send + 'static> Streaming<T, E> {
    /// Like [`Streaming::decoding`], for a method whose items may fail with its error `E`:
    /// an application error ends the stream as `RpcError::Application(e)`.
    pub fn decoding_fallible<W: DeserializeOwned + 'static>(
        raw: RawStream,
        serializer: SerializerKind,
        from_wire: fn(W) -> T,
    ) -> Self {
        Self::decoded(raw, serializer, from_wire, |serializer, body| {
            match serializer.decode_body::<E>(body) {
                Ok(e) => RpcError::Application(e),
                Err(e) => e.into_typed(),
            }
        })
    }
}

impl<T: Send + 'static, E: Send + 'static> Streaming<T, E> {
    fn decoded<W: DeserializeOwned + 'static>(
        raw: RawStream,
        serializer: SerializerKind,
        from_wire: fn(W) -> T,
        application: fn(SerializerKind, Body) -> RpcError<E>,
    ) -> Self {
        let decoded = Decoded::<W, T, E> {
            raw: Some(raw),
            serializer,
            from_wire,
            application,
            _types: PhantomData,
        };
        Self { inner: decoded.boxed() }
    }
}

/// The stream [`Streaming::decoding`] and [`Streaming::decoding_fallible`] make; it ends after the first error.
struct Decoded<W, T, E> {
    raw: Option<RawStream>,
    serializer: SerializerKind,
    from_wire: fn(W) -> T,
    application: fn(SerializerKind, Body) -> RpcError<E>,
    _types: PhantomData<fn() -> W>,
}

impl<W: DeserializeOwned, T, E> Stream for Decoded<W, T, E> {
    type Item = Result<T, RpcError<E>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(raw) = this.raw.as_mut() else {
            return Poll::Ready(None);
        };
        let serializer = this.serializer;
        if let Some(item) = raw.next_in_batch(|batch, len| serializer.decode_prefix::<W>(batch, len)) {
            match item {
                Ok(wire) => return Poll::Ready(Some(Ok((this.from_wire)(wire)))),
                Err(e) => {
                    this.raw = None;
                    return Poll::Ready(Some(Err(e.into_typed())));
                }
            }
        }
        let read = |at: ItemAt<'_>| match at {
            ItemAt::Slice(batch, len) => serializer.decode_prefix::<W>(batch, len),
            ItemAt::Whole(body) => serializer.decode_body::<W>(body),
        };
        let event = match raw.poll_with(cx, read) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(event) => event,
        };
        let item = match event {
            Some(Polled::Item(Ok(wire))) => return Poll::Ready(Some(Ok((this.from_wire)(wire)))),
            Some(Polled::Item(Err(e))) => Some(Err(e.into_typed())),
            Some(Polled::End(Ok(reply))) => match reply.status {
                Status::ApplicationError => Some(Err((this.application)(this.serializer, reply.body))),
                _ => None,
            },
            Some(Polled::End(Err(e))) => Some(Err(e.into_typed())),
            None => None,
        };
        // An error or the end: nothing follows (dropping the raw stream cancels the rest).
        this.raw = None;
        Poll::Ready(item)
    }
}

/// A handler's items, each encoded with `serializer` (turned into its wire form by `to_wire`
/// first) when the server sends it; an error ends them with its reply. Generated code calls it.
pub fn encode_items<T, W, S>(items: S, serializer: SerializerKind, to_wire: fn(T) -> W) -> ItemStream
where
    S: Stream<Item = Result<T, RpcError>> + Send + 'static,
    T: 'static,
    W: Serialize + 'static,
{
    ItemStream::new(items, move |item, batch| match item {
        Ok(value) => batch.put(serializer, &to_wire(value)),
        Err(error) => Err(Reply::from_error(&error)),
    })
}

/// Like [`encode_items`], for a handler whose items are `Result<T, E>`: an `Err(e)` ends the
/// stream with the application error `e`. Generated code calls it.
pub fn encode_fallible_items<T, E, W, S>(items: S, serializer: SerializerKind, to_wire: fn(T) -> W) -> ItemStream
where
    S: Stream<Item = Result<Result<T, E>, RpcError>> + Send + 'static,
    T: 'static,
    W: Serialize + 'static,
    E: Serialize + 'static,
{
    ItemStream::new(items, move |item, batch| match item {
        Ok(Ok(value)) => batch.put(serializer, &to_wire(value)),
        Ok(Err(error)) => Err(Reply::application_error(serializer, &error)),
        Err(error) => Err(Reply::from_error(&error)),
    })
}

/// A client's items for a streamed argument, each encoded with `serializer` (turned into its
/// wire form by `to_wire` first) when the client sends it. Generated code calls it.
pub fn encode_input<T, W, S>(items: S, serializer: SerializerKind, to_wire: fn(T) -> W) -> ItemStream
where
    S: Stream<Item = T> + Send + 'static,
    T: 'static,
    W: Serialize + 'static,
{
    ItemStream::new(items, move |value, batch| batch.put(serializer, &to_wire(value)))
}

/// The reply that ends `raw`, a stream that answers one value (a method that takes a stream
/// and returns a value): `Ok` or `ApplicationError`, or the failure that ended it. Generated
/// code calls it.
pub async fn finish(mut raw: RawStream) -> Result<Reply, RpcError> {
    while let Some(event) = raw.next().await {
        if let StreamEvent::End(end) = event {
            return end;
        }
    }
    Err(RpcError::internal("a stream ended without its reply"))
}
