//! Building a server: its options ([`ServerOptions`], from `rpc.server` or set one by one), its
//! services, interceptors, tower layers, limits and TLS ([`ServerBuilder`]), and starting it on
//! a listener ([`ServerBuilder::serve_listener`]), which makes the state every connection
//! shares and spawns the accept loop.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_layer::{Identity, Stack};
use tracing::Instrument;

use crate::compression::Compression;
use crate::config::{CompressionConfig, ServerConfig, ServiceLimits, SheddingConfig};
use crate::context::MetadataLimits;
use crate::interceptor::{Interceptor, Interceptors};
use crate::schema::MethodPrints;
use crate::stream::StreamWindow;
#[cfg(feature = "tls")]
use crate::tls::ServerTls;
use crate::transport::ByteBudget;

use super::accept::{accept_loop, listen};
use super::call::ServerLayers;
#[cfg(feature = "http")]
use super::http;
use super::limits::Limits;
use super::running_server::RunningServer;
use super::shared::{Activity, Shared};
use super::Service;

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
    /// A stream its peer keeps from making progress for this long ends (`None`: never).
    pub stream_idle_timeout: Option<Duration>,
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
            stream_idle_timeout: (config.stream_idle_timeout_ms > 0)
                .then(|| Duration::from_millis(config.stream_idle_timeout_ms)),
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

    /// Sets how long a stream its peer keeps from making progress lives (`None`: for ever).
    pub fn stream_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.options.stream_idle_timeout = timeout;
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
        let prints = self
            .services
            .iter()
            .filter_map(|(key, service)| Some((key.clone(), MethodPrints::of(key, &service.schema()?))))
            .collect();
        let shared = Arc::new(Shared {
            prints,
            services: self.services,
            interceptors: Interceptors::new(self.interceptors),
            stack,
            limits,
            connection_slots: Arc::new(Semaphore::new(self.options.max_connections)),
            max_connections: self.options.max_connections,
            idle_timeout: self.options.idle_timeout,
            stream_idle: self.options.stream_idle_timeout,
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
