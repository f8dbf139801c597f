//! [`Consumer`]: the client side built from configuration, and the [`ConsumerBuilder`] that
//! adds what configuration cannot express (tower layers, interceptors, balancers of the
//! user's own, connection options).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::channel::StreamSettings;
use super::route::{BalancerChoice, BalancerFactory};
use super::ClientLayer;
use super::{Channel, ClientOptions, ClusterInvoker, ClusterOptions, ConnectionPool, InstanceSource};
use crate::balance::LoadBalancer;
use crate::config::RpcConfig;
use crate::fault::{BudgetOptions, HealthOptions, InstanceHealth, PolicySet, RetryBudget};
use crate::interceptor::{Interceptor, Interceptors};
use crate::registry::{CacheFile, DiscoveryCache, DiscoveryOptions, Registry};
use crate::schedule::ScheduleError;

/// A consumer could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// The discovery cache's resync job could not be scheduled.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
}

/// Everything a process needs to call services found in a registry: the discovery cache,
/// the connection pool, instance health and a [`Channel`] that the generated clients take.
pub struct Consumer {
    registry: Arc<dyn Registry>,
    cache: Arc<DiscoveryCache>,
    pool: Arc<ConnectionPool>,
    health: Arc<InstanceHealth>,
    invoker: Arc<ClusterInvoker>,
    channel: Channel,
    _attached: Vec<Attachment>,
}

/// A resource a consumer keeps alive (see [`ConsumerBuilder::attach`]).
type Attachment = Box<dyn std::any::Any + Send + Sync>;

/// Builds a [`Consumer`]: the configuration, plus tower layers, interceptors, balancers and
/// connection options.
///
/// ```no_run
/// # use waypost_core::client::Consumer;
/// # use waypost_core::config::RpcConfig;
/// # async fn f(registry: std::sync::Arc<dyn waypost_core::registry::Registry>, config: RpcConfig) -> Result<(), Box<dyn std::error::Error>> {
/// struct Audit;
/// impl waypost_core::Interceptor for Audit {}
///
/// let consumer = Consumer::builder(&config)
///     .interceptor(Audit)
///     .layer(tower::timeout::TimeoutLayer::new(std::time::Duration::from_millis(500)))
///     .load_balancer_for("UserService:1.0", || std::sync::Arc::new(waypost_core::balance::Random))
///     .build(registry)
///     .await?;
/// # Ok(()) }
/// ```
pub struct ConsumerBuilder {
    config: RpcConfig,
    interceptors: Vec<Arc<dyn Interceptor>>,
    /// The tower layers, applied to the channel when it is built.
    layers: Vec<Box<dyn FnOnce(Channel) -> Channel + Send>>,
    balancers: BalancerChoice,
    options: ClientOptions,
    attached: Vec<Attachment>,
}

impl ConsumerBuilder {
    /// Adds an interceptor that sees every call of the consumer's clients; the first added is
    /// the outermost.
    pub fn interceptor<I: Interceptor>(mut self, interceptor: I) -> Self {
        self.interceptors.push(Arc::new(interceptor));
        self
    }

    /// Adds a `tower::Layer` that wraps every call of the consumer's clients (see
    /// [`Channel::layer`]); the first added is the outermost.
    pub fn layer(mut self, layer: impl ClientLayer) -> Self {
        self.layers.push(Box::new(move |channel: Channel| channel.layer(layer)));
        self
    }

    /// Keeps `resource` alive as long as the consumer: something started for it that must
    /// run while it does (the metrics endpoint a bootstrap started).
    pub fn attach<T: Send + Sync + 'static>(mut self, resource: T) -> Self {
        self.attached.push(Box::new(resource));
        self
    }

    /// Calls providers over TLS with `tls` (whatever the connection options say).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::ClientTls) -> Self {
        self.options.tls = Some(tls);
        self
    }

    /// Picks instances of every service with balancers made by `factory` (one per service),
    /// instead of the configured `load_balancer`.
    pub fn load_balancer<F>(mut self, factory: F) -> Self
    where
        F: Fn() -> Arc<dyn LoadBalancer> + Send + Sync + 'static,
    {
        self.balancers.all = Some(Arc::new(factory) as BalancerFactory);
        self
    }

    /// Picks instances of `service` (`name:version`) with a balancer made by `factory`.
    pub fn load_balancer_for<F>(mut self, service: impl Into<String>, factory: F) -> Self
    where
        F: Fn() -> Arc<dyn LoadBalancer> + Send + Sync + 'static,
    {
        self.balancers
            .by_service
            .insert(service.into(), Arc::new(factory) as BalancerFactory);
        self
    }

    /// Replaces the connection options the configuration gives (`rpc.consumer.connect_timeout_ms`,
    /// keep-alive, frame and metadata limits).
    pub fn connection_options(mut self, options: ClientOptions) -> Self {
        self.options = options;
        self
    }

    /// Builds the consumer over `registry`, which it owns and closes in [`Consumer::close`].
    pub async fn build(self, registry: Arc<dyn Registry>) -> Result<Consumer, ConsumerError> {
        let config = &self.config;
        let options = DiscoveryOptions {
            load_timeout: config.registry.timeout(),
            resync_interval: Duration::from_secs(config.registry.resync_secs),
            empty_list_grace: Duration::from_millis(config.registry.empty_list_grace_ms),
            cache_file: config
                .registry
                .cache_file
                .as_ref()
                .map(|path| CacheFile::new(path, &config.registry.root)),
            ..DiscoveryOptions::default()
        };
        let cache = Arc::new(DiscoveryCache::new(registry.clone(), options).await?);
        let limits = self.options.metadata_limits;
        let pool = Arc::new(ConnectionPool::new(self.options));
        let health = Arc::new(InstanceHealth::new(HealthOptions::from(&config.consumer)));
        let cluster = ClusterOptions {
            balancers: self.balancers,
            budget: BudgetOptions {
                percent: config.consumer.retry.budget_percent,
                min_per_sec: config.consumer.retry.min_retries_per_sec,
            },
            departed_grace: Duration::from_millis(config.consumer.departed_grace_ms),
            zone: Some(config.consumer.zone.clone()).filter(|z| !z.is_empty()),
            schema_check: config.consumer.schema_check,
        };
        let invoker = Arc::new(ClusterInvoker::with_options(
            InstanceSource::Discovery(cache.clone()),
            pool.clone(),
            health.clone(),
            cluster,
        ));
        let channel = Channel::new(invoker.clone())
            .with_serializer(config.serializer)
            .with_policies(Arc::new(PolicySet::new(config.consumer.clone())))
            .with_interceptors(Interceptors::new(self.interceptors))
            .with_metadata_limits(limits)
            .with_stream_settings(StreamSettings::from(&config.consumer));
        let channel = self.layers.into_iter().fold(channel, |channel, layer| layer(channel));
        Ok(Consumer {
            registry,
            cache,
            pool,
            health,
            invoker,
            channel,
            _attached: self.attached,
        })
    }
}

impl Consumer {
    /// A builder configured by `config` (`rpc.consumer`, `rpc.serializer`, `rpc.registry`
    /// timings).
    pub fn builder(config: &RpcConfig) -> ConsumerBuilder {
        ConsumerBuilder {
            config: config.clone(),
            interceptors: Vec::new(),
            layers: Vec::new(),
            balancers: BalancerChoice {
                all: None,
                by_service: HashMap::new(),
            },
            options: ClientOptions::from(&config.consumer),
            attached: Vec::new(),
        }
    }

    /// A consumer over `registry` configured by `config`, with nothing added; see
    /// [`Consumer::builder`].
    pub async fn new(registry: Arc<dyn Registry>, config: &RpcConfig) -> Result<Self, ConsumerError> {
        Self::builder(config).build(registry).await
    }

    /// The channel to hand to generated clients (`UserServiceClient::new(consumer.channel())`).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The discovery cache.
    pub fn cache(&self) -> &Arc<DiscoveryCache> {
        &self.cache
    }

    /// The connection pool.
    pub fn pool(&self) -> &Arc<ConnectionPool> {
        &self.pool
    }

    /// The health of every instance called so far.
    pub fn health(&self) -> &Arc<InstanceHealth> {
        &self.health
    }

    /// The retry budget of `service` (`name:version`), once it has been called.
    pub fn retry_budget(&self, service: &str) -> Option<Arc<RetryBudget>> {
        self.invoker.budget(service)
    }

    /// Stops the discovery watches and closes the registry.
    pub async fn close(&self) {
        self.cache.close().await;
        if let Err(e) = self.registry.close().await {
            tracing::warn!(error = %e, "closing the registry failed");
        }
    }
}
