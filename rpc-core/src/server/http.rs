//! HTTP/JSON ingress: the same services, called with curl, a browser or a client generated
//! from OpenAPI, on the RPC port.
//!
//! # Design
//!
//! * A connection whose first bytes are an HTTP method (upper-case letters other than the
//!   protocol's magic, `RP`) is HTTP: HTTP/1.1, or HTTP/2 with prior knowledge (h2c), served
//!   by hyper. Anything else is left to the RPC protocol. Over TLS, a client that asks for
//!   `h2` or `http/1.1` by ALPN gets HTTP (its verified certificate is the call's peer
//!   identity, as for RPC calls); the RPC client asks for none. Both protocols share the port, the
//!   connection limit and the shutdown: draining answers new requests 503 and closes the
//!   connections gracefully.
//! * `POST /{name}/{method}` (or `/{name}:{version}/{method}`) runs the method. The body holds
//!   the arguments as a JSON array, or as an object by parameter name (the service's schema
//!   gives the order; an absent optional argument is `null`). The call takes the same path as
//!   an RPC call with the json serializer: the concurrency limit, the interceptors (tokens,
//!   metrics), the tower layers, the handler, its deadline.
//! * Call context comes from headers: `Authorization` (the bearer token), `rpc-timeout-ms`
//!   (the deadline), `traceparent`, and `rpc-meta-{key}` for any metadata entry; the metadata
//!   limits apply.
//! * Answers: the result as JSON with `200`; the method's own error as `{"error": value}` with
//!   `422`; a framework error as `{"code", "message"}` with the status its code maps to.
//! * A method that returns a stream answers `200` with its items as NDJSON
//!   (`application/x-ndjson`), one JSON value per line, sent as the client reads them; an
//!   error ends them with a last line `{"error": value}` or `{"code", "message"}`. A method
//!   that takes a stream is refused (`400`): it is called over the RPC protocol.
//! * `GET /{name}` describes the service (JSON Schema of every method, see
//!   [`ServiceSchema::to_json_schema`]); `GET /openapi.json` is the OpenAPI 3.1 document of
//!   every service served (see [`crate::schema::openapi`]). Both are built once per server.
//! * Bad input gets a 4xx naming the problem and affects nothing else: a body over the frame
//!   limit (413), one that does not arrive within the frame timeout (408), malformed JSON or
//!   arguments (400), an unknown service or method (404).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::{debug, warn, Instrument};

pub(crate) mod body;
mod idle;

use super::admission::{rejected, Admitted, Arrival};
use super::call::{Invocation, ServerCall, StreamParts};
use super::finish::{call_span, drive, panicked, with_deadline, EndGuard};
use super::limits::CallPermit;
use super::stream::{start_handler, StreamEnded};
use super::{Shared, GO_AWAY_CLOSE_GRACE};
use crate::auth::AUTHORIZATION;
use crate::body::Body;
use crate::context::{self, CallContext, Metadata, PeerIdentity, TRACEPARENT};
use crate::health::HEALTH_METHOD;
use crate::interceptor::Outcome;
use crate::protocol::Status;
use crate::reply::Reply;
use crate::schema::{openapi, ServiceSchema};
use crate::serializer::SerializerKind;
use crate::service::Service;
use crate::stream::{ItemStream, StreamShape};
use body::RequestBody;
use futures_util::FutureExt;
use idle::{Idleness, Tracked};
use std::future::Future;

/// The body of every answer: one piece, or a stream's lines as they come.
type HttpBody = UnsyncBoxBody<Bytes, Infallible>;

/// Request headers that carry one metadata entry each: `rpc-meta-{key}`.
pub const METADATA_HEADER_PREFIX: &str = "rpc-meta-";
/// The request header that carries the call's deadline, in milliseconds from now.
pub const TIMEOUT_HEADER: &str = "rpc-timeout-ms";

/// What the HTTP side of a server builds once: each service's schema and the OpenAPI document.
pub(crate) struct Described {
    schemas: HashMap<String, Arc<ServiceSchema>>,
    openapi: Bytes,
}

impl Described {
    fn of(shared: &Shared) -> Self {
        let schemas: HashMap<String, Arc<ServiceSchema>> = shared
            .services
            .iter()
            .filter_map(|(key, service)| Some((key.clone(), Arc::new(service.schema()?))))
            .collect();
        let mut all: Vec<&ServiceSchema> = schemas.values().map(|s| &**s).collect();
        all.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        let openapi = Bytes::from(openapi(&all).to_string());
        Self { schemas, openapi }
    }
}

/// A request refused before it ran: the framework error it gets, and the HTTP status when it
/// is not the one the error's code maps to.
struct Refused {
    status: Status,
    message: String,
    http: Option<StatusCode>,
    /// Close the connection after answering (a sender too slow to trust).
    close: bool,
}

impl Refused {
    fn new(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            http: None,
            close: false,
        }
    }

    fn with_http(mut self, http: StatusCode) -> Self {
        self.http = Some(http);
        self
    }

    fn response(self) -> Response<HttpBody> {
        let mut response = failure(self.status, self.message);
        if let Some(http) = self.http {
            *response.status_mut() = http;
        }
        if self.close {
            response
                .headers_mut()
                .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// The HTTP state of a server, built at the first HTTP request.
pub(crate) type HttpState = OnceLock<Described>;

/// One HTTP connection's own state.
struct Conn {
    shared: Arc<Shared>,
    peer: SocketAddr,
    identity: Option<Arc<PeerIdentity>>,
    next_id: AtomicU64,
    idleness: Arc<Idleness>,
}

/// Serves HTTP/1.1 and h2c on `io` until the client closes it, it stays idle for the idle
/// timeout (closed gracefully: HTTP/2's GOAWAY, or HTTP/1.1's close after the response in
/// progress), or the server shuts down.
pub(crate) async fn serve<I>(io: I, peer: SocketAddr, identity: Option<Arc<PeerIdentity>>, shared: Arc<Shared>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(Conn {
        shared: shared.clone(),
        peer,
        identity,
        next_id: AtomicU64::new(1),
        idleness: Arc::new(Idleness::new()),
    });
    let watched = conn.clone();
    let service = hyper::service::service_fn(move |request| {
        let conn = conn.clone();
        async move {
            let answering = conn.idleness.answering();
            let response = conn.handle(request).await;
            Ok::<_, Infallible>(response.map(|body| Tracked::new(body, answering)))
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.frame_timeout);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => {
            if let Err(e) = served {
                let malformed = e
                    .downcast_ref::<hyper::Error>()
                    .is_some_and(|e| e.is_parse() || e.is_parse_too_large() || e.is_timeout());
                if malformed {
                    // Neither the RPC protocol nor HTTP: as for a bad frame, that connection closes.
                    warn!(%peer, error = %e, "protocol error on an HTTP connection; closing it");
                } else {
                    debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
            }
            return;
        }
        _ = shared.draining.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = shared.abort.cancelled() => {}
            }
            return;
        }
        _ = watched.idleness.idle_for(shared.idle_timeout) => {
            debug!(%peer, idle = ?shared.idle_timeout, "idle HTTP connection: closing it");
        }
        _ = reader_stalled(&watched.idleness, shared.stream_idle) => {
            warn!(
                %peer,
                waited = ?shared.stream_idle.unwrap_or_default(),
                "an HTTP response waited that long for its client to take it: closing the connection"
            );
        }
    }
    connection.as_mut().graceful_shutdown();
    // A client that ignores GOAWAY (HTTP/2 waits for its PING's answer) or keeps a response
    // from finishing does not hold the connection past the grace.
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = tokio::time::sleep(GO_AWAY_CLOSE_GRACE) => {
            debug!(%peer, "the HTTP connection did not close within the grace; dropping it");
        }
        _ = shared.abort.cancelled() => {}
    }
}

/// Returns once a response on the connection waited `timeout` for its client to take its next
/// frame (never when `timeout` is `None`).
async fn reader_stalled(idleness: &Idleness, timeout: Option<Duration>) {
    match timeout {
        Some(timeout) => idleness.reader_stalled_for(timeout).await,
        None => std::future::pending().await,
    }
}

impl Conn {
    async fn handle(&self, request: Request<Incoming>) -> Response<HttpBody> {
        let path = request.uri().path().trim_start_matches('/').to_owned();
        let segments: Vec<&str> = path.split('/').collect();
        match (request.method(), segments.as_slice()) {
            (&Method::GET, ["openapi.json"]) => json_response(StatusCode::OK, self.described().openapi.clone()),
            (&Method::GET, [service]) => match self.service(service) {
                Ok(service) => match self.described().schemas.get(service.key()) {
                    Some(schema) => json_response(StatusCode::OK, Bytes::from(schema.to_json_schema().to_string())),
                    None => failure(Status::MethodNotFound, format!("{} publishes no schema", service.key())),
                },
                Err(refused) => refused.response(),
            },
            (&Method::POST, [service, method]) => match self.service(service) {
                Ok(service) => {
                    let method = (*method).to_owned();
                    self.call(service, method, request).await
                }
                Err(refused) => refused.response(),
            },
            (&Method::GET | &Method::POST, _) => failure(
                Status::ServiceNotFound,
                format!(
                    "no such resource: /{path} (POST /{{service}}/{{method}}, GET /{{service}}, GET /openapi.json)"
                ),
            ),
            (method, _) => Refused::new(Status::DecodeError, format!("method {method} is not allowed"))
                .with_http(StatusCode::METHOD_NOT_ALLOWED)
                .response(),
        }
    }

    fn described(&self) -> &Described {
        self.shared.http.get_or_init(|| Described::of(&self.shared))
    }

    /// The service a path segment names: `name:version`, or a name served in one version.
    fn service(&self, segment: &str) -> Result<Arc<dyn Service>, Refused> {
        if let Some(service) = self.shared.services.get(segment) {
            return Ok(service.clone());
        }
        let named: Vec<&Arc<dyn Service>> = self.shared.services.values().filter(|s| s.name() == segment).collect();
        match named.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Refused::new(
                Status::ServiceNotFound,
                format!("no service {segment} here"),
            )),
            several => {
                let mut keys: Vec<&str> = several.iter().map(|s| s.key()).collect();
                keys.sort_unstable();
                Err(Refused::new(
                    Status::ServiceNotFound,
                    format!("{segment} is served in several versions; name one: {}", keys.join(", ")),
                ))
            }
        }
    }

    /// Runs one call: admission (see the `admission` module), then its arguments, then the
    /// same path as an RPC call.
    async fn call(&self, service: Arc<dyn Service>, method: String, request: Request<Incoming>) -> Response<HttpBody> {
        let shared = &self.shared;
        let now = Instant::now();
        shared.activity.call_arrived();
        if method == HEALTH_METHOD {
            return json_response(
                StatusCode::OK,
                Bytes::from(json!(shared.health().to_string()).to_string()),
            );
        }
        if let Err(refusal) = shared.route(service.as_ref(), &method) {
            return reply_response(refusal);
        }
        let streams = service.stream_shape(&method);
        if streams.is_some_and(StreamShape::client_sends) {
            let message = format!(
                "{}/{method} takes a stream: call it over the RPC protocol (HTTP/JSON serves methods that return one as NDJSON)",
                service.key()
            );
            return reply_response(rejected(Reply::failure(Status::Unsupported, message)));
        }
        let (parts, body) = request.into_parts();
        let (metadata, deadline) = match call_context(&parts.headers, shared, now) {
            Ok(found) => found,
            Err(refused) => return refused.response(),
        };
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let arrival = Arrival {
            service_name: Bytes::from(service.key().to_owned()),
            method: Bytes::from(method),
            metadata,
            deadline,
            peer: self.peer,
            identity: self.identity.clone(),
            request_id,
            now,
            streaming: streams.is_some(),
            serializer: SerializerKind::Json,
        };
        let admitted = match shared.admit(service.key(), arrival) {
            Ok(admitted) => admitted,
            Err(refusal) => return reply_response(refusal),
        };
        let RequestBody { bytes, held } = match body::read(body, shared).await {
            Ok(body) => body,
            Err(refused) => {
                admitted.refused(shared, refused.status);
                return refused.response();
            }
        };
        let schema = self.described().schemas.get(service.key()).cloned();
        let args = match body::arguments_off_runtime(schema, service.key(), admitted.ctx.method(), bytes).await {
            Ok(args) => args,
            Err(message) => {
                admitted.refused(shared, Status::DecodeError);
                return failure(Status::DecodeError, message);
            }
        };
        let Admitted {
            mut ctx,
            permit,
            intercepted,
        } = admitted;
        let span = call_span(&mut ctx);
        if streams.is_some() {
            return self.stream(service, ctx, args, deadline, permit).instrument(span).await;
        }
        let call = Invocation::new(
            shared.stack.as_ref(),
            ServerCall::new(ctx, SerializerKind::Json, args, service),
            intercepted,
        );
        let reply = self
            .run(Box::pin(call), intercepted, deadline, request_id)
            .instrument(span)
            .await;
        drop((permit, held));
        reply_response(reply)
    }

    /// Runs a method that returns a stream: its handler (through the layers) under the
    /// deadline, then its items as NDJSON lines as the client reads them (see [`Lines`]).
    async fn stream(
        &self,
        service: Arc<dyn Service>,
        ctx: CallContext,
        args: Body,
        deadline: Option<Instant>,
        permit: CallPermit,
    ) -> Response<HttpBody> {
        let shared = &self.shared;
        let output = Arc::new(std::sync::Mutex::new(None));
        let parts = StreamParts {
            input: None,
            output: output.clone(),
        };
        let call = ServerCall::streaming(ctx.clone(), SerializerKind::Json, args, service, parts);
        let handler = context::scope(
            ctx.clone(),
            AssertUnwindSafe(start_handler(shared, call)).catch_unwind(),
        );
        let mut ended = StreamEnded::new(shared.clone(), ctx.clone());
        let started = tokio::select! {
            biased;
            _ = shared.ending.cancelled() => Reply::failure(Status::ShuttingDown, "server shutting down"),
            started = with_deadline(handler, deadline) => match started {
                None => Reply::failure(Status::DeadlineExceeded, "deadline exceeded on the server"),
                Some(Ok(reply)) => reply,
                Some(Err(panic)) => panicked("", ctx.request_id(), panic.as_ref()),
            },
        };
        let items = output.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let Some(items) = items.filter(|_| started.status == Status::Ok) else {
            ended.outcome = Outcome::from_status(started.status);
            return reply_response(started);
        };
        let lines = Lines {
            items,
            ctx,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            ending: Box::pin(shared.ending.clone().cancelled_owned()),
            ended: Some(ended),
            _permit: permit,
        };
        let mut response = Response::new(StreamBody::new(lines).boxed_unsync());
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        response
    }

    /// Drives a started call under its deadline and the server's abort; the interceptors hear
    /// how it ended (cancelled, when the client went away and hyper dropped this future).
    async fn run(
        &self,
        call: std::pin::Pin<Box<Invocation>>,
        intercepted: bool,
        deadline: Option<Instant>,
        request_id: u64,
    ) -> Reply {
        let mut guard = EndGuard {
            shared: self.shared.clone(),
            call,
            intercepted,
            outcome: Outcome::Cancelled,
        };
        drive(&mut guard, deadline, request_id)
            .await
            .unwrap_or_else(|| Reply::failure(Status::ShuttingDown, "the server shut down before the call ended"))
    }
}

/// A stream's items as NDJSON: each item's JSON on a line of its own, taken from the handler
/// only as the client reads (hyper polls for the next frame once the last was written). An
/// error ends the lines with one more: `{"error": value}` for the method's own error,
/// `{"code", "message"}` for a framework error (the deadline, the server shutting down); the
/// status line said 200 long before. Its end (or its drop, when the client leaves) is the
/// stream's end for the interceptors and metrics.
struct Lines {
    items: ItemStream,
    ctx: CallContext,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    ending: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    /// Until the end is told.
    ended: Option<StreamEnded>,
    _permit: CallPermit,
}

impl Lines {
    /// The last line, for an end other than `Ok`; the stream's outcome is told.
    fn end(&mut self, reply: Reply) -> Option<Bytes> {
        let mut ended = self.ended.take()?;
        ended.outcome = Outcome::from_status(reply.status);
        if reply.status == Status::Ok {
            return None;
        }
        let mut line = error_body(&reply);
        line.push(b'\n');
        Some(Bytes::from(line))
    }
}

impl futures_util::Stream for Lines {
    type Item = Result<hyper::body::Frame<Bytes>, Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.ended.is_none() {
            return Poll::Ready(None);
        }
        let stop = if this.ending.as_mut().poll(cx).is_ready() {
            Some(Reply::failure(Status::ShuttingDown, "server shutting down"))
        } else if this.deadline.as_mut().is_some_and(|d| d.as_mut().poll(cx).is_ready()) {
            Some(Reply::failure(
                Status::DeadlineExceeded,
                "deadline exceeded on the server",
            ))
        } else {
            let polled = context::scope(
                this.ctx.clone(),
                std::future::poll_fn(|cx| this.items.poll_next_body(cx)),
            );
            match std::pin::pin!(polled).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(item))) => {
                    let mut line = bytes::BytesMut::with_capacity(item.len() + 1);
                    for part in item.parts() {
                        line.extend_from_slice(part);
                    }
                    line.extend_from_slice(b"\n");
                    return Poll::Ready(Some(Ok(hyper::body::Frame::data(line.freeze()))));
                }
                Poll::Ready(Some(Err(end))) => Some(end),
                Poll::Ready(None) => Some(Reply::empty()),
            }
        };
        let last = stop.and_then(|reply| this.end(reply));
        Poll::Ready(last.map(|line| Ok(hyper::body::Frame::data(line))))
    }
}

/// The call's metadata and deadline from the request headers, checked against the limits.
fn call_context(headers: &HeaderMap, shared: &Shared, now: Instant) -> Result<(Metadata, Option<Instant>), Refused> {
    let mut metadata = Metadata::new();
    let bad = |message: String| Refused::new(Status::InvalidMetadata, message);
    for (name, value) in headers {
        let name = name.as_str();
        let key = match name {
            "authorization" => AUTHORIZATION,
            "traceparent" => TRACEPARENT,
            _ => match name.strip_prefix(METADATA_HEADER_PREFIX) {
                Some(key) => key,
                None => continue,
            },
        };
        let value = value
            .to_str()
            .map_err(|_| bad(format!("header {name} is not visible ASCII")))?;
        metadata.insert(key, value);
    }
    metadata
        .check(&shared.metadata_limits)
        .map_err(|e| bad(e.to_string()))?;
    let deadline = match headers.get(TIMEOUT_HEADER) {
        None => None,
        Some(value) => {
            let ms: u64 = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .filter(|&ms| ms > 0)
                .ok_or_else(|| bad(format!("{TIMEOUT_HEADER} must be a number of milliseconds above 0")))?;
            Some(now + std::time::Duration::from_millis(ms))
        }
    };
    Ok((metadata, deadline))
}

/// The HTTP answer of a reply: the result, the method's error, or a framework error.
fn reply_response(reply: Reply) -> Response<HttpBody> {
    let http = match reply.status {
        Status::Ok => return json_response(StatusCode::OK, reply.body.as_one().into_owned()),
        Status::ApplicationError => StatusCode::UNPROCESSABLE_ENTITY,
        status => code(status).1,
    };
    json_response(http, Bytes::from(error_body(&reply)))
}

/// The JSON of a reply that is not a value: `{"error": value}` for the method's own error,
/// `{"code", "message"}` for a framework error.
fn error_body(reply: &Reply) -> Vec<u8> {
    match reply.status {
        Status::ApplicationError => {
            let error = reply.body.as_one();
            let mut text = Vec::with_capacity(error.len() + 11);
            text.extend_from_slice(b"{\"error\":");
            text.extend_from_slice(&error);
            text.push(b'}');
            text
        }
        status => json!({"code": code(status).0, "message": reply.message()})
            .to_string()
            .into_bytes(),
    }
}

/// The code and HTTP status of a framework error.
fn code(status: Status) -> (&'static str, StatusCode) {
    match status {
        Status::ServiceNotFound | Status::MethodNotFound => ("not_found", StatusCode::NOT_FOUND),
        Status::DecodeError | Status::InvalidMetadata | Status::ProtocolError | Status::Unsupported => {
            ("invalid_argument", StatusCode::BAD_REQUEST)
        }
        Status::Unauthenticated => ("unauthenticated", StatusCode::UNAUTHORIZED),
        Status::PermissionDenied => ("permission_denied", StatusCode::FORBIDDEN),
        Status::Overloaded => ("overloaded", StatusCode::TOO_MANY_REQUESTS),
        Status::DeadlineExceeded => ("deadline_exceeded", StatusCode::GATEWAY_TIMEOUT),
        Status::ShuttingDown => ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
        _ => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// A framework error: `{"code", "message"}` with its HTTP status.
fn failure(status: Status, message: impl Into<String>) -> Response<HttpBody> {
    reply_response(Reply::failure(status, message))
}

fn json_response(status: StatusCode, body: Bytes) -> Response<HttpBody> {
    let mut response = Response::new(Full::new(body).boxed_unsync());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Whether a connection's first bytes start an HTTP request: a method token (`GET`, `POST`, and
/// `PRI` of the HTTP/2 preface) is upper-case letters, which the RPC protocol's magic (`RP`)
/// is too, so that is told apart. Anything else (a TLS handshake, garbage) goes to the RPC
/// protocol, which closes a connection that does not speak it.
pub(crate) fn is_http(first: &[u8]) -> bool {
    first.len() >= 2
        && first[..2].iter().all(u8::is_ascii_uppercase)
        && first[..2] != crate::protocol::MAGIC.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framework_errors_map_to_codes_and_statuses() {
        assert_eq!(code(Status::MethodNotFound), ("not_found", StatusCode::NOT_FOUND));
        assert_eq!(code(Status::DecodeError), ("invalid_argument", StatusCode::BAD_REQUEST));
        assert_eq!(code(Status::Unauthenticated).1, StatusCode::UNAUTHORIZED);
        assert_eq!(code(Status::Overloaded).1, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(code(Status::DeadlineExceeded).0, "deadline_exceeded");
        assert_eq!(code(Status::EncodeError).0, "internal");
        assert!(is_http(b"POST / HTTP/1.1"));
        assert!(is_http(b"PRI * HTTP/2.0"));
        assert!(!is_http(b"RP\x02"));
        assert!(!is_http(b"\x16\x03\x01"), "a TLS handshake is not HTTP");
        assert!(!is_http(b"\x00garbage"));
    }
}
