//! The YAML configuration shared by providers and consumers.
//!
//! ```yaml
//! rpc:
//!   name: example-provider
//!   server: { host: 127.0.0.1, port: 9001 }
//!   serializer: msgpack          # msgpack | bincode | postcard | json
//!   registry:
//!     type: etcd                 # etcd | zookeeper | memory
//!     endpoints: ["127.0.0.1:2379"]
//!     root: /rpc
//!     ttl_secs: 10
//!     timeout_ms: 3000
//!   consumer:
//!     timeout_ms: 3000
//!     load_balancer: round_robin # round_robin | random | weighted_random | consistent_hash | p2c
//!     retry: { strategy: none, max_attempts: 3, base_delay_ms: 50 }
//!     tolerant: fail_fast        # fail_fast | fail_safe | fail_over | fail_back
//!     schema_check: warn         # warn | strict | off
//! ```
//!
//! Every field has a default; see the `Default` impls. Loading goes: YAML text, then
//! environment overrides, then typed deserialization, then cross-field validation. Any error
//! names the field by its full path (`rpc.registry.type`), the bad value and, for choices, the
//! valid ones.
//!
//! # Environment overrides
//!
//! A variable `RPC__A__B=value` sets `rpc.a.b` (names are case-insensitive, `__` separates
//! levels), e.g. `RPC__REGISTRY__TYPE=zookeeper`, `RPC__SERVER__PORT=9002`,
//! `RPC__REGISTRY__ENDPOINTS=10.0.0.1:2379,10.0.0.2:2379`. The value is read as a YAML
//! scalar or flow collection, so numbers, booleans and `[a, b]` lists work; list fields also
//! accept a comma-separated string.

mod security;
mod strategy;

pub use strategy::{LoadBalancerKind, RetryStrategy, SchemaCheck, TolerantKind};

pub use security::{ClientAuthConfig, ClientTlsConfig, RegistryTlsConfig, Secret, ServerAuthConfig, ServerTlsConfig};

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::choice::choice;
use crate::host::is_valid_host;
use crate::serializer::SerializerKind;
use crate::stream::StreamWindow;

/// Prefix of the environment variables that override configuration values.
pub const ENV_PREFIX: &str = "RPC__";

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The text is not YAML.
    #[error("{origin}: invalid YAML: {message}")]
    Yaml {
        /// File path or environment variable.
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// A field has a value that is not allowed.
    #[error("{origin}: {field}: {message}")]
    Invalid {
        /// File path (or `<string>`).
        origin: String,
        /// Full path of the field, e.g. `rpc.registry.type`.
        field: String,
        /// What is wrong, naming the value and what is allowed.
        message: String,
    },
}

choice!(
    /// Which registry backend to use.
    #[non_exhaustive]
    RegistryKind {
        /// etcd v3 (leases and watches).
        Etcd = "etcd",
        /// ZooKeeper (ephemeral nodes and child watches).
        Zookeeper = "zookeeper",
        /// In-process registry for single-process use and tests.
        Memory = "memory",
    }
);

/// The root of a configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Everything lives under `rpc:`.
    #[serde(default)]
    pub rpc: RpcConfig,
}

/// `rpc:` — the whole configuration of one process.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcConfig {
    /// The application's name, for logs.
    pub name: String,
    /// Where a provider listens.
    pub server: ServerConfig,
    /// The serializer a consumer encodes calls with.
    pub serializer: SerializerKind,
    /// The registry both sides use.
    pub registry: RegistryConfig,
    /// How a consumer calls.
    pub consumer: ConsumerConfig,
    /// The metrics endpoint.
    pub metrics: MetricsConfig,
    /// Span export (OpenTelemetry).
    pub telemetry: TelemetryConfig,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            name: "rpc-app".to_owned(),
            server: ServerConfig::default(),
            serializer: SerializerKind::MsgPack,
            registry: RegistryConfig::default(),
            consumer: ConsumerConfig::default(),
            metrics: MetricsConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

/// `rpc.server:` — the provider's listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to bind.
    pub host: String,
    /// Port to bind; `0` picks a free one (the registered port is the bound one).
    pub port: u16,
    /// Host registered for callers to dial; defaults to `host`, required when `host` is a
    /// wildcard such as `0.0.0.0`.
    pub advertise_host: Option<String>,
    /// Calls in flight before new ones are answered "overloaded".
    pub max_concurrent_calls: usize,
    /// Client connections served at once; beyond it, new connections wait in the listen
    /// backlog until one closes.
    pub max_connections: usize,
    /// A connection on which no request arrived for this long is told to go away (the
    /// protocol's GoAway; over HTTP/2 a GOAWAY, over HTTP/1.1 a close) and closed, at most 2 s
    /// later; the client reconnects when it calls again. A call or an HTTP response still being
    /// answered keeps its connection.
    pub idle_timeout_ms: u64,
    /// A stream that its peer keeps from making progress for this long ends and frees its call
    /// slot: an RPC stream whose reader grants no credit for its next items (it ends with
    /// `deadline_exceeded`) or whose client sends no item while the handler waits for one (the
    /// handler's read fails with a timeout); an HTTP response its client does not take (an
    /// HTTP/2 window never opened, an HTTP/1.1 socket not read) closes its connection. 0:
    /// never.
    pub stream_idle_timeout_ms: u64,
    /// How long shutdown waits for calls in flight (after GoAway).
    pub drain_timeout_ms: u64,
    /// After deregistering, how long at most shutdown keeps serving normally while consumers
    /// learn that this instance is leaving.
    pub deregister_grace_ms: u64,
    /// Shutdown stops waiting for consumers earlier once no new call has arrived for this long.
    pub deregister_quiet_ms: u64,
    /// Largest accepted frame body in bytes.
    pub max_frame_bytes: usize,
    /// Bytes of large request bodies (64 KiB and more; RPC frames and HTTP bodies alike) the
    /// server holds at once, being read or in calls still running, over every connection; a large request that would exceed it
    /// waits (within `frame_timeout_ms`) for room. At least `max_frame_bytes`.
    pub max_buffered_request_bytes: usize,
    /// How long a started request (a frame, an HTTP request's head, the first bytes that tell
    /// the protocol) has to complete before the connection is closed.
    pub frame_timeout_ms: u64,
    /// Weight registered for weighted balancers.
    pub weight: u32,
    /// Labels registered with every service.
    pub metadata: BTreeMap<String, String>,
    /// The zone registered with every service (metadata `zone`); consumers in the same zone
    /// prefer it. Empty: none.
    pub zone: String,
    /// Consumers ramp a new instance's share of calls up linearly over this many seconds
    /// after it registered (metadata `warmup_secs`). 0: none.
    pub warmup_secs: u64,
    /// Most metadata entries a request may carry.
    pub max_metadata_entries: usize,
    /// Most bytes of encoded metadata a request may carry.
    pub max_metadata_bytes: usize,
    /// The items of a client's stream the server takes ahead of the handler reading them:
    /// `{messages, bytes}`.
    pub stream_window: StreamWindow,
    /// Concurrency and rate limits per service (keyed `name:version`) and per method; a call
    /// over one is answered "overloaded".
    pub limits: BTreeMap<String, ServiceLimits>,
    /// Adaptive load shedding over all calls.
    pub shedding: SheddingConfig,
    /// zstd compression of responses to the clients that ask for it.
    pub compression: CompressionConfig,
    /// TLS on the listener; absent: plain TCP.
    pub tls: Option<ServerTlsConfig>,
    /// Caller authentication; absent: every caller is served.
    pub auth: Option<ServerAuthConfig>,
}

/// Largest frame body accepted by default: 16 MiB.
const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// The smallest frame limit allowed: room for a request's prefix, metadata and small
/// arguments.
const MIN_FRAME_BYTES: usize = 1024;
/// Metadata entries a request may carry by default.
const DEFAULT_MAX_METADATA_ENTRIES: usize = 64;
/// Bytes of encoded metadata a request may carry by default.
const DEFAULT_MAX_METADATA_BYTES: usize = 16 * 1024;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 9001,
            advertise_host: None,
            max_concurrent_calls: 10_000,
            max_connections: 10_000,
            idle_timeout_ms: 300_000,
            stream_idle_timeout_ms: 30_000,
            drain_timeout_ms: 10_000,
            deregister_grace_ms: 5_000,
            deregister_quiet_ms: 500,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_buffered_request_bytes: 256 * 1024 * 1024,
            frame_timeout_ms: 10_000,
            weight: 1,
            metadata: BTreeMap::new(),
            zone: String::new(),
            warmup_secs: 0,
            max_metadata_entries: DEFAULT_MAX_METADATA_ENTRIES,
            max_metadata_bytes: DEFAULT_MAX_METADATA_BYTES,
            stream_window: StreamWindow::default(),
            limits: BTreeMap::new(),
            shedding: SheddingConfig::default(),
            compression: CompressionConfig::default(),
            tls: None,
            auth: None,
        }
    }
}

impl ServerConfig {
    /// The host registered for callers.
    pub fn registered_host(&self) -> &str {
        self.advertise_host.as_deref().unwrap_or(&self.host)
    }
}

/// `rpc.registry:` — which registry and how to reach it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// The backend.
    #[serde(rename = "type")]
    pub kind: RegistryKind,
    /// `host:port` of each server (an etcd cluster, a ZooKeeper ensemble).
    #[serde(deserialize_with = "list_or_comma_string")]
    pub endpoints: Vec<String>,
    /// Root path of every key.
    pub root: String,
    /// etcd lease TTL; also the default ZooKeeper session timeout.
    pub ttl_secs: u64,
    /// Limit of each registry operation and of connecting.
    pub timeout_ms: u64,
    /// The registry user: etcd authentication, or ZooKeeper digest authentication (the
    /// service nodes this process creates are then writable by that identity only).
    pub username: Option<String>,
    /// The user's password.
    pub password: Option<Secret>,
    /// TLS to etcd (its endpoints are then reached over https).
    pub tls: Option<RegistryTlsConfig>,
    /// ZooKeeper session timeout; defaults to `ttl_secs`.
    pub session_timeout_ms: Option<u64>,
    /// How often a provider checks that its registrations still exist.
    pub reconcile_secs: u64,
    /// etcd: how often each connection to a member is pinged (HTTP/2 keep-alive). A ping not
    /// answered within `timeout_ms` closes the connection, and the requests, watches and lease
    /// keep-alives on it move to another member: a frozen or dead member is left within this
    /// plus the timeout. etcd closes connections that ping more often than its
    /// `--grpc-keepalive-min-time` (5 s by default), so this is at least 5000.
    pub keepalive_interval_ms: u64,
    /// How often a consumer re-lists every watched service.
    pub resync_secs: u64,
    /// How long a consumer keeps its last-known instances when the registry suddenly lists
    /// none (as after losing its data, before providers register again).
    pub empty_list_grace_ms: u64,
    /// Consumer: a file that holds its last-known instances, to start from while the registry
    /// is unreachable.
    pub cache_file: Option<std::path::PathBuf>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            kind: RegistryKind::Etcd,
            endpoints: vec!["127.0.0.1:2379".to_owned()],
            root: "/rpc".to_owned(),
            ttl_secs: 10,
            timeout_ms: 3000,
            username: None,
            password: None,
            tls: None,
            session_timeout_ms: None,
            reconcile_secs: 5,
            keepalive_interval_ms: 10_000,
            resync_secs: 30,
            empty_list_grace_ms: 10_000,
            cache_file: None,
        }
    }
}

impl RegistryConfig {
    /// [`Self::timeout_ms`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The ZooKeeper session timeout.
    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.session_timeout_ms.unwrap_or(self.ttl_secs * 1000))
    }
}

/// `rpc.metrics:` — where the process shows its metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` of the HTTP endpoint serving Prometheus text at `/metrics`; none when
    /// absent. A provider and a consumer of one process share the endpoint.
    pub listen: Option<String>,
}

/// `rpc.telemetry:` — where the process exports its call spans (the `otel` feature of `waypost`;
/// `waypost::telemetry::init` reads it). The standard `OTEL_*` variables win over it:
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` (and with one of them
/// export is on without this section), `OTEL_TRACES_SAMPLER` with `OTEL_TRACES_SAMPLER_ARG`,
/// `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`, and
/// `OTEL_SDK_DISABLED=true` turns export off.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The OTLP/gRPC endpoint spans go to, e.g. `http://127.0.0.1:4317` (an OpenTelemetry
    /// Collector, Jaeger, Tempo); none: no export.
    pub otlp_endpoint: Option<String>,
    /// The share of new traces recorded, from 0.0 to 1.0; a call that continues a caller's
    /// trace follows the caller's decision.
    pub sampling_ratio: f64,
    /// The exported `service.name`; default: `rpc.name`.
    pub service_name: Option<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            sampling_ratio: 1.0,
            service_name: None,
        }
    }
}

/// `rpc.consumer:` — how calls are made. `services` overrides any of it per service (and
/// per method).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Per-call timeout.
    pub timeout_ms: u64,
    /// The consumer's zone: calls go to instances registered in it while at least one of
    /// them is usable, else to all. Empty: none.
    pub zone: String,
    /// How an instance is picked.
    pub load_balancer: LoadBalancerKind,
    /// When a failed call is retried.
    pub retry: RetryConfig,
    /// What happens when a call still fails.
    pub tolerant: TolerantKind,
    /// Call only the local implementation handed to the client builder, never the network.
    pub mock: bool,
    /// When an instance is skipped for a while.
    pub outlier: OutlierConfig,
    /// Overrides per service, keyed `name:version` or `name` (any version); case-insensitive.
    pub services: BTreeMap<String, ServiceOverride>,
    /// Longest a TCP connect to a provider may take.
    pub connect_timeout_ms: u64,
    /// A connection with nothing read for this long sends a ping.
    pub keepalive_interval_ms: u64,
    /// A connection whose ping gets no answer within this time is closed.
    pub keepalive_timeout_ms: u64,
    /// After a call times out, its provider must answer a ping within this, or calls avoid
    /// it until it answers (a frozen process keeps its connections and its registry key).
    pub probe_timeout_ms: u64,
    /// Largest response body accepted.
    pub max_frame_bytes: usize,
    /// Most metadata entries a call may carry.
    pub max_metadata_entries: usize,
    /// Most bytes of encoded metadata a call may carry.
    pub max_metadata_bytes: usize,
    /// How long the connection and health record of an instance that left discovery are kept,
    /// in case it comes back (a flapping instance keeps its connection); then they are closed
    /// and forgotten.
    pub departed_grace_ms: u64,
    /// Connections to one provider at most; past the first, they open only while large
    /// payloads are in flight.
    pub max_connections_per_provider: usize,
    /// TLS to providers; absent: plain TCP.
    pub tls: Option<ClientTlsConfig>,
    /// The credentials sent with every call.
    pub auth: Option<ClientAuthConfig>,
    /// What to do with providers whose schema is incompatible with this consumer's.
    pub schema_check: SchemaCheck,
    /// The items of a server's stream taken ahead of the reader: `{messages, bytes}`.
    pub stream_window: StreamWindow,
    /// How long a whole stream may last, from its start; 0: no limit (the method's timeout
    /// still bounds its start).
    pub stream_timeout_ms: u64,
    /// How long a stream may wait for the server's next item; 0: no limit.
    pub stream_idle_timeout_ms: u64,
    /// Hedged calls for `#[idempotent]` methods.
    pub hedging: HedgingConfig,
    /// The circuit breaker of each instance.
    pub breaker: BreakerConfig,
    /// This consumer's calls in flight to one instance at most; past it, calls go to other
    /// instances, or fail overloaded without being sent. 0: no limit.
    pub max_in_flight_per_instance: usize,
    /// zstd compression of requests, and of the responses this consumer asks for.
    pub compression: CompressionConfig,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            timeout_ms: 3000,
            zone: String::new(),
            load_balancer: LoadBalancerKind::RoundRobin,
            retry: RetryConfig::default(),
            tolerant: TolerantKind::FailFast,
            mock: false,
            outlier: OutlierConfig::default(),
            services: BTreeMap::new(),
            connect_timeout_ms: 3000,
            keepalive_interval_ms: 30_000,
            keepalive_timeout_ms: 10_000,
            probe_timeout_ms: 1_000,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_metadata_entries: DEFAULT_MAX_METADATA_ENTRIES,
            max_metadata_bytes: DEFAULT_MAX_METADATA_BYTES,
            departed_grace_ms: 30_000,
            max_connections_per_provider: 8,
            tls: None,
            auth: None,
            schema_check: SchemaCheck::Warn,
            stream_window: StreamWindow::default(),
            stream_timeout_ms: 0,
            stream_idle_timeout_ms: 0,
            hedging: HedgingConfig::default(),
            breaker: BreakerConfig::default(),
            max_in_flight_per_instance: 0,
            compression: CompressionConfig::default(),
        }
    }
}

/// `rpc.consumer.outlier:` — ejection of failing instances.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutlierConfig {
    /// Failed calls in a row that eject an instance (a failed connect ejects at once).
    pub consecutive_failures: u32,
    /// First ejection period; each further ejection in a row doubles it.
    pub base_ejection_ms: u64,
    /// Longest ejection period.
    pub max_ejection_ms: u64,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 3,
            base_ejection_ms: 1000,
            max_ejection_ms: 30_000,
        }
    }
}

/// `rpc.consumer.compression:` and `rpc.server.compression:` — zstd compression of bodies of
/// at least `min_bytes` (see `waypost_core::compression`: negotiated per connection, so a peer
/// that cannot decode it is never sent it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompressionConfig {
    /// Whether bodies are compressed (a consumer: its requests, and it asks for compressed
    /// responses; a server: its responses to consumers that ask).
    pub enabled: bool,
    /// Bodies smaller than this go plain.
    pub min_bytes: usize,
    /// zstd level, 1 (fastest) to 22.
    pub level: i32,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            min_bytes: 1024,
            level: 1,
        }
    }
}

impl CompressionConfig {
    /// This configuration with `changes` applied.
    pub fn merged(&self, changes: Option<&CompressionOverride>) -> Self {
        let Some(c) = changes else { return self.clone() };
        Self {
            enabled: c.enabled.unwrap_or(self.enabled),
            min_bytes: c.min_bytes.unwrap_or(self.min_bytes),
            level: c.level.unwrap_or(self.level),
        }
    }
}

/// Compression fields to change (in the YAML per service and method, and in a service's
/// live rules); the others are inherited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompressionOverride {
    /// Whether bodies are compressed.
    pub enabled: Option<bool>,
    /// Bodies smaller than this go plain.
    pub min_bytes: Option<usize>,
    /// zstd level.
    pub level: Option<i32>,
}

/// `rpc.consumer.breaker:` — each instance's circuit breaker: adaptive throttling from its
/// recent requests and accepts (see [`crate::fault::breaker`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Whether attempts to an instance that fails often are refused locally. Off by default:
    /// on, a service whose every instance fails sees `overloaded` (unsent) rather than its
    /// instances' own errors.
    pub enabled: bool,
    /// How many times the accepts may fall short of the requests before refusals start
    /// (lower: earlier); at least 1.
    pub k: f64,
    /// The window requests and accepts are counted over.
    pub window_ms: u64,
    /// Requests in a window that are never refused.
    pub protection: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            k: 1.5,
            window_ms: 10_000,
            protection: 5,
        }
    }
}

/// `rpc.consumer.services.<key>:` — what one service does differently.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceOverride {
    /// Per-call timeout.
    pub timeout_ms: Option<u64>,
    /// How an instance is picked.
    pub load_balancer: Option<LoadBalancerKind>,
    /// Retry fields to change.
    pub retry: Option<RetryOverride>,
    /// Tolerance strategy.
    pub tolerant: Option<TolerantKind>,
    /// Local implementation only.
    pub mock: Option<bool>,
    /// Hedging fields to change.
    pub hedging: Option<HedgingOverride>,
    /// Compression fields to change.
    pub compression: Option<CompressionOverride>,
    /// Overrides per method name.
    pub methods: BTreeMap<String, MethodOverride>,
}

/// `rpc.consumer.services.<key>.methods.<name>:` — what one method does differently.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MethodOverride {
    /// Per-call timeout.
    pub timeout_ms: Option<u64>,
    /// Retry fields to change.
    pub retry: Option<RetryOverride>,
    /// Tolerance strategy.
    pub tolerant: Option<TolerantKind>,
    /// Local implementation only.
    pub mock: Option<bool>,
    /// Hedging fields to change.
    pub hedging: Option<HedgingOverride>,
    /// Compression fields to change.
    pub compression: Option<CompressionOverride>,
}

/// Hedging fields to change (in the YAML per service and method, and in a service's live
/// rules); the others are inherited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HedgingOverride {
    /// Whether `#[idempotent]` calls are hedged.
    pub enabled: Option<bool>,
    /// How long an attempt runs before the next one starts; 0: adaptive.
    pub delay_ms: Option<u64>,
    /// Extra attempts at most per call.
    pub max_extra: Option<u32>,
}

/// Retry fields to change; the others are inherited.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryOverride {
    /// The policy.
    pub strategy: Option<RetryStrategy>,
    /// Attempts in all.
    pub max_attempts: Option<u32>,
    /// Delay before the first retry.
    pub base_delay_ms: Option<u64>,
    /// Longest delay between attempts.
    pub max_delay_ms: Option<u64>,
    /// Limit of each attempt.
    pub attempt_timeout_ms: Option<u64>,
}

impl ConsumerConfig {
    /// [`Self::timeout_ms`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// `rpc.server.shedding:` — adaptive load shedding: a concurrency limit for all calls that
/// the server finds from their latency (see `waypost_core::server` on load shedding).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SheddingConfig {
    /// Whether calls past the adaptive limit are refused.
    pub enabled: bool,
    /// How many times its unloaded latency a call may take before the limit falls; above 1.
    pub tolerance: f64,
    /// The limit never falls below this (and starts at it).
    pub min_limit: usize,
    /// The limit never rises above this.
    pub max_limit: usize,
}

impl Default for SheddingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            tolerance: 1.5,
            min_limit: 8,
            max_limit: 10_000,
        }
    }
}

/// `rpc.server.limits.<service>:` — a service's limits, and its methods'.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceLimits {
    /// Calls of the service running at once, at most.
    pub max_concurrent: Option<u32>,
    /// Calls of the service admitted per second, at most (a second's worth may come at once).
    pub rate_per_sec: Option<u32>,
    /// Limits of single methods, by name.
    pub methods: BTreeMap<String, CallLimits>,
}

impl ServiceLimits {
    /// The service's own limits.
    pub fn call(&self) -> CallLimits {
        CallLimits {
            max_concurrent: self.max_concurrent,
            rate_per_sec: self.rate_per_sec,
        }
    }

    /// The first limit that is 0 (none is allowed: leave a limit out for none): its path
    /// below the service (`.max_concurrent`, `.methods.find.rate_per_sec`) and the problem.
    pub fn invalid_field(&self) -> Option<(String, &'static str)> {
        let named = std::iter::once((String::new(), self.call()))
            .chain(self.methods.iter().map(|(m, l)| (format!(".methods.{m}"), *l)));
        for (at, call) in named {
            for (field, value) in [
                ("max_concurrent", call.max_concurrent),
                ("rate_per_sec", call.rate_per_sec),
            ] {
                if value == Some(0) {
                    return Some((
                        format!("{at}.{field}"),
                        "must be at least 1 (leave it out for no limit)",
                    ));
                }
            }
        }
        None
    }
}

/// The limits of a service or a method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallLimits {
    /// Calls running at once, at most.
    pub max_concurrent: Option<u32>,
    /// Calls admitted per second, at most.
    pub rate_per_sec: Option<u32>,
}

/// `rpc.consumer.hedging:` — a second attempt of an `#[idempotent]` call to another instance
/// when the first is slow; the first answer wins and the other is cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HedgingConfig {
    /// Whether `#[idempotent]` calls are hedged.
    pub enabled: bool,
    /// How long an attempt runs before the next one starts; 0: the service's recent 95th
    /// percentile latency (at least 5 ms; no hedging until 32 calls have been seen).
    pub delay_ms: u64,
    /// Extra attempts at most per call (each takes a token of the retry budget).
    pub max_extra: u32,
}

impl HedgingConfig {
    /// This configuration with `changes` applied.
    pub fn merged(&self, changes: Option<&HedgingOverride>) -> Self {
        let Some(c) = changes else { return self.clone() };
        Self {
            enabled: c.enabled.unwrap_or(self.enabled),
            delay_ms: c.delay_ms.unwrap_or(self.delay_ms),
            max_extra: c.max_extra.unwrap_or(self.max_extra),
        }
    }
}

impl Default for HedgingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            delay_ms: 0,
            max_extra: 1,
        }
    }
}

/// `rpc.consumer.retry:`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// The policy.
    pub strategy: RetryStrategy,
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub base_delay_ms: u64,
    /// Longest delay between attempts (caps exponential backoff).
    pub max_delay_ms: u64,
    /// Limit of each attempt within the call's timeout, so a timed-out attempt of an
    /// idempotent method leaves time for another; none by default (an attempt may use all the
    /// time left).
    pub attempt_timeout_ms: Option<u64>,
    /// Retries and fail-overs (re-sends of calls that never ran included) may add at most
    /// this share of the calls, in percent, per service. Only in `rpc.consumer.retry`.
    pub budget_percent: u32,
    /// Retries a second allowed on top of the budget's share, so a few are possible when
    /// calls are few. Only in `rpc.consumer.retry`.
    pub min_retries_per_sec: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            strategy: RetryStrategy::None,
            max_attempts: 3,
            base_delay_ms: 50,
            max_delay_ms: 1000,
            attempt_timeout_ms: None,
            budget_percent: 20,
            min_retries_per_sec: 10,
        }
    }
}

impl RetryConfig {
    /// This configuration with `changes` applied.
    pub fn merged(&self, changes: Option<&RetryOverride>) -> Self {
        let Some(c) = changes else { return self.clone() };
        Self {
            strategy: c.strategy.unwrap_or(self.strategy),
            max_attempts: c.max_attempts.unwrap_or(self.max_attempts),
            base_delay_ms: c.base_delay_ms.unwrap_or(self.base_delay_ms),
            max_delay_ms: c.max_delay_ms.unwrap_or(self.max_delay_ms),
            attempt_timeout_ms: c.attempt_timeout_ms.or(self.attempt_timeout_ms),
            budget_percent: self.budget_percent,
            min_retries_per_sec: self.min_retries_per_sec,
        }
    }
}

/// A list of strings, written as a list or as one comma-separated string (as environment
/// variables write it); nothing at all is an empty list.
fn list_or_comma_string<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct ListVisitor;

    impl<'de> serde::de::Visitor<'de> for ListVisitor {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of strings, or one comma-separated string")
        }

        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Vec<String>, E> {
            Ok(s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect())
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                out.push(item);
            }
            Ok(out)
        }
    }

    d.deserialize_any(ListVisitor)
}

impl RpcConfig {
    /// Loads a file, applies the process's `RPC__*` environment overrides, and validates.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml_with_env(&text, &path.display().to_string(), std::env::vars())
    }

    /// Parses YAML text without environment overrides.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        Self::from_yaml_with_env(text, "<string>", std::iter::empty())
    }

    /// Parses YAML text, applies the overrides among `vars`, and validates. `origin` names
    /// the text in errors.
    pub fn from_yaml_with_env(
        text: &str,
        origin: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut tree: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Yaml {
                origin: origin.to_owned(),
                // The parser adds a source snippet on further lines; the first names line and column.
                message: e.to_string().lines().next().unwrap_or_default().to_owned(),
            })?
        };
        if tree.is_null() {
            tree = Value::Object(Default::default());
        }
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .collect();
        let file = tree.clone();
        for (name, value) in &vars {
            apply_override(&mut tree, name, value)?;
        }
        match Self::from_tree(&tree, origin) {
            Err(e) if !vars.is_empty() => Err(Self::blame(file, &vars, origin, e)),
            other => other,
        }
    }

    /// Deserializes and validates a YAML tree; `origin` names it in errors.
    fn from_tree(tree: &Value, origin: &str) -> Result<Self, ConfigError> {
        let file: ConfigFile = serde_path_to_error::deserialize(tree).map_err(|e| {
            let field = e.path().to_string();
            ConfigError::Invalid {
                origin: origin.to_owned(),
                field: if field == "." { "(root)".to_owned() } else { field },
                message: e.into_inner().to_string(),
            }
        })?;
        file.rpc.validate(origin)?;
        Ok(file.rpc)
    }

    /// Finds whether `error` (of the file with `vars` applied) comes from the file or from a
    /// variable, and names that one as its origin: the file alone is checked, then the
    /// variables are applied one at a time until the error appears.
    fn blame(file: Value, vars: &[(String, String)], origin: &str, error: ConfigError) -> ConfigError {
        if Self::from_tree(&file, origin).is_err() {
            return error;
        }
        let mut tree = file;
        for (name, value) in vars {
            if apply_override(&mut tree, name, value).is_err() {
                break;
            }
            if let Err(e) = Self::from_tree(&tree, &format!("environment variable {name}")) {
                return e;
            }
        }
        error
    }

    /// The security sections hold together: pairs come in pairs, an allow-list has client
    /// certificates to check, tokens are not empty, and TLS to the registry is etcd's.
    fn check_security(&self) -> Result<(), (&'static str, String)> {
        let pair = |field: &'static str, cert: &Option<std::path::PathBuf>, key: &Option<std::path::PathBuf>| match cert
            .is_some()
            == key.is_some()
        {
            true => Ok(()),
            false => Err((field, "cert and key go together".to_owned())),
        };
        if let Some(auth) = &self.server.auth {
            if auth.tokens.is_empty() && auth.allow.is_empty() {
                return Err(("rpc.server.auth", "needs tokens, an allow list, or both".to_owned()));
            }
            if auth.tokens.iter().any(|t| t.expose().trim().is_empty()) {
                return Err(("rpc.server.auth.tokens", "a token is empty".to_owned()));
            }
            let mtls = self.server.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
            if !auth.allow.is_empty() && !mtls {
                return Err((
                    "rpc.server.auth.allow",
                    "needs rpc.server.tls.client_ca: identities come from client certificates".to_owned(),
                ));
            }
        }
        if let Some(tls) = &self.consumer.tls {
            pair("rpc.consumer.tls", &tls.cert, &tls.key)?;
            if tls.ca.is_none() {
                return Err((
                    "rpc.consumer.tls.ca",
                    "required: the CA that signs the providers' certificates".to_owned(),
                ));
            }
        }
        if let Some(token) = self.consumer.auth.as_ref().and_then(|a| a.token.as_ref()) {
            if token.expose().trim().is_empty() {
                return Err(("rpc.consumer.auth.token", "is empty".to_owned()));
            }
        }
        if let Some(tls) = &self.registry.tls {
            pair("rpc.registry.tls", &tls.cert, &tls.key)?;
            if self.registry.kind != RegistryKind::Etcd {
                return Err((
                    "rpc.registry.tls",
                    format!("only the etcd registry is reached over TLS, not {}", self.registry.kind),
                ));
            }
        }
        Ok(())
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| {
            Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                field: field.to_owned(),
                message,
            })
        };
        let r = &self.registry;
        if r.kind != RegistryKind::Memory && r.endpoints.is_empty() {
            return invalid(
                "rpc.registry.endpoints",
                format!("{} needs at least one endpoint", r.kind),
            );
        }
        for e in &r.endpoints {
            if !is_host_port(e) {
                return invalid("rpc.registry.endpoints", format!("\"{e}\" is not host:port"));
            }
        }
        if !r.root.starts_with('/') || (r.root.len() > 1 && r.root.ends_with('/')) {
            return invalid(
                "rpc.registry.root",
                format!("\"{}\" must start with / and not end with /", r.root),
            );
        }
        if r.ttl_secs < 1 {
            return invalid("rpc.registry.ttl_secs", "must be at least 1".to_owned());
        }
        if r.timeout_ms < 1 {
            return invalid("rpc.registry.timeout_ms", "must be at least 1".to_owned());
        }
        if r.reconcile_secs < 1 {
            return invalid("rpc.registry.reconcile_secs", "must be at least 1".to_owned());
        }
        if r.keepalive_interval_ms < 5000 {
            return invalid(
                "rpc.registry.keepalive_interval_ms",
                format!(
                    "{} is below 5000: etcd closes connections that ping more often than its --grpc-keepalive-min-time (5 s by default)",
                    r.keepalive_interval_ms
                ),
            );
        }
        if r.resync_secs < 1 {
            return invalid("rpc.registry.resync_secs", "must be at least 1".to_owned());
        }
        if r.username.is_some() != r.password.is_some() {
            return invalid("rpc.registry.username", "username and password go together".to_owned());
        }
        if let Err((field, message)) = self.check_security() {
            return invalid(field, message);
        }
        if let Some(listen) = self.metrics.listen.as_deref().filter(|l| !is_host_port(l)) {
            return invalid("rpc.metrics.listen", format!("\"{listen}\" is not host:port"));
        }
        let t = &self.telemetry;
        if let Some(endpoint) = t
            .otlp_endpoint
            .as_deref()
            .filter(|e| !(e.starts_with("http://") || e.starts_with("https://")))
        {
            return invalid(
                "rpc.telemetry.otlp_endpoint",
                format!("\"{endpoint}\" is not an http:// or https:// URL (an OTLP/gRPC endpoint such as http://127.0.0.1:4317)"),
            );
        }
        if !(0.0..=1.0).contains(&t.sampling_ratio) {
            return invalid(
                "rpc.telemetry.sampling_ratio",
                format!("{} is not between 0.0 and 1.0", t.sampling_ratio),
            );
        }
        let s = &self.server;
        let wildcard = matches!(s.host.as_str(), "0.0.0.0" | "::" | "[::]");
        if wildcard && s.advertise_host.is_none() {
            return invalid(
                "rpc.server.advertise_host",
                format!("required when rpc.server.host is the wildcard \"{}\"", s.host),
            );
        }
        for (field, host) in [
            ("rpc.server.host", Some(&s.host)),
            ("rpc.server.advertise_host", s.advertise_host.as_ref()),
        ] {
            if let Some(host) = host.filter(|h| !is_valid_host(h)) {
                return invalid(field, format!("\"{host}\" is neither an IP address nor a hostname"));
            }
        }
        let at_least_one = [
            ("rpc.server.max_concurrent_calls", s.max_concurrent_calls as u64),
            ("rpc.server.max_connections", s.max_connections as u64),
            ("rpc.server.max_metadata_entries", s.max_metadata_entries as u64),
            ("rpc.consumer.timeout_ms", self.consumer.timeout_ms),
            ("rpc.consumer.connect_timeout_ms", self.consumer.connect_timeout_ms),
            (
                "rpc.consumer.keepalive_interval_ms",
                self.consumer.keepalive_interval_ms,
            ),
            ("rpc.consumer.keepalive_timeout_ms", self.consumer.keepalive_timeout_ms),
            ("rpc.consumer.probe_timeout_ms", self.consumer.probe_timeout_ms),
            (
                "rpc.consumer.max_connections_per_provider",
                self.consumer.max_connections_per_provider as u64,
            ),
            (
                "rpc.consumer.max_metadata_entries",
                self.consumer.max_metadata_entries as u64,
            ),
            ("rpc.server.stream_window.messages", u64::from(s.stream_window.messages)),
            ("rpc.server.stream_window.bytes", u64::from(s.stream_window.bytes)),
            (
                "rpc.consumer.stream_window.messages",
                u64::from(self.consumer.stream_window.messages),
            ),
            (
                "rpc.consumer.stream_window.bytes",
                u64::from(self.consumer.stream_window.bytes),
            ),
            ("rpc.consumer.breaker.window_ms", self.consumer.breaker.window_ms),
        ];
        let shedding = &s.shedding;
        if !(shedding.tolerance.is_finite() && shedding.tolerance > 1.0) {
            return invalid(
                "rpc.server.shedding.tolerance",
                format!("{} is not a number above 1 (1.5 by default)", shedding.tolerance),
            );
        }
        if shedding.min_limit < 1 || shedding.max_limit < shedding.min_limit {
            return invalid(
                "rpc.server.shedding.min_limit",
                format!(
                    "{} must be at least 1 and at most max_limit ({})",
                    shedding.min_limit, shedding.max_limit
                ),
            );
        }
        for (field, level) in [
            ("rpc.consumer.compression.level", self.consumer.compression.level),
            ("rpc.server.compression.level", s.compression.level),
        ] {
            if !(1..=22).contains(&level) {
                return invalid(field, format!("{level} is not a zstd level from 1 to 22"));
            }
        }
        let k = self.consumer.breaker.k;
        if !(k.is_finite() && k >= 1.0) {
            return invalid(
                "rpc.consumer.breaker.k",
                format!("{k} is not a number of at least 1 (1.5 by default; lower refuses sooner)"),
            );
        }
        for (key, limits) in &s.limits {
            if let Some((field, problem)) = limits.invalid_field() {
                return invalid(&format!("rpc.server.limits.{key}{field}"), problem.to_owned());
            }
        }
        for (field, value) in at_least_one {
            if value < 1 {
                return invalid(field, "must be at least 1".to_owned());
            }
        }
        if s.max_buffered_request_bytes < s.max_frame_bytes {
            return invalid(
                "rpc.server.max_buffered_request_bytes",
                format!(
                    "{} is below rpc.server.max_frame_bytes ({}): a request of the largest size could never be read",
                    s.max_buffered_request_bytes, s.max_frame_bytes
                ),
            );
        }
        for (field, bytes) in [
            ("rpc.server.max_frame_bytes", s.max_frame_bytes),
            ("rpc.consumer.max_frame_bytes", self.consumer.max_frame_bytes),
        ] {
            if bytes < MIN_FRAME_BYTES {
                return invalid(
                    field,
                    format!("{bytes} is below {MIN_FRAME_BYTES}: every call would close its connection"),
                );
            }
        }
        let c = &self.consumer;
        if c.retry.max_attempts < 1 {
            return invalid("rpc.consumer.retry.max_attempts", "must be at least 1".to_owned());
        }
        if c.retry.max_delay_ms < c.retry.base_delay_ms {
            return invalid(
                "rpc.consumer.retry.max_delay_ms",
                format!(
                    "{} is below base_delay_ms ({}); the longest delay cannot be shorter than the first",
                    c.retry.max_delay_ms, c.retry.base_delay_ms
                ),
            );
        }
        if c.outlier.consecutive_failures < 1 {
            return invalid(
                "rpc.consumer.outlier.consecutive_failures",
                "must be at least 1".to_owned(),
            );
        }
        for (key, service) in &c.services {
            let field = format!("rpc.consumer.services.{key}");
            if key.is_empty() || key.contains('/') {
                return invalid(&field, format!("\"{key}\" is not a service name or name:version"));
            }
            let retries = std::iter::once((field.clone(), service.retry.as_ref(), service.timeout_ms)).chain(
                service
                    .methods
                    .iter()
                    .map(|(m, o)| (format!("{field}.methods.{m}"), o.retry.as_ref(), o.timeout_ms)),
            );
            for (path, retry, timeout) in retries {
                if retry.and_then(|r| r.max_attempts) == Some(0) {
                    return invalid(&format!("{path}.retry.max_attempts"), "must be at least 1".to_owned());
                }
                if timeout == Some(0) {
                    return invalid(&format!("{path}.timeout_ms"), "must be at least 1".to_owned());
                }
            }
        }
        Ok(())
    }
}

fn is_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

/// Applies one `RPC__A__B=value` variable to the YAML tree; other variables are ignored.
fn apply_override(tree: &mut Value, name: &str, raw: &str) -> Result<(), ConfigError> {
    let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
        return Ok(());
    };
    let mut path: Vec<String> = vec!["rpc".to_owned()];
    path.extend(rest.split("__").map(str::to_ascii_lowercase));
    if path.iter().any(String::is_empty) {
        return Ok(());
    }
    let value: Value = match serde_saphyr::from_str::<Value>(raw) {
        Ok(Value::Null) if !raw.trim().is_empty() && raw.trim() != "null" && raw.trim() != "~" => {
            Value::String(raw.to_owned())
        }
        Ok(v) => v,
        Err(_) => Value::String(raw.to_owned()),
    };
    let mut node = tree;
    for (i, segment) in path.iter().enumerate() {
        let Value::Object(map) = node else {
            return Err(ConfigError::Invalid {
                origin: format!("environment variable {name}"),
                field: path[..i].join("."),
                message: "is not a mapping, cannot set a field inside it".to_owned(),
            });
        };
        if i + 1 == path.len() {
            map.insert(segment.clone(), value);
            return Ok(());
        }
        node = map
            .entry(segment.clone())
            .or_insert_with(|| Value::Object(Default::default()));
        if node.is_null() {
            *node = Value::Object(Default::default());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
rpc:
  name: example-provider
  server:
    host: 127.0.0.1
    port: 9001
  serializer: postcard
  registry:
    type: zookeeper
    endpoints: ["127.0.0.1:2181", "127.0.0.1:2182"]
    root: /services
    ttl_secs: 7
    timeout_ms: 1500
  consumer:
    timeout_ms: 2500
    load_balancer: p2c
    retry:
      strategy: exponential_backoff
      max_attempts: 4
      base_delay_ms: 20
    tolerant: fail_over
    schema_check: strict
"#;

    fn err(text: &str) -> String {
        RpcConfig::from_yaml(text).unwrap_err().to_string()
    }

    #[test]
    fn reads_every_field_of_the_documented_schema() {
        let c = RpcConfig::from_yaml(FULL).unwrap();
        assert_eq!(c.name, "example-provider");
        assert_eq!(c.server.port, 9001);
        assert_eq!(c.serializer, SerializerKind::Postcard);
        assert_eq!(c.registry.kind, RegistryKind::Zookeeper);
        assert_eq!(c.registry.endpoints, vec!["127.0.0.1:2181", "127.0.0.1:2182"]);
        assert_eq!(c.registry.root, "/services");
        assert_eq!(c.registry.ttl_secs, 7);
        assert_eq!(c.registry.session_timeout(), Duration::from_secs(7));
        assert_eq!(c.consumer.timeout(), Duration::from_millis(2500));
        assert_eq!(c.consumer.load_balancer, LoadBalancerKind::P2c);
        assert_eq!(c.consumer.retry.strategy, RetryStrategy::ExponentialBackoff);
        assert_eq!(c.consumer.retry.max_attempts, 4);
        assert_eq!(c.consumer.tolerant, TolerantKind::FailOver);
        assert_eq!(c.consumer.schema_check, SchemaCheck::Strict);
        assert_eq!(
            err("rpc:\n  consumer:\n    schema_check: loose\n"),
            "<string>: rpc.consumer.schema_check: \"loose\" is not one of warn, strict, off"
        );
    }

    #[test]
    fn the_breaker_and_the_per_instance_limit_come_from_yaml() {
        let c = RpcConfig::from_yaml(
            "rpc:\n  consumer:\n    max_in_flight_per_instance: 64\n    breaker: { k: 2.0, window_ms: 5000, protection: 10 }\n",
        )
        .unwrap();
        assert_eq!(c.consumer.max_in_flight_per_instance, 64);
        assert!(!c.consumer.breaker.enabled, "off unless turned on");
        assert_eq!(c.consumer.breaker.k, 2.0);
        assert_eq!(c.consumer.breaker.window_ms, 5000);
        assert_eq!(c.consumer.breaker.protection, 10);
        assert_eq!(
            err("rpc:\n  consumer:\n    breaker: { k: 0.5 }\n"),
            "<string>: rpc.consumer.breaker.k: 0.5 is not a number of at least 1 (1.5 by default; lower refuses sooner)"
        );
        assert_eq!(
            err("rpc:\n  consumer:\n    breaker: { window_ms: 0 }\n"),
            "<string>: rpc.consumer.breaker.window_ms: must be at least 1"
        );
    }

    #[test]
    fn telemetry_comes_from_yaml_and_names_a_bad_field() {
        let off = RpcConfig::from_yaml("").unwrap().telemetry;
        assert_eq!((off.otlp_endpoint, off.sampling_ratio), (None, 1.0));
        let on = RpcConfig::from_yaml(
            "rpc:\n  telemetry:\n    otlp_endpoint: http://127.0.0.1:4317\n    sampling_ratio: 0.25\n    service_name: users\n",
        )
        .unwrap()
        .telemetry;
        assert_eq!(on.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4317"));
        assert_eq!(on.sampling_ratio, 0.25);
        assert_eq!(on.service_name.as_deref(), Some("users"));
        assert_eq!(
            err("rpc:\n  telemetry:\n    otlp_endpoint: 127.0.0.1:4317\n"),
            "<string>: rpc.telemetry.otlp_endpoint: \"127.0.0.1:4317\" is not an http:// or https:// URL (an OTLP/gRPC endpoint such as http://127.0.0.1:4317)"
        );
        assert_eq!(
            err("rpc:\n  telemetry:\n    sampling_ratio: 1.5\n"),
            "<string>: rpc.telemetry.sampling_ratio: 1.5 is not between 0.0 and 1.0"
        );
    }

    #[test]
    fn compression_comes_from_yaml_per_side_service_and_method() {
        let c = RpcConfig::from_yaml(
            "rpc:\n  server:\n    compression: { enabled: true, level: 3 }\n  consumer:\n    compression: { min_bytes: 2048 }\n    services:\n      \"Records:1.0\":\n        compression: { enabled: true }\n        methods:\n          size: { compression: { enabled: false } }\n",
        )
        .unwrap();
        assert!(c.server.compression.enabled);
        assert_eq!(c.server.compression.level, 3);
        assert!(!c.consumer.compression.enabled, "off unless turned on");
        let set = crate::fault::PolicySet::new(c.consumer);
        let echo = set.resolve("Records:1.0", "echo", false).compression.unwrap();
        assert_eq!((echo.min_bytes, echo.level), (2048, 1));
        assert_eq!(set.resolve("Records:1.0", "size", false).compression, None);
        assert_eq!(set.resolve("Other:1.0", "echo", false).compression, None);
        assert_eq!(
            err("rpc:\n  server:\n    compression: { level: 30 }\n"),
            "<string>: rpc.server.compression.level: 30 is not a zstd level from 1 to 22"
        );
    }

    #[test]
    fn the_metrics_endpoint_is_off_unless_an_address_is_given() {
        assert_eq!(RpcConfig::from_yaml("").unwrap().metrics.listen, None);
        let on = RpcConfig::from_yaml("rpc:\n  metrics:\n    listen: 127.0.0.1:9464\n").unwrap();
        assert_eq!(on.metrics.listen.as_deref(), Some("127.0.0.1:9464"));
        assert_eq!(
            err("rpc:\n  metrics:\n    listen: localhost\n"),
            "<string>: rpc.metrics.listen: \"localhost\" is not host:port"
        );
        let vars = [("RPC__METRICS__LISTEN".to_owned(), "0.0.0.0:9464".to_owned())];
        let from_env = RpcConfig::from_yaml_with_env("", "f.yaml", vars).unwrap();
        assert_eq!(from_env.metrics.listen.as_deref(), Some("0.0.0.0:9464"));
    }

    #[test]
    fn every_field_has_a_default() {
        for text in ["", "rpc: {}", "rpc:\n  registry: {}\n"] {
            let c = RpcConfig::from_yaml(text).unwrap();
            assert_eq!(c.registry.kind, RegistryKind::Etcd);
            assert_eq!(c.registry.root, "/rpc");
            assert_eq!(c.registry.ttl_secs, 10);
            assert_eq!(c.consumer.load_balancer, LoadBalancerKind::RoundRobin);
            assert_eq!(c.consumer.tolerant, TolerantKind::FailFast);
            assert_eq!(c.serializer, SerializerKind::MsgPack);
        }
    }

    #[test]
    fn unknown_choices_name_the_field_the_value_and_the_valid_ones() {
        assert_eq!(
            err("rpc:\n  registry:\n    type: etcdd\n"),
            "<string>: rpc.registry.type: \"etcdd\" is not one of etcd, zookeeper, memory"
        );
        assert_eq!(
            err("rpc:\n  consumer:\n    load_balancer: fastest\n"),
            "<string>: rpc.consumer.load_balancer: \"fastest\" is not one of round_robin, random, weighted_random, consistent_hash, p2c"
        );
        assert_eq!(
            err("rpc:\n  consumer:\n    retry:\n      strategy: forever\n"),
            "<string>: rpc.consumer.retry.strategy: \"forever\" is not one of none, fixed_interval, exponential_backoff"
        );
        assert_eq!(
            err("rpc:\n  consumer:\n    tolerant: fail_maybe\n"),
            "<string>: rpc.consumer.tolerant: \"fail_maybe\" is not one of fail_fast, fail_safe, fail_over, fail_back"
        );
        assert_eq!(
            err("rpc:\n  serializer: yaml\n"),
            "<string>: rpc.serializer: \"yaml\" is not one of msgpack, bincode, postcard, json"
        );
    }

    #[test]
    fn bad_values_are_reported_with_their_path() {
        let e = err("rpc:\n  server:\n    port: 70000\n");
        assert!(e.contains("rpc.server.port") && e.contains("70000"), "{e}");
        let e = err("rpc:\n  registry:\n    tll_secs: 5\n");
        assert!(e.contains("rpc.registry") && e.contains("tll_secs"), "{e}");
        let e = err("rpc:\n  registry:\n    endpoints: [\"nohost\"]\n");
        assert!(e.contains("rpc.registry.endpoints") && e.contains("nohost"), "{e}");
        let e = err("rpc:\n  server:\n    host: 0.0.0.0\n");
        assert!(e.contains("rpc.server.advertise_host"), "{e}");
        let e = err("rpc: [unclosed\n");
        assert!(e.contains("invalid YAML"), "{e}");
    }

    #[test]
    fn per_service_and_per_method_overrides_are_read() {
        let c = RpcConfig::from_yaml(
            r#"
rpc:
  consumer:
    timeout_ms: 1000
    retry: { strategy: fixed_interval, max_attempts: 2 }
    services:
      "UserService:1.0":
        timeout_ms: 500
        load_balancer: consistent_hash
        tolerant: fail_over
        retry: { max_attempts: 4 }
        methods:
          get_user: { timeout_ms: 200, tolerant: fail_safe }
      Audit:
        mock: true
"#,
        )
        .unwrap();
        let user = &c.consumer.services["UserService:1.0"];
        assert_eq!(user.timeout_ms, Some(500));
        assert_eq!(user.load_balancer, Some(LoadBalancerKind::ConsistentHash));
        assert_eq!(user.tolerant, Some(TolerantKind::FailOver));
        let merged = c.consumer.retry.merged(user.retry.as_ref());
        assert_eq!(
            (merged.strategy, merged.max_attempts),
            (RetryStrategy::FixedInterval, 4)
        );
        assert_eq!(user.methods["get_user"].timeout_ms, Some(200));
        assert_eq!(user.methods["get_user"].tolerant, Some(TolerantKind::FailSafe));
        assert_eq!(c.consumer.services["Audit"].mock, Some(true));

        let e = err("rpc:\n  consumer:\n    services:\n      S:\n        tolerant: fail_sometimes\n");
        assert_eq!(
            e,
            "<string>: rpc.consumer.services.S.tolerant: \"fail_sometimes\" is not one of fail_fast, fail_safe, fail_over, fail_back"
        );
        let e = err("rpc:\n  consumer:\n    services:\n      S:\n        methods:\n          m: { retry: { max_attempts: 0 } }\n");
        assert!(
            e.contains("rpc.consumer.services.S.methods.m.retry.max_attempts"),
            "{e}"
        );
    }

    #[test]
    fn environment_overrides_file_values() {
        let vars = [
            ("RPC__REGISTRY__TYPE", "memory"),
            ("RPC__SERVER__PORT", "9100"),
            ("RPC__REGISTRY__ENDPOINTS", "10.0.0.1:2379, 10.0.0.2:2379"),
            ("RPC__CONSUMER__RETRY__MAX_ATTEMPTS", "5"),
            ("RPC__NAME", "from-env"),
            ("UNRELATED", "x"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let c = RpcConfig::from_yaml_with_env(FULL, "f.yaml", vars).unwrap();
        assert_eq!(c.registry.kind, RegistryKind::Memory);
        assert_eq!(c.server.port, 9100);
        assert_eq!(c.registry.endpoints, vec!["10.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!(c.consumer.retry.max_attempts, 5);
        assert_eq!(c.name, "from-env");

        let bad = [("RPC__REGISTRY__TYPE".to_owned(), "consul".to_owned())];
        let e = RpcConfig::from_yaml_with_env(FULL, "f.yaml", bad)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "environment variable RPC__REGISTRY__TYPE: rpc.registry.type: \"consul\" is not one of etcd, zookeeper, memory"
        );
    }

    #[test]
    fn values_that_cannot_work_are_refused_naming_the_field() {
        let cases = [
            (
                "rpc:\n  server:\n    max_frame_bytes: 10\n",
                "rpc.server.max_frame_bytes",
            ),
            (
                "rpc:\n  consumer:\n    max_frame_bytes: 0\n",
                "rpc.consumer.max_frame_bytes",
            ),
            (
                "rpc:\n  server:\n    advertise_host: \"bad host!\"\n",
                "rpc.server.advertise_host",
            ),
            ("rpc:\n  server:\n    host: \"no such thing\"\n", "rpc.server.host"),
            (
                "rpc:\n  consumer:\n    retry: { base_delay_ms: 500, max_delay_ms: 100 }\n",
                "rpc.consumer.retry.max_delay_ms",
            ),
            (
                "rpc:\n  registry:\n    keepalive_interval_ms: 2000\n",
                "rpc.registry.keepalive_interval_ms",
            ),
            (
                "rpc:\n  server:\n    max_buffered_request_bytes: 1024\n",
                "rpc.server.max_buffered_request_bytes",
            ),
            (
                "rpc:\n  server:\n    max_connections: 0\n",
                "rpc.server.max_connections",
            ),
        ];
        for (text, field) in cases {
            let e = err(text);
            assert!(e.starts_with(&format!("<string>: {field}: ")), "{text}: {e}");
        }
    }

    #[test]
    fn an_error_in_an_environment_variable_names_the_variable() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let e = RpcConfig::from_yaml_with_env("rpc: {}\n", "ok.yaml", env(&[("RPC__REGISTRY__TTL_SEC", "5")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("environment variable RPC__REGISTRY__TTL_SEC: rpc.registry.ttl_sec: unknown field `ttl_sec`"),
            "{e}"
        );
        let e = RpcConfig::from_yaml_with_env(
            "rpc: {}\n",
            "ok.yaml",
            env(&[("RPC__NAME", "x"), ("RPC__REGISTRY__ENDPOINTS", "")]),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "environment variable RPC__REGISTRY__ENDPOINTS: rpc.registry.endpoints: etcd needs at least one endpoint"
        );
        // An error in the file stays the file's, whatever the variables.
        let e = RpcConfig::from_yaml_with_env("rpc:\n  nmae: x\n", "bad.yaml", env(&[("RPC__NAME", "y")]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bad.yaml: "), "{e}");
    }

    #[test]
    fn security_sections_parse_take_secrets_from_the_environment_and_never_print_them() {
        let yaml = r#"
rpc:
  server:
    tls: { cert: s.pem, key: s.key, client_ca: ca.pem }
    auth:
      tokens: [t1]
      allow: { "Users:1.0": [billing, "spiffe://example.org/ops"] }
  consumer:
    tls: { ca: ca.pem, cert: c.pem, key: c.key, server_name: users.internal }
  registry:
    type: etcd
    endpoints: ["https://etcd:2379"]
    username: root
    tls: { ca: ca.pem }
"#;
        let env = [
            ("RPC__SERVER__AUTH__TOKENS", "new-token, old-token"),
            ("RPC__CONSUMER__AUTH__TOKEN", "from-env"),
            ("RPC__REGISTRY__PASSWORD", "etcd-secret"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let c = RpcConfig::from_yaml_with_env(yaml, "secure.yaml", env).unwrap();
        let tokens: Vec<&str> = c
            .server
            .auth
            .as_ref()
            .unwrap()
            .tokens
            .iter()
            .map(Secret::expose)
            .collect();
        assert_eq!(tokens, ["new-token", "old-token"], "the environment replaces the list");
        assert_eq!(
            c.consumer.auth.as_ref().unwrap().token.as_ref().unwrap().expose(),
            "from-env"
        );
        assert_eq!(c.registry.password.as_ref().unwrap().expose(), "etcd-secret");
        assert_eq!(c.server.tls.as_ref().unwrap().handshake_timeout_ms, 10_000);
        assert_eq!(c.server.auth.as_ref().unwrap().allow["Users:1.0"].len(), 2);
        let printed = format!("{c:?}");
        for secret in ["new-token", "old-token", "from-env", "etcd-secret"] {
            assert!(!printed.contains(secret), "{secret} in the Debug output");
        }
    }

    #[test]
    fn inconsistent_security_settings_name_the_field() {
        for (yaml, field, problem) in [
            ("rpc:\n  server:\n    auth: {}\n", "rpc.server.auth", "needs tokens"),
            (
                "rpc:\n  server:\n    auth: { tokens: [\"\"] }\n",
                "rpc.server.auth.tokens",
                "empty",
            ),
            (
                "rpc:\n  server:\n    tls: { cert: a, key: b }\n    auth: { allow: { \"S:1\": [x] } }\n",
                "rpc.server.auth.allow",
                "client_ca",
            ),
            (
                "rpc:\n  consumer:\n    tls: { cert: c.pem }\n",
                "rpc.consumer.tls",
                "go together",
            ),
            (
                "rpc:\n  consumer:\n    tls: { server_name: x }\n",
                "rpc.consumer.tls.ca",
                "required",
            ),
            (
                "rpc:\n  consumer:\n    auth: { token: \" \" }\n",
                "rpc.consumer.auth.token",
                "empty",
            ),
            (
                "rpc:\n  registry: { type: zookeeper, tls: { ca: ca.pem } }\n",
                "rpc.registry.tls",
                "only the etcd registry",
            ),
            (
                "rpc:\n  server:\n    tls: { cert: a }\n",
                "rpc.server.tls",
                "missing field `key`",
            ),
        ] {
            let e = err(yaml);
            assert!(e.contains(field) && e.contains(problem), "{yaml}: {e}");
        }
    }
}
