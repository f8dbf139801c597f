//! Calls through the discovery cache: resolve the service key, pick an instance, call it.

use std::sync::Arc;

use super::{CallRequest, ConnectionPool, Invoker};
use crate::balance::{LoadBalancer, PickContext};
use crate::error::RpcError;
use crate::registry::DiscoveryCache;
use crate::reply::Reply;
use crate::server::BoxFuture;

/// An [`Invoker`] that finds instances through a [`DiscoveryCache`] and spreads calls over
/// them with a [`LoadBalancer`].
pub struct DiscoveryInvoker {
    cache: Arc<DiscoveryCache>,
    pool: Arc<ConnectionPool>,
    balancer: Arc<dyn LoadBalancer>,
}

impl DiscoveryInvoker {
    /// Calls instances found in `cache`, connected through `pool`, picked by `balancer`.
    pub fn new(cache: Arc<DiscoveryCache>, pool: Arc<ConnectionPool>, balancer: Arc<dyn LoadBalancer>) -> Self {
        Self { cache, pool, balancer }
    }
}

impl Invoker for DiscoveryInvoker {
    fn invoke<'a>(&'a self, call: &'a CallRequest<'a>) -> BoxFuture<'a, Result<Reply, RpcError>> {
        Box::pin(async move {
            let started = tokio::time::Instant::now();
            let instances = match self.cache.cached(call.service) {
                Some(list) => list,
                None => tokio::time::timeout_at(call.deadline, self.cache.instances(call.service))
                    .await
                    .map_err(|_| RpcError::Timeout(started.elapsed()))?
                    .map_err(|e| RpcError::Registry(e.to_string()))?,
            };
            let index = self
                .balancer
                .pick(&instances, &PickContext::default())
                .ok_or_else(|| RpcError::NoInstances(call.service.to_owned()))?;
            let instance = &instances[index];
            let addr = instance.address();
            let conn = self.pool.get(&addr, Some(call.deadline)).await?;
            conn.call(
                call.service,
                call.method,
                call.serializer,
                call.body.clone(),
                call.deadline,
            )
            .await
        })
    }
}
