//! [`Consumer`]: the client side built from configuration.

use std::sync::Arc;
use std::time::Duration;

use super::{Channel, ClientOptions, ClusterInvoker, ConnectionPool, InstanceSource};
use crate::config::RpcConfig;
use crate::fault::{InstanceHealth, OutlierOptions, PolicySet};
use crate::registry::{DiscoveryCache, DiscoveryOptions, Registry};
use crate::schedule::ScheduleError;

/// A consumer could not be built.
#[derive(Debug, thiserror::Error)]
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
    channel: Channel,
}

impl Consumer {
    /// A consumer over `registry`, configured by `config` (`rpc.consumer`, `rpc.serializer`,
    /// `rpc.registry` timings). The consumer owns the registry and closes it in
    /// [`Consumer::close`].
    pub async fn new(registry: Arc<dyn Registry>, config: &RpcConfig) -> Result<Self, ConsumerError> {
        let options = DiscoveryOptions {
            load_timeout: config.registry.timeout(),
            resync_interval: Duration::from_secs(config.registry.resync_secs),
            empty_list_grace: Duration::from_millis(config.registry.empty_list_grace_ms),
            ..DiscoveryOptions::default()
        };
        let cache = Arc::new(DiscoveryCache::new(registry.clone(), options).await?);
        let pool = Arc::new(ConnectionPool::new(ClientOptions::default()));
        let health = Arc::new(InstanceHealth::new(OutlierOptions::from(&config.consumer.outlier)));
        let invoker = ClusterInvoker::new(InstanceSource::Discovery(cache.clone()), pool.clone(), health.clone());
        let channel = Channel::new(Arc::new(invoker))
            .with_serializer(config.serializer)
            .with_policies(Arc::new(PolicySet::new(config.consumer.clone())));
        Ok(Self {
            registry,
            cache,
            pool,
            health,
            channel,
        })
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

    /// Stops the discovery watches and closes the registry.
    pub async fn close(&self) {
        self.cache.close().await;
        if let Err(e) = self.registry.close().await {
            tracing::warn!(error = %e, "closing the registry failed");
        }
    }
}
