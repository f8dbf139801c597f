//! The HTTP server of the endpoint (hyper, HTTP/1.1) and the recorder it renders.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, Instrument};

use super::MetricsError;

/// Longest request head read (hyper's smallest read buffer).
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often histogram samples are folded into their buckets between scrapes. The recorder
/// buffers every sample (16 bytes) until then: at 100,000 calls a second, 1.6 MB.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// A running `/metrics` endpoint, shared by every holder configured with its address.
#[derive(Clone)]
pub struct MetricsEndpoint {
    inner: Arc<Endpoint>,
}

struct Endpoint {
    addr: SocketAddr,
    _server: AbortOnDropHandle<()>,
}

impl MetricsEndpoint {
    /// Serves the process's metrics at `http://{listen}/metrics`, or joins the endpoint
    /// already serving at `listen`.
    pub async fn start(listen: &str) -> Result<Self, MetricsError> {
        let handle = recorder()?;
        if let Some(inner) = running(listen) {
            return Ok(Self { inner });
        }
        let listener = TcpListener::bind(listen).await.map_err(|source| MetricsError::Bind {
            addr: listen.to_owned(),
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| MetricsError::Bind {
            addr: listen.to_owned(),
            source,
        })?;
        info!(%addr, "serving metrics at /metrics");
        let server = tokio::spawn(serve(listener, handle).instrument(tracing::info_span!("metrics_endpoint", %addr)));
        let inner = Arc::new(Endpoint {
            addr,
            _server: AbortOnDropHandle::new(server),
        });
        let mut shared = endpoints().lock().unwrap_or_else(PoisonError::into_inner);
        // Two holders starting at once (port 0): the first registered wins, the other's stops.
        if let Some(first) = shared.get(listen).and_then(Weak::upgrade) {
            return Ok(Self { inner: first });
        }
        shared.retain(|_, weak| weak.strong_count() > 0);
        shared.insert(listen.to_owned(), Arc::downgrade(&inner));
        Ok(Self { inner })
    }

    /// The address served (the bound port when the configuration asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }
}

impl std::fmt::Debug for MetricsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsEndpoint")
            .field("addr", &self.inner.addr)
            .finish()
    }
}

/// The endpoints running in this process, by configured address.
fn endpoints() -> &'static Mutex<HashMap<String, Weak<Endpoint>>> {
    static ENDPOINTS: OnceLock<Mutex<HashMap<String, Weak<Endpoint>>>> = OnceLock::new();
    ENDPOINTS.get_or_init(Mutex::default)
}

/// The endpoint running for the configured address `listen`, if any.
fn running(listen: &str) -> Option<Arc<Endpoint>> {
    let endpoints = endpoints().lock().unwrap_or_else(PoisonError::into_inner);
    endpoints.get(listen).and_then(Weak::upgrade)
}

/// The process's Prometheus recorder, installed at the first call.
fn recorder() -> Result<PrometheusHandle, MetricsError> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_duration_seconds".to_owned()),
                    waypost_core::metrics::DURATION_BUCKETS,
                )
                .ok()?
                .install_recorder()
                .inspect(|_| waypost_core::metrics::describe())
                .ok()
        })
        .clone()
        .ok_or(MetricsError::RecorderTaken)
}

/// Accepts scrapes until dropped; folds histogram samples between them.
async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    let mut scrapes = JoinSet::new();
    let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    scrapes.spawn(answer(stream, handle.clone()).instrument(tracing::debug_span!("scrape", %peer)));
                }
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = upkeep.tick() => handle.run_upkeep(),
            Some(_) = scrapes.join_next(), if !scrapes.is_empty() => {}
        }
    }
}

/// Serves one scrape connection: one request over HTTP/1.1 (hyper), answered by [`route`],
/// then the connection closes (as a scrape a few seconds apart needs); a head over 8 KiB or
/// not received within 5 s closes it too.
async fn answer(stream: TcpStream, handle: PrometheusHandle) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let response = route(request.method(), request.uri().path(), &handle);
        async move { Ok::<_, Infallible>(response) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(REQUEST_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        debug!(error = %e, "scrape connection ended with an error");
    }
}

/// The answer to `method` on `path`: the metrics at `GET /metrics`.
fn route(method: &Method, path: &str, handle: &PrometheusHandle) -> Response<Full<Bytes>> {
    let (status, body) = match (method, path) {
        (&Method::GET, "/metrics") => (StatusCode::OK, handle.render()),
        (_, "/metrics") => (StatusCode::METHOD_NOT_ALLOWED, "only GET\n".to_owned()),
        _ => (StatusCode::NOT_FOUND, "metrics are at /metrics\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_metrics_shares_the_address_and_stops_with_its_last_holder() {
        let first = MetricsEndpoint::start("127.0.0.1:0").await.unwrap();
        let addr = first.local_addr();
        metrics::counter!("rpc_endpoint_test_total", "case" => "one").increment(3);
        let response = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(
            response.contains("rpc_endpoint_test_total{case=\"one\"} 3"),
            "{response}"
        );
        assert!(get(addr, "GET / HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 405"));

        // The same configured address joins the running endpoint.
        let second = MetricsEndpoint::start("127.0.0.1:0").await.unwrap();
        assert_eq!(second.local_addr(), addr);
        drop(first);
        assert!(get(addr, "GET /metrics HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 200"));
        drop(second);
        // The listener closes once the last holder is gone.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).await.is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "the endpoint still accepts");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn an_oversized_request_head_is_refused_and_the_connection_closed() {
        let endpoint = MetricsEndpoint::start("127.0.0.2:0").await.unwrap();
        let mut stream = TcpStream::connect(endpoint.local_addr()).await.unwrap();
        stream.write_all(&vec![b'a'; MAX_REQUEST_HEAD + 2048]).await.unwrap();
        let mut response = Vec::new();
        // Returns once the endpoint closed the connection.
        let _ = stream.read_to_end(&mut response).await;
        let response = String::from_utf8_lossy(&response);
        assert!(
            response.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{response}"
        );
    }
}
