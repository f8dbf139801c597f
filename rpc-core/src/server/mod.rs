//! The server: serves any number of [`Service`]s on one TCP listener.
//!
//! # Design
//!
//! * An accept loop hands each connection to its own task. A connection has a reader (the
//!   connection task itself) and a writer task joined by a bounded channel: the writer drains
//!   every frame that is ready and writes them with one syscall, so replies to pipelined calls
//!   are batched.
//! * Each request's handler is polled once in the connection task; one that finishes then
//!   (most do) has its reply batched with the others of the same read. One that has to wait
//!   continues in a task of its own, so the calls of one connection run concurrently and each
//!   reply goes back as soon as it is ready, in any order (see the connection module).
//! * A request frame that starts but does not complete within the frame timeout closes its
//!   connection; a connection without a request for the idle timeout is told to go away and
//!   closed; at most `max_connections` are served at once (more wait in a listen backlog of
//!   4096), and accept errors (out of file descriptors) back off with a throttled log.
//! * Large request bodies (64 KiB and more) are read under a server-wide byte budget: a body
//!   that does not fit waits (TCP pushes back on its sender) until calls holding others finish,
//!   and a read buffer that grew for one is given back once the frame is taken, so memory is
//!   bounded by the budget, not by connections times the largest frame.
//! * A server-wide semaphore bounds the calls in flight; a request that finds no permit is
//!   answered [`Status::Overloaded`](crate::protocol::Status::Overloaded) at once instead of
//!   queueing without bound. Limits per service and method, and adaptive load shedding (a
//!   concurrency limit found from the calls' latency, see the `shedding` module), refuse the
//!   same way, before the request's arguments are decoded.
//! * Each call runs inside its [`CallContext`](crate::context::CallContext) (metadata,
//!   deadline, peer, trace, extensions), which the handler reads with
//!   [`context::current`](crate::context::current).
//! * Middleware: the server's [interceptors](crate::interceptor) see every call before it
//!   runs (and may refuse it) and after it ends; inside them, any `tower::Layer` added with
//!   [`ServerBuilder::layer`] wraps the call as a [`ServerCall`] answered by a
//!   [`Reply`](crate::Reply) (see the `call` module). With neither, a call costs nothing extra.
//! * A handler that panics yields an [`InternalError`](crate::protocol::Status::InternalError)
//!   reply for that call only. A call is dropped when its deadline passes, when its caller
//!   sends Cancel, or when its caller's connection closes: work for a caller who left stops
//!   and frees its concurrency permit. A malformed frame closes that connection only, with a
//!   logged protocol error; a peer of another protocol version gets one answer it can read
//!   before the connection closes.
//! * [`RunningServer::register`] registers every service in a registry at the bound port,
//!   and follows each one's rules there (their limits and shedding apply live); shutdown
//!   deregisters them first, so consumers stop picking this server while it drains.
//! * [`RunningServer::shutdown`] stops accepting, sends GoAway on every connection, answers
//!   new requests with [`ShuttingDown`](crate::protocol::Status::ShuttingDown), waits for the
//!   calls in flight up to the drain timeout, then cancels what is left and closes every
//!   connection. Dropping a
//!   [`RunningServer`] without shutting down cancels everything at once.
//! * Every served service answers the built-in [health method](crate::health): `serving`,
//!   or `draining` from the moment shutdown begins.
//! * Requests answered without running (unknown service or method, overloaded, shutting
//!   down, malformed) are counted by reason; connections open are a gauge
//!   (the [`crate::metrics`] module).

mod admission;
mod call;
mod connection;
mod finish;
#[cfg(feature = "http")]
mod http;
mod limits;
mod running;
#[cfg(feature = "tls")]
mod secure;
mod shedding;
mod stream;

pub use crate::service::{Service, StreamAnswer};
pub use call::{Dispatch, DispatchFuture, ServerCall, ServerLayers, ServerStack};

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tower_layer::{Identity, Stack};
use tracing::{debug, info, warn, Instrument};

use crate::compression::Compression;
use crate::config::ServerConfig;
use crate::config::{CompressionConfig, ServiceLimits, SheddingConfig};
use crate::context::MetadataLimits;
use crate::health::Health;
use crate::interceptor::{Interceptor, Interceptors};
use crate::metrics;
use crate::registry::{HttpEndpoint, Registry, RegistryError, RegistryErrorKind, ServiceInstance};
use crate::rules::ServiceRules;
use crate::schema::ServiceSchema;
use crate::stream::StreamWindow;
#[cfg(feature = "tls")]
use crate::tls::ServerTls;
use crate::transport::ByteBudget;
use limits::Limits;
use std::collections::BTreeMap;

/// After the drain timeout, how long streams get to queue their shutting-down end.
const STREAM_END_GRACE: Duration = Duration::from_millis(200);

/// Request bodies from this size on are read under the server's byte budget.
const LARGE_REQUEST_BYTES: usize = 64 * 1024;

/// Tunables of a server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest request body accepted; a larger one closes the connection.
    pub max_frame_len: usize,
    /// Calls in flight across all connections before new ones are answered "overloaded".
    pub max_concurrent_calls: usize,
    /// Connections served at once; beyond it, new ones wait in the listen backlog.
    pub max_connections: usize,
    /// A connection without a request for this long is told to go away and closed.
    pub idle_timeout: Duration,
    /// How long shutdown waits for calls in flight (after GoAway).
    pub drain_timeout: Duration,
    /// After deregistering, how long at most shutdown keeps serving normally.
    pub deregister_grace: Duration,
    /// Shutdown stops keeping on once no new call has arrived for this long.
    pub deregister_quiet: Duration,
    /// How long a request frame may take from its first byte to its last; a connection that
    /// sends part of a frame and stalls is closed.
    pub frame_timeout: Duration,
    /// Bytes of large request bodies held at once over every connection.
    pub max_buffered_request_bytes: usize,
    /// Bounds on each request's metadata; a request over them is refused.
    pub metadata_limits: MetadataLimits,
    /// The items of a client's stream this side takes ahead of its handler.
    pub stream_window: StreamWindow,
    /// Concurrency and rate limits per service and method (see the `limits` module).
    pub limits: BTreeMap<String, ServiceLimits>,
    /// Adaptive load shedding.
    pub shedding: SheddingConfig,
    /// Compression of responses to the clients that ask for it.
    pub compression: CompressionConfig,
}

impl From<&ServerConfig> for ServerOptions {
    fn from(config: &ServerConfig) -> Self {
        Self {
            max_frame_len: config.max_frame_bytes,
            max_concurrent_calls: config.max_concurrent_calls,
            max_connections: config.max_connections,
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
            drain_timeout: Duration::from_millis(config.drain_timeout_ms),
            deregister_grace: Duration::from_millis(config.deregister_grace_ms),
            deregister_quiet: Duration::from_millis(config.deregister_quiet_ms),
            frame_timeout: Duration::from_millis(config.frame_timeout_ms),
            max_buffered_request_bytes: config.max_buffered_request_bytes,
            metadata_limits: MetadataLimits {
                max_entries: config.max_metadata_entries,
                max_bytes: config.max_metadata_bytes,
            },
            stream_window: config.stream_window,
            limits: config.limits.clone(),
            shedding: config.shedding.clone(),
            compression: config.compression.clone(),
        }
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self::from(&ServerConfig::default())
    }
}

/// Collects services, middleware and options, then binds.
///
/// `L` is the stack of tower layers added with [`ServerBuilder::layer`] (none:
/// [`Identity`]).
pub struct ServerBuilder<L = Identity> {
    services: HashMap<String, Arc<dyn Service>>,
    options: ServerOptions,
    interceptors: Vec<Arc<dyn Interceptor>>,
    layer: L,
    /// Whether any tower layer was added (with none, calls skip the stack).
    layered: bool,
    #[cfg(feature = "tls")]
    tls: Option<ServerTls>,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self {
            services: HashMap::new(),
            options: ServerOptions::default(),
            interceptors: Vec::new(),
            layer: Identity::new(),
            layered: false,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl ServerBuilder {
    /// An empty builder with default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder with the options of the `rpc.server` section.
    pub fn from_config(config: &ServerConfig) -> Self {
        Self::new().options(ServerOptions::from(config))
    }
}

impl<L> ServerBuilder<L> {
    /// Adds a service; a later service with the same key replaces an earlier one.
    pub fn add_service<S: Service>(mut self, service: S) -> Self {
        let service: Arc<dyn Service> = Arc::new(service);
        self.services.insert(service.key().to_owned(), service);
        self
    }

    /// Wraps every call in a `tower::Layer`: tower's own (`TimeoutLayer`,
    /// `ConcurrencyLimitLayer`, `LoadShedLayer`, a `ServiceBuilder` stack) or one of the
    /// user's, over `tower::Service<ServerCall, Response = Reply>`. The first added is the
    /// outermost. A layer's error reaches the caller with the kind the error table gives it:
    /// an `RpcError` keeps its own, tower's `Elapsed` is a timeout, tower's `Overloaded` is
    /// overloaded, anything else is internal with its message.
    pub fn layer<N>(self, layer: N) -> ServerBuilder<Stack<N, L>> {
        ServerBuilder {
            services: self.services,
            options: self.options,
            interceptors: self.interceptors,
            layer: Stack::new(layer, self.layer),
            layered: true,
            #[cfg(feature = "tls")]
            tls: self.tls,
        }
    }

    /// Adds an interceptor that sees every call (see [`crate::interceptor`]), outside the
    /// tower layers; the first added is the outermost.
    pub fn interceptor<I: Interceptor>(mut self, interceptor: I) -> Self {
        self.interceptors.push(Arc::new(interceptor));
        self
    }

    /// Adds an interceptor outside every interceptor added so far, so it sees every call they
    /// see, refusals included (a bootstrap adding metrics to a builder it was handed).
    pub fn outer_interceptor<I: Interceptor>(mut self, interceptor: I) -> Self {
        self.interceptors.insert(0, Arc::new(interceptor));
        self
    }

    /// Serves TLS (with client certificates when `tls` has a client CA) instead of plain
    /// TCP. Keep a clone of `tls` to reload its files later.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Replaces all options.
    pub fn options(mut self, options: ServerOptions) -> Self {
        self.options = options;
        self
    }

    /// Limits the calls of the service `service_key` (`name:version`) and of its methods: at
    /// most so many at once and so many a second (see `rpc.server.limits`).
    pub fn limit(mut self, service_key: impl Into<String>, limits: ServiceLimits) -> Self {
        self.options.limits.insert(service_key.into(), limits);
        self
    }

    /// Compresses responses to the clients that ask for it (see `rpc.server.compression`).
    pub fn compression(mut self, compression: CompressionConfig) -> Self {
        self.options.compression = compression;
        self
    }

    /// Turns on adaptive load shedding with these settings (see `rpc.server.shedding`).
    pub fn shedding(mut self, shedding: SheddingConfig) -> Self {
        self.options.shedding = shedding;
        self
    }

    /// Sets the largest accepted request body.
    pub fn max_frame_len(mut self, bytes: usize) -> Self {
        self.options.max_frame_len = bytes;
        self
    }

    /// Sets the bound on calls in flight.
    pub fn max_concurrent_calls(mut self, calls: usize) -> Self {
        self.options.max_concurrent_calls = calls;
        self
    }

    /// Sets the bound on connections served at once.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.options.max_connections = connections;
        self
    }

    /// Sets how long a connection may go without a request before it is closed.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.options.idle_timeout = timeout;
        self
    }

    /// Sets how long shutdown waits for calls in flight.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.options.drain_timeout = timeout;
        self
    }

    /// Sets how long shutdown keeps serving after deregistering: at most `grace`, and no
    /// longer than until no call has arrived for `quiet`.
    pub fn deregister_wait(mut self, grace: Duration, quiet: Duration) -> Self {
        self.options.deregister_grace = grace;
        self.options.deregister_quiet = quiet;
        self
    }

    /// Sets how long a started request frame has to complete.
    pub fn frame_timeout(mut self, timeout: Duration) -> Self {
        self.options.frame_timeout = timeout;
        self
    }

    /// Sets how many bytes of large request bodies the server holds at once.
    pub fn max_buffered_request_bytes(mut self, bytes: usize) -> Self {
        self.options.max_buffered_request_bytes = bytes;
        self
    }

    /// Sets the bounds on each request's metadata.
    pub fn metadata_limits(mut self, limits: MetadataLimits) -> Self {
        self.options.metadata_limits = limits;
        self
    }

    /// Binds `addr` (see [`listen`]) and starts serving in background tasks.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> io::Result<RunningServer>
    where
        L: ServerLayers,
    {
        let listener = listen(addr).await?;
        Ok(self.serve_listener(listener))
    }

    /// Serves on an already bound listener.
    pub fn serve_listener(self, listener: TcpListener) -> RunningServer
    where
        L: ServerLayers,
    {
        let local_addr = listener.local_addr().ok();
        let stack = self.layered.then(|| self.layer.into_stack());
        let limits = Limits::new(&self.options, &self.services);
        let shared = Arc::new(Shared {
            services: self.services,
            interceptors: Interceptors::new(self.interceptors),
            stack,
            limits,
            connection_slots: Arc::new(Semaphore::new(self.options.max_connections)),
            max_connections: self.options.max_connections,
            idle_timeout: self.options.idle_timeout,
            max_frame_len: self.options.max_frame_len,
            request_bytes: ByteBudget::new(
                self.options.max_buffered_request_bytes.max(self.options.max_frame_len),
                LARGE_REQUEST_BYTES,
            ),
            frame_timeout: self.options.frame_timeout,
            metadata_limits: self.options.metadata_limits,
            stream_window: self.options.stream_window,
            compression: Compression::of(&self.options.compression),
            #[cfg(feature = "tls")]
            tls: self.tls,
            leaving: AtomicBool::new(false),
            draining: CancellationToken::new(),
            ending: CancellationToken::new(),
            abort: CancellationToken::new(),
            calls: TaskTracker::new(),
            activity: Activity::default(),
            #[cfg(feature = "http")]
            http: http::HttpState::new(),
        });
        let stop_accepting = CancellationToken::new();
        let connections = TaskTracker::new();
        let accept = tokio::spawn(
            accept_loop(listener, shared.clone(), stop_accepting.clone(), connections.clone())
                .instrument(tracing::info_span!("rpc_server", addr = ?local_addr)),
        );
        RunningServer {
            local_addr,
            shared,
            stop_accepting,
            connections,
            accept: Some(accept),
            drain_timeout: self.options.drain_timeout,
            deregister_grace: self.options.deregister_grace,
            deregister_quiet: self.options.deregister_quiet,
            registrations: Vec::new(),
            rule_watchers: Vec::new(),
        }
    }
}

/// State shared by the accept loop, the connections and the calls.
pub(crate) struct Shared {
    pub(crate) services: HashMap<String, Arc<dyn Service>>,
    pub(crate) interceptors: Interceptors,
    /// The tower layers around dispatch, when there are any.
    pub(crate) stack: Option<ServerStack>,
    /// The server's concurrency limit and the services' and methods' limits.
    pub(crate) limits: Limits,
    /// One permit per connection served.
    pub(crate) connection_slots: Arc<Semaphore>,
    pub(crate) max_connections: usize,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_frame_len: usize,
    /// The budget of large request bodies.
    pub(crate) request_bytes: ByteBudget,
    pub(crate) frame_timeout: Duration,
    pub(crate) metadata_limits: MetadataLimits,
    /// The items of a client's stream taken ahead of its handler.
    pub(crate) stream_window: StreamWindow,
    /// How responses are compressed for the clients that ask; none: never.
    pub(crate) compression: Option<Compression>,
    /// TLS on every connection, when configured.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<ServerTls>,
    /// Set when shutdown begins, before deregistering: the health method answers `Draining`.
    pub(crate) leaving: AtomicBool,
    /// Cancelled when the server stops taking calls: connections send GoAway, new requests
    /// are refused.
    pub(crate) draining: CancellationToken,
    /// Cancelled when the drain times out: streams still running end with `ShuttingDown`.
    pub(crate) ending: CancellationToken,
    /// Cancelled when the drain ends: calls still running are dropped, connections close.
    pub(crate) abort: CancellationToken,
    /// Every call task, so shutdown can wait for them.
    pub(crate) calls: TaskTracker,
    /// When the last call arrived, recorded only while shutdown waits for quiet.
    pub(crate) activity: Activity,
    /// The schemas and OpenAPI document the HTTP ingress serves, built at its first request.
    #[cfg(feature = "http")]
    pub(crate) http: http::HttpState,
}

impl Shared {
    /// What the health method answers.
    pub(crate) fn health(&self) -> Health {
        if self.leaving.load(Ordering::Relaxed) || self.draining.is_cancelled() {
            Health::Draining
        } else {
            Health::Serving
        }
    }
}

/// When calls arrive, recorded only while someone watches (a read of one flag otherwise).
#[derive(Default)]
pub(crate) struct Activity {
    watching: std::sync::atomic::AtomicBool,
    last_ms: std::sync::atomic::AtomicU64,
    epoch: std::sync::OnceLock<tokio::time::Instant>,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        let epoch = *self.epoch.get_or_init(tokio::time::Instant::now);
        epoch.elapsed().as_millis() as u64
    }

    /// A call arrived.
    pub(crate) fn call_arrived(&self) {
        use std::sync::atomic::Ordering;
        if self.watching.load(Ordering::Relaxed) {
            self.last_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// Waits until no call has arrived for `quiet`, at most `grace`.
    async fn wait_quiet(&self, quiet: Duration, grace: Duration) -> bool {
        use std::sync::atomic::Ordering;
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
        self.watching.store(true, Ordering::Relaxed);
        let give_up = tokio::time::Instant::now() + grace;
        let quiet_ms = quiet.as_millis() as u64;
        loop {
            let idle = self.now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed));
            if idle >= quiet_ms {
                return true;
            }
            let next = tokio::time::Instant::now() + Duration::from_millis(quiet_ms - idle);
            if next >= give_up {
                tokio::time::sleep_until(give_up).await;
                return false;
            }
            tokio::time::sleep_until(next).await;
        }
    }
}

/// Backlog of the listen queue: connections that wait while the server is at its connection
/// limit or busy accepting (the kernel caps it at `net.core.somaxconn`).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a TCP listener on `addr` with a listen backlog of [`LISTEN_BACKLOG`] (the default
/// of 128 makes a connect storm wait for SYN retries) and `SO_REUSEADDR`.
pub async fn listen(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the address resolved to nothing")))
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken, connections: TaskTracker) {
    info!(services = ?shared.services.keys().collect::<Vec<_>>(), "serving");
    // Renewed certificate files are picked up while the server accepts connections.
    #[cfg(feature = "tls")]
    let _tls_files = shared
        .tls
        .clone()
        .map(|tls| tokio_util::task::AbortOnDropHandle::new(tokio::spawn(tls.watch_files(stop.clone()))));
    let mut errors = AcceptErrors::default();
    let mut at_limit = Throttle::default();
    loop {
        // A connection slot first: at the limit, new connections wait in the backlog.
        let slot = match shared.connection_slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                metrics::server_connection_limit_reached();
                if let Some(times) = at_limit.tick() {
                    warn!(
                        limit = shared.max_connections,
                        times, "connection limit reached; new connections wait until one closes"
                    );
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    slot = shared.connection_slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                }
            }
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                errors.succeeded();
                debug!(%peer, "connection accepted");
                if let Err(e) = stream.set_nodelay(true) {
                    debug!(%peer, error = %e, "set_nodelay failed");
                }
                connections.spawn(
                    connection::serve(stream, peer, shared.clone(), slot)
                        .instrument(tracing::debug_span!("rpc_conn", %peer)),
                );
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning, and say so once in a while.
                let pause = errors.failed(&e);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
    debug!("stopped accepting");
}

/// Lets an event through to the log at most every five seconds, counting the ones between.
#[derive(Default)]
struct Throttle {
    since_logged: u64,
    logged_at: Option<tokio::time::Instant>,
}

impl Throttle {
    const EVERY: Duration = Duration::from_secs(5);

    /// Counts an event; `Some(count)` (the events since the last log line) when it is time to
    /// log one.
    fn tick(&mut self) -> Option<u64> {
        self.since_logged += 1;
        let now = tokio::time::Instant::now();
        if self.logged_at.is_some_and(|at| now.duration_since(at) < Self::EVERY) {
            return None;
        }
        self.logged_at = Some(now);
        Some(std::mem::take(&mut self.since_logged))
    }
}

/// Accept failures in a row: a growing pause, and a throttled log line.
#[derive(Default)]
struct AcceptErrors {
    in_a_row: u32,
    log: Throttle,
}

impl AcceptErrors {
    fn failed(&mut self, error: &io::Error) -> Duration {
        self.in_a_row = self.in_a_row.saturating_add(1);
        if let Some(failures) = self.log.tick() {
            warn!(error = %error, failures, "accept failed; backing off");
        }
        crate::backoff::exponential(Duration::from_millis(10), Duration::from_secs(1), self.in_a_row)
    }

    fn succeeded(&mut self) {
        self.in_a_row = 0;
    }
}

/// Outcome of a graceful shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Whether every call in flight finished within the drain timeout.
    pub drained: bool,
}

/// A server that is serving. Shut it down with [`RunningServer::shutdown`].
pub struct RunningServer {
    local_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    stop_accepting: CancellationToken,
    connections: TaskTracker,
    accept: Option<tokio::task::JoinHandle<()>>,
    drain_timeout: Duration,
    deregister_grace: Duration,
    deregister_quiet: Duration,
    registrations: Vec<(Arc<dyn Registry>, ServiceInstance)>,
    /// One task per registered service, following its rules (limits, shedding).
    rule_watchers: Vec<AbortOnDropHandle<()>>,
}

/// Follows `service_key`'s rules in `registry` for as long as it is polled, applying their
/// admission fields to `shared`'s limits; an invalid text is ignored with a warning (the
/// last valid rules stay), and the same text again (a watch started anew) changes nothing,
/// so the gates keep their counts.
async fn follow_admission_rules(registry: Arc<dyn Registry>, service_key: String, shared: Arc<Shared>) {
    let backoff = crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut seen: Option<Option<String>> = None;
    crate::registry::follow_rules(&*registry, &service_key, backoff, |text| {
        if seen.as_ref() == Some(&text) {
            return;
        }
        seen = Some(text.clone());
        match text.as_deref().map(ServiceRules::parse) {
            None => shared.limits.apply_rules(&service_key, None),
            Some(Ok(rules)) => shared.limits.apply_rules(&service_key, Some(&rules)),
            Some(Err(e)) => {
                warn!(service = %service_key, error = %e, "rules ignored; the last valid ones stay in force")
            }
        }
    })
    .await
}

/// Publishes a service's schema, when it has one, and gives the fingerprint its instance names;
/// a registry that stores no schemas gets instances without one (consumers then take them to
/// have every method).
async fn publish(
    registry: &dyn Registry,
    service_key: &str,
    schema: Option<ServiceSchema>,
) -> Result<Option<String>, RegistryError> {
    let Some(schema) = schema else { return Ok(None) };
    match crate::registry::publish_schema(registry, service_key, &schema).await {
        Ok(fingerprint) => {
            debug!(service = service_key, %fingerprint, "schema published");
            Ok(Some(fingerprint))
        }
        Err(e) if e.kind() == RegistryErrorKind::InvalidConfig => {
            warn!(service = service_key, error = %e, "registering without a schema");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// How a server's services appear in a registry.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Host callers dial (the bound port is used).
    pub host: String,
    /// Weight for weighted balancers.
    pub weight: u32,
    /// Labels.
    pub metadata: std::collections::BTreeMap<String, String>,
}

impl Registration {
    /// The registration the `rpc.server` section describes: its zone and warm-up travel as
    /// metadata (`zone`, `warmup_secs`), which consumers read.
    pub fn from_config(config: &ServerConfig) -> Self {
        let mut metadata = config.metadata.clone();
        if !config.zone.is_empty() {
            metadata.insert(crate::registry::ZONE.to_owned(), config.zone.clone());
        }
        if config.warmup_secs > 0 {
            metadata.insert(crate::registry::WARMUP_SECS.to_owned(), config.warmup_secs.to_string());
        }
        Self {
            host: config.registered_host().to_owned(),
            weight: config.weight,
            metadata,
        }
    }
}

impl RunningServer {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.local_addr
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "listener has no local address"))
    }

    /// Registers every service at `registration.host` and the bound port. Shutdown
    /// deregisters them before it drains.
    pub async fn register(
        &mut self,
        registry: Arc<dyn Registry>,
        registration: &Registration,
    ) -> Result<Vec<ServiceInstance>, RegistryError> {
        let port = self
            .local_addr
            .map(|a| a.port())
            .ok_or_else(|| RegistryError::InvalidInstance("listener has no local address".to_owned()))?;
        let mut registered = Vec::new();
        for service in self.shared.services.values() {
            let mut instance = ServiceInstance::new(service.name(), service.version(), registration.host.clone(), port);
            instance.weight = registration.weight;
            instance.metadata = registration.metadata.clone();
            instance.schema = publish(&*registry, service.key(), service.schema()).await?;
            instance.http = self.serves_http().then(|| HttpEndpoint {
                port,
                tls: self.uses_tls(),
            });
            registry.register(&instance).await?;
            self.registrations.push((registry.clone(), instance.clone()));
            self.rule_watchers
                .push(AbortOnDropHandle::new(tokio::spawn(follow_admission_rules(
                    registry.clone(),
                    service.key().to_owned(),
                    self.shared.clone(),
                ))));
            registered.push(instance);
        }
        Ok(registered)
    }

    /// Registers every instance again with `registration`'s weight and metadata (the address
    /// stays): how a reloaded configuration reaches consumers without a restart. Returns the
    /// instances as registered now.
    pub async fn update_registration(
        &mut self,
        registration: &Registration,
    ) -> Result<Vec<ServiceInstance>, RegistryError> {
        let mut updated = Vec::with_capacity(self.registrations.len());
        for (registry, instance) in &mut self.registrations {
            let mut next = instance.clone();
            next.weight = registration.weight;
            next.metadata = registration.metadata.clone();
            if next != *instance {
                registry.register(&next).await?;
                *instance = next;
            }
            updated.push(instance.clone());
        }
        Ok(updated)
    }

    /// Whether the server answers HTTP/JSON on its port (the `http` feature): on plain TCP,
    /// and over TLS to clients that ask for HTTP by ALPN.
    pub fn serves_http(&self) -> bool {
        cfg!(feature = "http")
    }

    /// Whether connections to the server are TLS.
    pub fn uses_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        if self.shared.tls.is_some() {
            return true;
        }
        false
    }

    /// Number of calls running right now.
    pub fn calls_in_flight(&self) -> usize {
        self.shared.calls.len()
    }

    /// Number of client connections open right now.
    pub fn open_connections(&self) -> usize {
        self.connections.len()
    }

    /// Shuts down without losing a call:
    ///
    /// 1. deregisters every service;
    /// 2. keeps serving normally while consumers learn of it: until no new call has arrived
    ///    for the quiet period, at most the deregister grace (skipped when nothing was
    ///    registered);
    /// 3. stops accepting and tells every connection to go away (GoAway): clients send new
    ///    calls to other instances, and a call that still arrives is answered `ShuttingDown`
    ///    without running, which clients re-send elsewhere;
    /// 4. lets calls in flight finish, and clients close their connections, up to the drain
    ///    timeout; then cancels what is left and closes every connection.
    pub async fn shutdown(mut self) -> ShutdownReport {
        self.shared.leaving.store(true, Ordering::Relaxed);
        self.rule_watchers.clear();
        let registrations = std::mem::take(&mut self.registrations);
        let registered = !registrations.is_empty();
        for (registry, instance) in registrations {
            if let Err(e) = registry.deregister(&instance).await {
                warn!(service = %instance.service_key(), error = %e, "deregistration failed");
            }
        }
        if registered {
            let started = tokio::time::Instant::now();
            let quiet = self
                .shared
                .activity
                .wait_quiet(self.deregister_quiet, self.deregister_grace)
                .await;
            info!(waited = ?started.elapsed(), quiet, "deregistered; consumers had time to notice");
        }
        self.stop_accepting.cancel();
        self.shared.draining.cancel();
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
        self.shared.calls.close();
        self.connections.close();
        // Calls in flight finish; then clients close their connections (a client closes a
        // connection told to go away once its calls have ended), so a request already on its
        // way is answered "shutting down" (and re-sent elsewhere) rather than lost with a
        // connection closed under it.
        let drained = tokio::time::timeout(self.drain_timeout, async {
            self.shared.calls.wait().await;
            self.connections.wait().await;
        })
        .await
        .is_ok();
        if !drained {
            warn!(
                calls_left = self.shared.calls.len(),
                connections_left = self.connections.len(),
                timeout = ?self.drain_timeout,
                "drain timeout: ending streams, cancelling calls still in flight and closing connections"
            );
            // Streams still open end with shutting-down (their tasks end once that is queued).
            self.shared.ending.cancel();
            let _ = tokio::time::timeout(STREAM_END_GRACE, self.shared.calls.wait()).await;
        }
        self.shared.abort.cancel();
        self.shared.calls.wait().await;
        self.connections.wait().await;
        info!(drained, "server stopped");
        ShutdownReport { drained }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stop_accepting.cancel();
        self.shared.draining.cancel();
        self.shared.ending.cancel();
        self.shared.abort.cancel();
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
    }
}
