//! HTTP request bodies: read under the limits a frame of the RPC protocol has, and made into the
//! arguments the json serializer reads.
//!
//! * A body is at most the frame limit (`max_frame_len`). A declared length over it is refused
//!   at once, before a byte of the body is read, and so before a client that asked
//!   `Expect: 100-continue` is told to go on (hyper sends `100 Continue` only when the body is
//!   first read).
//! * A body from the large-request size on takes its length from the server's request byte
//!   budget (`max_buffered_request_bytes`, shared with the RPC protocol's large frames) before
//!   it is buffered: the declared length at once, before any of it is read, or, for a body of
//!   unknown length (chunked), in steps that double as it grows. It holds its share until the
//!   call is done. A body that cannot get its share within the frame timeout is refused
//!   (`503`) and its connection closed, as the RPC protocol closes a connection whose frame
//!   waits that long.
//! * A large body is gathered into memory of its own as a large frame's body is (a recycled
//!   buffer up to 2 MiB, above that a memory map given back to the system when the call is
//!   done), not grown through the allocator, which keeps freed large buffers in its heap.
//! * Arguments by parameter name are put in the order the json serializer reads without a
//!   JSON tree: each value stays the text it was sent as, so an object costs about its own
//!   size once more, where a tree of it took some twenty times its size. A large body is read
//!   so on a blocking thread, never on the runtime's.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper::StatusCode;
use serde_json::value::RawValue;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::Refused;
use crate::body::Body;
use crate::body_pool;
use crate::large_body::{self, LargeBody};
use crate::protocol::Status;
use crate::schema::ServiceSchema;
use crate::server::Shared;

/// A request body read in full, and the share of the request byte budget it holds.
pub(super) struct RequestBody {
    /// The body.
    pub(super) bytes: Bytes,
    /// Given back when dropped: keep it until the call is done.
    pub(super) held: Option<OwnedSemaphorePermit>,
}

/// Reads `body` in full under the frame limit, the request byte budget and the frame timeout.
pub(super) async fn read(body: Incoming, shared: &Shared) -> Result<RequestBody, Refused> {
    let limit = shared.max_frame_len;
    let declared = body.size_hint().exact();
    if let Some(len) = declared.filter(|&len| len > limit as u64) {
        return Err(too_large(format!(
            "the body's declared length of {len} bytes is over the limit of {limit} bytes"
        )));
    }
    let deadline = Instant::now() + shared.frame_timeout;
    match tokio::time::timeout_at(deadline, gather(body, declared, shared, deadline)).await {
        Ok(read) => read,
        Err(_) => Err(closing(
            Refused::new(
                Status::DecodeError,
                format!("the body did not arrive within {:?}", shared.frame_timeout),
            )
            .with_http(StatusCode::REQUEST_TIMEOUT),
        )),
    }
}

/// The body's bytes, taking budget as [`read`] says.
async fn gather(
    mut body: Incoming,
    declared: Option<u64>,
    shared: &Shared,
    deadline: Instant,
) -> Result<RequestBody, Refused> {
    let limit = shared.max_frame_len;
    let mut held = Held::default();
    // Checked against the limit above.
    let declared = declared.map(|len| len as usize);
    if let Some(len) = declared {
        held.reach(len, shared, deadline).await?;
    }
    // A large body of a declared length is copied into its own memory frame by frame, so that
    // hyper's read buffer is free again for the next; any other is kept as hyper's pieces.
    let mut own = match declared.filter(|&len| len >= body_pool::POOLED_MIN) {
        Some(len) => Some(LargeBody::start(len, &[]).map_err(no_memory)?),
        None => None,
    };
    let mut pieces: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Refused::new(Status::DecodeError, format!("reading the body failed: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers: nothing a call reads
        };
        len += data.len();
        if len > limit {
            return Err(too_large(format!("the body is over the limit of {limit} bytes")));
        }
        if declared.is_some_and(|declared| len > declared) {
            return Err(Refused::new(
                Status::DecodeError,
                "the body is longer than its declared length",
            ));
        }
        match own.as_mut() {
            Some(own) => {
                own.fill(&data);
            }
            None => {
                if declared.is_none() && len > held.bytes {
                    held.reach(len.saturating_mul(2).min(limit), shared, deadline).await?;
                }
                pieces.push(data);
            }
        }
    }
    let bytes = match own {
        Some(own) if own.missing() > 0 => {
            return Err(Refused::new(
                Status::DecodeError,
                "the body is shorter than its declared length",
            ))
        }
        Some(own) => own.into_body().into_one(),
        None if pieces.len() == 1 => pieces.swap_remove(0),
        None => large_body::gather(len, pieces.iter().map(|p| &p[..])).map_err(no_memory)?,
    };
    Ok(RequestBody {
        bytes,
        held: held.permit,
    })
}

/// The share of the request byte budget a body holds.
#[derive(Default)]
struct Held {
    permit: Option<OwnedSemaphorePermit>,
    /// What the share covers (nothing below the budget's threshold needs one).
    bytes: usize,
}

impl Held {
    /// Grows the share to cover `bytes`, waiting for the budget until `deadline`.
    async fn reach(&mut self, bytes: usize, shared: &Shared, deadline: Instant) -> Result<(), Refused> {
        let budget = &shared.request_bytes;
        if bytes < budget.threshold() || bytes <= self.bytes {
            return Ok(());
        }
        let more = bytes - self.bytes;
        let permit = match tokio::time::timeout_at(deadline, budget.take(more)).await {
            Ok(Some(permit)) => permit,
            Ok(None) | Err(_) => {
                return Err(closing(Refused::new(
                    Status::Overloaded,
                    format!(
                        "the server's buffer for request bodies stayed full for {:?}: try again later",
                        shared.frame_timeout
                    ),
                )))
            }
        };
        match &mut self.permit {
            Some(held) => held.merge(permit),
            None => self.permit = Some(permit),
        }
        self.bytes = bytes;
        Ok(())
    }
}

/// The refusal of a body no memory could be mapped for.
fn no_memory(e: std::io::Error) -> Refused {
    Refused::new(Status::Overloaded, format!("no memory for the body: {e}"))
}

/// A `413` refusal.
fn too_large(message: String) -> Refused {
    closing(Refused::new(Status::DecodeError, message).with_http(StatusCode::PAYLOAD_TOO_LARGE))
}

/// The refusal, with the connection closed after it (its body was not read to its end).
fn closing(mut refused: Refused) -> Refused {
    refused.close = true;
    refused
}

/// Bodies from this size on are made into arguments on a blocking thread: reading a large
/// object's values (megabytes of JSON) would otherwise hold a runtime thread, and the calls
/// that wait for it, for as long.
const ARGUMENTS_OFF_RUNTIME: usize = 256 * 1024;

/// [`arguments`], on a blocking thread for a body of [`ARGUMENTS_OFF_RUNTIME`] bytes or more.
pub(super) async fn arguments_off_runtime(
    schema: Option<Arc<ServiceSchema>>,
    key: &str,
    method: &str,
    body: Bytes,
) -> Result<Body, String> {
    if body.len() < ARGUMENTS_OFF_RUNTIME {
        return arguments(schema.as_deref(), key, method, body);
    }
    let (key, method) = (key.to_owned(), method.to_owned());
    tokio::task::spawn_blocking(move || arguments(schema.as_deref(), &key, &method, body))
        .await
        .unwrap_or_else(|e| Err(format!("reading the arguments failed: {e}")))
}

/// The arguments as the json serializer reads them: a JSON array, as sent or made from an
/// object by parameter name (`schema` gives the order; an absent optional argument is `null`).
pub(crate) fn arguments(schema: Option<&ServiceSchema>, key: &str, method: &str, body: Bytes) -> Result<Body, String> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    match first {
        Some(b'[') => Ok(Body::from(body)),
        Some(b'{') => by_name(schema, key, method, &body),
        _ => Err("the body must be the arguments as a JSON array or an object by parameter name".to_owned()),
    }
}

/// The array of an object's values in the order of the method's parameters, each value copied
/// as the text it was sent as.
fn by_name(schema: Option<&ServiceSchema>, key: &str, method: &str, body: &[u8]) -> Result<Body, String> {
    let mut object: BTreeMap<String, &RawValue> =
        serde_json::from_slice(body).map_err(|e| format!("the body is not a JSON object: {e}"))?;
    let Some(params) = schema.and_then(|s| s.method(method)).map(|m| &m.args) else {
        return Err(format!("{key} publishes no schema: pass the arguments as a JSON array"));
    };
    const NULL: &str = "null";
    let mut values = Vec::with_capacity(params.len());
    for param in params {
        match object.remove(&param.name) {
            Some(value) => values.push(value.get()),
            None if param.optional => values.push(NULL),
            None => return Err(format!("missing argument `{}` of {method}", param.name)),
        }
    }
    if let Some(unknown) = object.keys().next() {
        let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
        return Err(format!(
            "{method} has no argument `{unknown}` (its arguments: {})",
            names.join(", ")
        ));
    }
    let len = 2 + values.iter().map(|v| v.len()).sum::<usize>() + values.len().saturating_sub(1);
    let pieces = std::iter::once("[")
        .chain(
            values
                .iter()
                .enumerate()
                .flat_map(|(i, v)| [if i == 0 { "" } else { "," }, *v]),
        )
        .chain(std::iter::once("]"))
        .map(str::as_bytes);
    large_body::gather(len, pieces)
        .map(Body::from)
        .map_err(|e| format!("no memory for the arguments: {e}"))
}
