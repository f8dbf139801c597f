//! Entry points for the fuzz targets in `fuzz/`, built only under `--cfg fuzzing` (as
//! cargo-fuzz builds): the decoders that are not public, each driven as the framework drives it.
//! The public ones (the frame and request decoders, the serializers, registry values, rules)
//! are fuzzed through their public API.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::body::Body;
use crate::error::RpcError;
use crate::reply::Reply;
use crate::serializer::SerializerKind;
use crate::stream::{Grant, Inbound, ItemAt, Polled, RawStream, StreamWindow};

/// Reads a StreamItem frame's body as a stream's reader does (`tail`: the byte string a
/// flagged body ends in), then the stream's end, decoding each item with `serializer` as a
/// `(u64, String)`, or, for the last item of a flagged body, as a `Vec<u8>`. Returns how many
/// items the batch held before it ended or was found malformed.
pub fn stream_batch(batch: &[u8], tail: Option<&[u8]>, serializer: SerializerKind) -> usize {
    let (events, rx) = mpsc::channel(2);
    let (credit, _written) = mpsc::channel(1024);
    let grant = Grant::new(credit, 1, StreamWindow::default());
    let mut stream = RawStream::new(rx, grant, Arc::new(|| RpcError::internal("closed")), "client");
    let batch = Bytes::copy_from_slice(batch);
    let body = match tail {
        Some(tail) => Body::with_tail([batch, Bytes::copy_from_slice(tail)]),
        None => Body::from(batch),
    };
    let _ = events.try_send(Inbound::Batch(body));
    let _ = events.try_send(Inbound::End(Ok(Reply::empty())));
    drop(events);
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    let mut items = 0;
    loop {
        let polled = stream.poll_with(&mut cx, |at| match at {
            ItemAt::Slice(batch, len) => serializer.decode::<(u64, String)>(&batch[..len]).is_ok(),
            ItemAt::Whole(body) => serializer.decode_body::<Vec<u8>>(body).is_ok(),
        });
        match polled {
            Poll::Ready(Some(Polled::Item(_))) => items += 1,
            Poll::Ready(Some(Polled::End(_))) | Poll::Ready(None) | Poll::Pending => return items,
        }
    }
}

/// Decompresses a compressed frame's body as the server does, at most `max` bytes; the
/// length of what came out.
pub fn decompress(body: &[u8], max: usize) -> Option<usize> {
    crate::compression::decompress(&Body::from(Bytes::copy_from_slice(body)), max)
        .ok()
        .map(|out| out.len())
}

/// Makes an HTTP/JSON request's body into the arguments of `method` of the service `schema`
/// describes, as the server does (an array as it is, an object by parameter name): the
/// arguments' JSON.
#[cfg(feature = "http")]
pub fn http_json_arguments(schema: &crate::schema::ServiceSchema, method: &str, body: &[u8]) -> Result<Bytes, String> {
    let key = format!("{}:{}", schema.name, schema.version);
    crate::server::http::body::arguments(Some(schema), &key, method, Bytes::copy_from_slice(body)).map(Body::into_one)
}
