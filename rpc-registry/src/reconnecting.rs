//! A registry that is not reachable yet: it connects on first use and again on every later use
//! until a connection succeeds, then behaves as the backend it connected to.
//!
//! A consumer that starts from its cache file while the registry is down runs on one: the
//! discovery cache's watchers keep retrying (with backoff), each retry tries to connect, and
//! the first watch that succeeds replaces the cached instances with live ones.

use std::sync::Arc;

use tokio::sync::OnceCell;
use tracing::info;
use waypost_core::config::RegistryConfig;
use waypost_core::registry::{Registry, RegistryError, RulesStream, ServiceInstance, WatchStream};
use waypost_core::BoxFuture;

/// See the module docs.
pub struct ReconnectingRegistry {
    config: RegistryConfig,
    backend: OnceCell<Arc<dyn Registry>>,
}

impl ReconnectingRegistry {
    /// A registry that connects as `config` says when first used.
    pub fn new(config: RegistryConfig) -> Self {
        Self {
            config,
            backend: OnceCell::new(),
        }
    }

    /// Whether it has connected.
    pub fn is_connected(&self) -> bool {
        self.backend.initialized()
    }

    /// The connected backend, connecting now if it is not yet (concurrent callers share one
    /// attempt).
    async fn backend(&self) -> Result<&Arc<dyn Registry>, RegistryError> {
        self.backend
            .get_or_try_init(|| async {
                let registry = crate::connect(&self.config).await?;
                info!(
                    registry = %self.config.kind,
                    endpoints = %self.config.endpoints.join(","),
                    "the registry answers again; live instances replace the cached ones"
                );
                Ok(registry)
            })
            .await
    }
}

impl Registry for ReconnectingRegistry {
    fn backend(&self) -> &'static str {
        self.config.kind.name()
    }

    fn endpoints(&self) -> String {
        self.config.endpoints.join(",")
    }

    fn register<'a>(&'a self, instance: &'a ServiceInstance) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move { self.backend().await?.register(instance).await })
    }

    fn deregister<'a>(&'a self, instance: &'a ServiceInstance) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move { self.backend().await?.deregister(instance).await })
    }

    fn discover<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<Vec<ServiceInstance>, RegistryError>> {
        Box::pin(async move { self.backend().await?.discover(service_key).await })
    }

    fn services(&self) -> BoxFuture<'_, Result<Vec<String>, RegistryError>> {
        Box::pin(async move { self.backend().await?.services().await })
    }

    fn watch<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<WatchStream, RegistryError>> {
        Box::pin(async move { self.backend().await?.watch(service_key).await })
    }

    fn get_rules<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<Option<String>, RegistryError>> {
        Box::pin(async move { self.backend().await?.get_rules(service_key).await })
    }

    fn put_rules<'a>(&'a self, service_key: &'a str, rules: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move { self.backend().await?.put_rules(service_key, rules).await })
    }

    fn delete_rules<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move { self.backend().await?.delete_rules(service_key).await })
    }

    fn watch_rules<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<RulesStream, RegistryError>> {
        Box::pin(async move { self.backend().await?.watch_rules(service_key).await })
    }

    fn put_schema<'a>(
        &'a self,
        service_key: &'a str,
        fingerprint: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move { self.backend().await?.put_schema(service_key, fingerprint, text).await })
    }

    fn get_schema<'a>(
        &'a self,
        service_key: &'a str,
        fingerprint: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, RegistryError>> {
        Box::pin(async move { self.backend().await?.get_schema(service_key, fingerprint).await })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            match self.backend.get() {
                Some(backend) => backend.close().await,
                None => Ok(()),
            }
        })
    }
}
