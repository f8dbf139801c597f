//! [`Consumer`]: the client side built from configuration.

use std::sync::Arc;

use super::{Channel, ClientOptions, ConnectionPool, DiscoveryInvoker};
use crate::balance::{self, LoadBalancer};
use crate::config::{LoadBalancerKind, RetryStrategy, RpcConfig, TolerantKind};
use crate::registry::{DiscoveryCache, DiscoveryOptions, Registry};
use crate::schedule::ScheduleError;

/// A consumer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The discovery cache's resync job could not be scheduled.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// The configuration asks for a strategy this build does not provide.
    #[error("{field}: \"{value}\" is not available in this build")]
    Unsupported {
        /// Full path of the field.
        field: &'static str,
        /// The configured value.
        value: &'static str,
    },
}

/// Everything a process needs to call services found in a registry: the discovery cache,
/// the connection pool and a [`Channel`] that the generated clients take.
pub struct Consumer {
    registry: Arc<dyn Registry>,
    cache: Arc<DiscoveryCache>,
    pool: Arc<ConnectionPool>,
    channel: Channel,
}

impl Consumer {
    /// A consumer over `registry`, configured by `config` (`rpc.consumer`, `rpc.serializer`,
    /// `rpc.registry` timings). The consumer owns the registry and closes it in
    /// [`Consumer::close`].
    pub async fn new(registry: Arc<dyn Registry>, config: &RpcConfig) -> Result<Self, ConsumerError> {
        let consumer = &config.consumer;
        if consumer.retry.strategy != RetryStrategy::None {
            return Err(ConsumerError::Unsupported {
                field: "rpc.consumer.retry.strategy",
                value: consumer.retry.strategy.name(),
            });
        }
        if consumer.tolerant != TolerantKind::FailFast {
            return Err(ConsumerError::Unsupported {
                field: "rpc.consumer.tolerant",
                value: consumer.tolerant.name(),
            });
        }
        let balancer = balancer_for(consumer.load_balancer)?;
        let options = DiscoveryOptions {
            load_timeout: config.registry.timeout(),
            resync_interval: std::time::Duration::from_secs(config.registry.resync_secs),
            ..DiscoveryOptions::default()
        };
        let cache = Arc::new(DiscoveryCache::new(registry.clone(), options).await?);
        let pool = Arc::new(ConnectionPool::new(ClientOptions::default()));
        let invoker = DiscoveryInvoker::new(cache.clone(), pool.clone(), balancer);
        let channel = Channel::new(Arc::new(invoker))
            .with_serializer(config.serializer)
            .with_timeout(consumer.timeout());
        Ok(Self {
            registry,
            cache,
            pool,
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

    /// Stops the discovery watches and closes the registry.
    pub async fn close(&self) {
        self.cache.close().await;
        if let Err(e) = self.registry.close().await {
            tracing::warn!(error = %e, "closing the registry failed");
        }
    }
}

fn balancer_for(kind: LoadBalancerKind) -> Result<Arc<dyn LoadBalancer>, ConsumerError> {
    match kind {
        LoadBalancerKind::RoundRobin => Ok(Arc::new(balance::RoundRobin::default())),
        other => Err(ConsumerError::Unsupported {
            field: "rpc.consumer.load_balancer",
            value: other.name(),
        }),
    }
}
