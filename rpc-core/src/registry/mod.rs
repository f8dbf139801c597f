//! Service registries and discovery.
//!
//! * [`Registry`] is the contract every backend (etcd, ZooKeeper, memory) implements. It is
//!   object-safe so configuration can pick the backend at run time.
//! * [`ServiceInstance`] is what a provider registers, stored as JSON at
//!   `{root}/{name}:{version}/{host}:{port}`.
//! * [`DiscoveryCache`] sits in front of any registry on the consumer side and keeps one exact,
//!   watch-driven instance list per service key, and the text of its rules.
//! * A service's rules (routing: disabled instances, weights, timeout, balancer, tags) live at
//!   [`rules_path`] as JSON; backends store and watch the text, consumers validate it.
//! * A service's schemas (see [`crate::schema`]) live at [`schema_path`], one key per distinct
//!   schema named by its fingerprint, on no lease: a schema is named by its content, so every
//!   instance that has it shares the key and it may outlive them. Each instance names its
//!   schema's fingerprint in its JSON; consumers fetch each fingerprint once.
//!
//! # Watch contract
//!
//! [`Registry::watch`] returns a [`WatchStream`] whose first event is a
//! [`WatchEvent::Snapshot`] of the service's instances, taken so that no change after it is
//! missed, followed by [`WatchEvent::Upsert`] and [`WatchEvent::Remove`] for each change. A
//! backend may send another snapshot at any time (after re-listing). When the backend cannot
//! keep the stream exact (connection lost, revision compacted) it ends the stream; the
//! discovery cache then keeps serving what it knew and watches again with backoff.

mod cache;
pub mod cache_file;
mod instance;
mod schemas;

pub use crate::host::is_valid_host;
pub use cache::{DiscoveryCache, DiscoveryOptions};
pub use cache_file::{CacheFile, CacheFileError, CachedInstances};
pub use instance::{
    now_ms, service_path, HttpEndpoint, InvalidInstance, ServiceInstance, DEFAULT_WEIGHT, MAX_INSTANCE_JSON,
    WARMUP_SECS, ZONE,
};
pub use schemas::{read_published_schema, PublishedSchemaError, SchemaMap};

/// Largest rules text accepted from a registry.
pub const MAX_RULES_TEXT: usize = 64 * 1024;

/// Largest schema text accepted from a registry.
pub const MAX_SCHEMA_TEXT: usize = 1024 * 1024;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::future::BoxFuture;
use crate::schema::ServiceSchema;
use tokio_util::task::AbortOnDropHandle;
use tracing::warn;

/// The backend's own error behind a registry failure, shared so that errors stay cheap to
/// clone (a discovery cache keeps the last one per service).
#[derive(Clone)]
pub struct BackendError(Arc<dyn std::error::Error + Send + Sync>);

impl BackendError {
    /// Wraps a backend's error.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(error))
    }

    /// An error that is only a message (a backend without a typed error, a test double).
    pub fn message(message: impl Into<String>) -> Self {
        Self(Arc::new(MessageError(message.into())))
    }

    /// The backend's error as its own type, for decisions that depend on it (a gRPC status
    /// code, a ZooKeeper error kind); never decide by the message text.
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.0.downcast_ref::<T>()
    }
}

impl fmt::Debug for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

#[derive(Debug)]
struct MessageError(String);

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MessageError {}

/// A failure of a registry operation.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry could not be reached or answered with an error.
    #[error("{backend} registry at {endpoints} unavailable: {operation}: {source}")]
    Unavailable {
        /// Which backend.
        backend: &'static str,
        /// The servers it was asked (comma-separated).
        endpoints: String,
        /// The operation.
        operation: &'static str,
        /// The backend's error.
        #[source]
        source: BackendError,
    },
    /// The registry refused this process's credentials (or has none for it).
    #[error("{backend} registry at {endpoints} refused the credentials: {operation}: {source}")]
    Unauthenticated {
        /// Which backend.
        backend: &'static str,
        /// The servers it was asked (comma-separated).
        endpoints: String,
        /// The operation.
        operation: &'static str,
        /// The backend's error.
        #[source]
        source: BackendError,
    },
    /// The operation did not finish in time.
    #[error("{backend} registry at {endpoints}: {operation} timed out after {timeout_ms} ms")]
    Timeout {
        /// Which backend.
        backend: &'static str,
        /// The servers it was asked (comma-separated).
        endpoints: String,
        /// The operation.
        operation: &'static str,
        /// The limit.
        timeout_ms: u64,
    },
    /// The instance cannot be registered as given.
    #[error("invalid instance: {0}")]
    InvalidInstance(String),
    /// The registry configuration cannot be used (e.g. it names a backend not compiled in).
    #[error("{0}")]
    InvalidConfig(String),
    /// The registry was closed.
    #[error("registry closed")]
    Closed,
}

/// The variant of a [`RegistryError`], for decisions and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RegistryErrorKind {
    /// [`RegistryError::Unavailable`]
    Unavailable,
    /// [`RegistryError::Unauthenticated`]
    Unauthenticated,
    /// [`RegistryError::Timeout`]
    Timeout,
    /// [`RegistryError::InvalidInstance`]
    InvalidInstance,
    /// [`RegistryError::InvalidConfig`]
    InvalidConfig,
    /// [`RegistryError::Closed`]
    Closed,
}

impl RegistryError {
    /// The error for a backend `operation` that failed with `error`: [`Self::Unauthenticated`]
    /// when the backend refused the credentials (the backend tells, from its error's type or
    /// code), [`Self::Unavailable`] otherwise.
    pub fn from_backend(
        backend: &'static str,
        endpoints: &[String],
        operation: &'static str,
        error: impl std::error::Error + Send + Sync + 'static,
        refused_credentials: bool,
    ) -> Self {
        let (endpoints, source) = (endpoints.join(","), BackendError::new(error));
        if refused_credentials {
            Self::Unauthenticated {
                backend,
                endpoints,
                operation,
                source,
            }
        } else {
            Self::Unavailable {
                backend,
                endpoints,
                operation,
                source,
            }
        }
    }

    /// The error for a backend `operation` that did not finish within `limit`.
    pub fn timed_out(backend: &'static str, endpoints: &[String], operation: &'static str, limit: Duration) -> Self {
        Self::Timeout {
            backend,
            endpoints: endpoints.join(","),
            operation,
            timeout_ms: limit.as_millis() as u64,
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> RegistryErrorKind {
        match self {
            Self::Unavailable { .. } => RegistryErrorKind::Unavailable,
            Self::Unauthenticated { .. } => RegistryErrorKind::Unauthenticated,
            Self::Timeout { .. } => RegistryErrorKind::Timeout,
            Self::InvalidInstance(_) => RegistryErrorKind::InvalidInstance,
            Self::InvalidConfig(_) => RegistryErrorKind::InvalidConfig,
            Self::Closed => RegistryErrorKind::Closed,
        }
    }

    /// The backend's own error, when the failure came from the backend.
    pub fn backend_error(&self) -> Option<&BackendError> {
        match self {
            Self::Unavailable { source, .. } | Self::Unauthenticated { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A change to the instances of one service key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchEvent {
    /// The complete current list; replaces whatever was known.
    Snapshot(Vec<ServiceInstance>),
    /// An instance appeared or changed.
    Upsert(ServiceInstance),
    /// The instance at this address (`host:port`) left.
    Remove {
        /// The instance's address.
        address: String,
    },
}

/// The events of one watch. Dropping it stops the watch.
#[derive(Debug)]
pub struct WatchStream {
    rx: mpsc::Receiver<WatchEvent>,
    _task: Option<AbortOnDropHandle<()>>,
}

impl WatchStream {
    /// A stream fed by `rx`; `task`, the backend's watcher, is aborted when the stream drops.
    pub fn new(rx: mpsc::Receiver<WatchEvent>, task: Option<JoinHandle<()>>) -> Self {
        Self {
            rx,
            _task: task.map(AbortOnDropHandle::new),
        }
    }

    /// The next event; `None` once the watch has ended and must be re-established.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.rx.recv().await
    }
}

/// A watch is a `futures::Stream` of its events (combinators, `select`, `StreamExt::next`).
impl futures_util::Stream for WatchStream {
    type Item = WatchEvent;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<WatchEvent>> {
        self.rx.poll_recv(cx)
    }
}

/// The changes of one service's rules key: its current text first (`None`: no rules), then
/// every change. Dropping it stops the watch; it ends when the backend cannot keep it exact.
#[derive(Debug)]
pub struct RulesStream {
    rx: mpsc::Receiver<Option<String>>,
    _task: Option<AbortOnDropHandle<()>>,
}

impl RulesStream {
    /// A stream fed by `rx`; `task`, the backend's watcher, is aborted when the stream drops.
    pub fn new(rx: mpsc::Receiver<Option<String>>, task: Option<JoinHandle<()>>) -> Self {
        Self {
            rx,
            _task: task.map(AbortOnDropHandle::new),
        }
    }

    /// A stream that says "no rules" once and stays open (a registry that stores none).
    pub fn none() -> Self {
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.try_send(None);
        // The sender lives in a task that never ends, so the stream stays open.
        let task = tokio::spawn(async move {
            tx.closed().await;
        });
        Self::new(rx, Some(task))
    }

    /// The next value; `None` once the watch has ended and must be re-established.
    pub async fn next(&mut self) -> Option<Option<String>> {
        self.rx.recv().await
    }
}

/// A rules watch is a `futures::Stream` of the rules' texts.
/// Hands every change of `service_key`'s rules text to `on_text` (the current text first;
/// `None` while there is none), for as long as it is polled: a watch that ends or fails is
/// started again after `backoff`'s next delay (reset by a watch that delivered), and the last
/// text stays in force meanwhile.
pub(crate) async fn follow_rules(
    registry: &dyn Registry,
    service_key: &str,
    mut backoff: crate::backoff::Backoff,
    mut on_text: impl FnMut(Option<String>),
) {
    loop {
        match registry.watch_rules(service_key).await {
            Ok(mut stream) => {
                let mut first = true;
                while let Some(text) = stream.next().await {
                    if std::mem::take(&mut first) {
                        backoff.reset();
                    }
                    on_text(text);
                }
                tracing::debug!(
                    service = service_key,
                    "rules watch ended; keeping the last-known rules and watching again"
                );
            }
            Err(e) => {
                tracing::debug!(service = service_key, error = %e, "rules watch failed; keeping the last-known rules")
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

impl futures_util::Stream for RulesStream {
    type Item = Option<String>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Option<String>>> {
        self.rx.poll_recv(cx)
    }
}

/// The path of a service's rules: `{root}/config/{name}:{version}`. A service directory always
/// contains `:`, so `config` never collides with a service.
pub fn rules_path(root: &str, service_key: &str) -> String {
    format!("{}/config/{service_key}", root.trim_end_matches('/'))
}

/// The path of a published schema: `{root}/schema/{name}:{version}/{fingerprint}`. The
/// schema directory has no `:`, so it never collides with a service.
pub fn schema_path(root: &str, service_key: &str, fingerprint: &str) -> String {
    format!("{}/schema/{service_key}/{fingerprint}", root.trim_end_matches('/'))
}

/// Whether `text` is a schema fingerprint as [`ServiceSchema::fingerprint`] writes it (16
/// lower-case hex digits); a fingerprint read from a registry is checked before it becomes
/// part of a path.
///
/// [`ServiceSchema::fingerprint`]: crate::schema::ServiceSchema::fingerprint
pub fn is_fingerprint(text: &str) -> bool {
    text.len() == 16 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether a node directly under the root names a service: a service key, `name:version`,
/// always has a `:`, which the rules directory (`config`) has not.
pub fn is_service_key(segment: &str) -> bool {
    segment.contains(':')
}

/// The service key a registry path names: its first segment under `root`, when that is a
/// service key.
pub fn service_key_in<'p>(root: &str, path: &'p str) -> Option<&'p str> {
    let below = path.strip_prefix(root.trim_end_matches('/'))?.strip_prefix('/')?;
    below.split('/').next().filter(|segment| is_service_key(segment))
}

/// A service registry backend.
pub trait Registry: Send + Sync + 'static {
    /// The backend's name, for logs and errors (`etcd`, `zookeeper`, `memory`).
    fn backend(&self) -> &'static str;

    /// Registers (or re-registers, replacing) an instance; it stays until deregistered or until
    /// this process dies (lease TTL, session timeout).
    fn register<'a>(&'a self, instance: &'a ServiceInstance) -> BoxFuture<'a, Result<(), RegistryError>>;

    /// Removes an instance registered by this process.
    fn deregister<'a>(&'a self, instance: &'a ServiceInstance) -> BoxFuture<'a, Result<(), RegistryError>>;

    /// The current instances of a service key (`name:version`). Values that are not valid
    /// instances are skipped with a warning.
    fn discover<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<Vec<ServiceInstance>, RegistryError>>;

    /// The keys (`name:version`) of the services under the root, sorted: those with
    /// instances, and possibly some whose instances all left (ZooKeeper keeps a service's
    /// node). Rules are not services.
    fn services(&self) -> BoxFuture<'_, Result<Vec<String>, RegistryError>>;

    /// Watches a service key; see the module docs for the event contract.
    fn watch<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<WatchStream, RegistryError>>;

    /// The text of `service_key`'s rules (see the client's routing rules), if any.
    fn get_rules<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<Option<String>, RegistryError>> {
        let _ = service_key;
        Box::pin(async { Ok(None) })
    }

    /// Stores `service_key`'s rules (the text is stored as given; consumers validate it).
    fn put_rules<'a>(&'a self, service_key: &'a str, rules: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        let _ = (service_key, rules);
        Box::pin(async {
            Err(RegistryError::InvalidConfig(format!(
                "the {} registry stores no rules",
                self.backend()
            )))
        })
    }

    /// Deletes `service_key`'s rules; deleting none is fine.
    fn delete_rules<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        let _ = service_key;
        Box::pin(async { Ok(()) })
    }

    /// Watches `service_key`'s rules: the current text first, then every change.
    fn watch_rules<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<RulesStream, RegistryError>> {
        let _ = service_key;
        Box::pin(async { Ok(RulesStream::none()) })
    }

    /// Stores the JSON text of `service_key`'s schema whose fingerprint is `fingerprint` at
    /// [`schema_path`], on no lease (replacing the same text is harmless: the key is named by
    /// its content). See [`publish_schema`], which writes only when the key is absent.
    fn put_schema<'a>(
        &'a self,
        service_key: &'a str,
        fingerprint: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        let _ = (service_key, fingerprint, text);
        Box::pin(async {
            Err(RegistryError::InvalidConfig(format!(
                "the {} registry stores no schemas",
                self.backend()
            )))
        })
    }

    /// The JSON text of `service_key`'s schema `fingerprint`, if published.
    fn get_schema<'a>(
        &'a self,
        service_key: &'a str,
        fingerprint: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, RegistryError>> {
        let _ = (service_key, fingerprint);
        Box::pin(async { Ok(None) })
    }

    /// Where `service_key`'s rules live (the key or node path), for messages.
    fn rules_location(&self, service_key: &str) -> String {
        format!("config/{service_key}")
    }

    /// The servers this registry talks to, comma-separated, for messages.
    fn endpoints(&self) -> String {
        String::new()
    }

    /// Deregisters everything this process registered and releases the backend's resources
    /// (lease, session, background tasks).
    fn close(&self) -> BoxFuture<'_, Result<(), RegistryError>>;
}

/// Publishes `schema` as `service_key`'s unless its key already holds it (the first provider
/// with a schema writes it, the others only read it); a key holding anything else (a forged or
/// corrupt text, see [`read_published_schema`]) is written again, with a warning. Returns the
/// fingerprint, which the provider's instances then name.
pub async fn publish_schema(
    registry: &dyn Registry,
    service_key: &str,
    schema: &ServiceSchema,
) -> Result<String, RegistryError> {
    let fingerprint = schema.fingerprint();
    let stored = registry.get_schema(service_key, &fingerprint).await?;
    let intact = match stored.as_deref().map(|text| read_published_schema(&fingerprint, text)) {
        None => false,
        Some(Ok(_)) => true,
        Some(Err(e)) => {
            warn!(service = service_key, error = %e, "the schema under this provider's fingerprint is not its schema; writing it again");
            false
        }
    };
    if !intact {
        let text = serde_json::to_string(schema).map_err(|e| RegistryError::InvalidInstance(e.to_string()))?;
        registry.put_schema(service_key, &fingerprint, &text).await?;
    }
    Ok(fingerprint)
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn watches_are_streams_that_end_with_their_backend() {
        let (tx, rx) = mpsc::channel(4);
        let watch = WatchStream::new(rx, None);
        tx.send(WatchEvent::Snapshot(vec![ServiceInstance::new("S", "1", "h", 1)]))
            .await
            .unwrap();
        tx.send(WatchEvent::Remove { address: "h:1".into() }).await.unwrap();
        drop(tx);
        let events: Vec<WatchEvent> = watch.collect().await;
        assert!(
            matches!(events.as_slice(), [WatchEvent::Snapshot(list), WatchEvent::Remove { address }]
            if list.len() == 1 && address == "h:1")
        );

        let mut rules = RulesStream::none();
        assert_eq!(StreamExt::next(&mut rules).await, Some(None));
    }
}
