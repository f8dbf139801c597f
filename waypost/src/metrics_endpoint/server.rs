//! The HTTP server of the endpoint and the recorder it renders.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, Instrument};

use super::MetricsError;

/// Longest request head read.
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

/// Answers one request.
async fn answer(mut stream: TcpStream, handle: PrometheusHandle) {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        Ok(Err(e)) => return debug!(error = %e, "bad request"),
        Err(_) => return debug!("request head not received in time"),
    };
    let (status, body) = route(&head, &handle);
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = stream.write_all(response.as_bytes()).await {
        debug!(error = %e, "writing the response failed");
    }
    let _ = stream.shutdown().await;
}

/// The status line and body for a request head.
fn route(head: &str, handle: &PrometheusHandle) -> (&'static str, String) {
    let mut words = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => ("200 OK", handle.render()),
        (_, "/metrics") => ("405 Method Not Allowed", "only GET\n".to_owned()),
        _ => ("404 Not Found", "metrics are at /metrics\n".to_owned()),
    }
}

/// Reads up to the blank line that ends the request head.
async fn read_head(stream: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the request ended",
            ));
        }
        head.extend_from_slice(&chunk[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return String::from_utf8(head).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
        }
        if head.len() > MAX_REQUEST_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "request head over 8 KiB"));
        }
    }
}

#[cfg(test)]
mod tests {
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
    async fn an_oversized_request_is_dropped() {
        let endpoint = MetricsEndpoint::start("127.0.0.2:0").await.unwrap();
        let mut stream = TcpStream::connect(endpoint.local_addr()).await.unwrap();
        stream.write_all(&vec![b'a'; MAX_REQUEST_HEAD + 2048]).await.unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        assert!(response.is_empty(), "no answer to a request head over the limit");
    }
}
