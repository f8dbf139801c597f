//! A server that is serving ([`RunningServer`]): its address, its registrations in a registry
//! (each service's schema published, its rules followed live), and its graceful shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tracing::{debug, info, warn};

use crate::config::ServerConfig;
use crate::registry::{HttpEndpoint, Registry, RegistryError, RegistryErrorKind, ServiceInstance};
use crate::rules::ServiceRules;
use crate::schema::ServiceSchema;

use super::shared::Shared;

/// After the drain timeout, how long streams get to queue their shutting-down end.
const STREAM_END_GRACE: Duration = Duration::from_millis(200);

/// Outcome of a graceful shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Whether every call in flight finished within the drain timeout.
    pub drained: bool,
}

/// A server that is serving. Shut it down with [`RunningServer::shutdown`].
pub struct RunningServer {
    pub(super) local_addr: Option<SocketAddr>,
    pub(super) shared: Arc<Shared>,
    pub(super) stop_accepting: CancellationToken,
    pub(super) connections: TaskTracker,
    pub(super) accept: Option<tokio::task::JoinHandle<()>>,
    pub(super) drain_timeout: Duration,
    pub(super) deregister_grace: Duration,
    pub(super) deregister_quiet: Duration,
    pub(super) registrations: Vec<(Arc<dyn Registry>, ServiceInstance)>,
    /// One task per registered service, following its rules (limits, shedding).
    pub(super) rule_watchers: Vec<AbortOnDropHandle<()>>,
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
