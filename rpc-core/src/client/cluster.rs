//! The cluster invoker: finds the instances of a service, and runs the retry step over the
//! fail-over step over single attempts (see the [module docs](super)).

use std::sync::Arc;

use dashmap::DashMap;
use tokio::time::Instant;

use super::route::{BalancerChoice, Candidates, Route, Target};
use super::{failover, retry, CallRequest, ClientBuildError, ConnectionPool, Invoker};
use crate::error::RpcError;
use crate::fault::InstanceHealth;
use crate::future::BoxFuture;
use crate::protocol::Status;
use crate::registry::{DiscoveryCache, ServiceInstance};
use crate::reply::Reply;

/// Where a cluster invoker finds the instances of a service.
#[derive(Clone)]
pub enum InstanceSource {
    /// Always these instances, whatever the service (a direct channel).
    Fixed(Arc<[ServiceInstance]>),
    /// The discovery cache.
    Discovery(Arc<DiscoveryCache>),
}

impl InstanceSource {
    /// One fixed endpoint, `host:port` (the port may not be 0).
    pub fn address(addr: &str) -> Result<Self, String> {
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("\"{addr}\" is not host:port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("\"{addr}\": \"{port}\" is not a port number"))?;
        if host.is_empty() || port == 0 {
            return Err(format!("\"{addr}\" is not host:port with a host and a port above 0"));
        }
        Ok(Self::Fixed(Arc::from(vec![ServiceInstance::new("", "", host, port)])))
    }

    async fn instances(&self, service: &str, deadline: Instant) -> Result<Arc<[ServiceInstance]>, RpcError> {
        match self {
            Self::Fixed(list) => Ok(list.clone()),
            Self::Discovery(cache) => {
                if let Some(list) = cache.cached(service) {
                    return Ok(list);
                }
                let started = Instant::now();
                tokio::time::timeout_at(deadline, cache.instances(service))
                    .await
                    .map_err(|_| RpcError::Timeout(started.elapsed()))?
                    .map_err(|e| RpcError::Registry(e.to_string()))
            }
        }
    }
}

/// An [`Invoker`] over a set of instances, with load balancing, retry, fail-over and outlier
/// ejection.
pub struct ClusterInvoker {
    source: InstanceSource,
    pool: Arc<ConnectionPool>,
    health: Arc<InstanceHealth>,
    balancers: BalancerChoice,
    routes: DashMap<String, Arc<Route>>,
}

impl ClusterInvoker {
    /// Calls instances from `source`, connected through `pool`, tracked in `health`, picked by
    /// the configured balancer kinds.
    pub fn new(source: InstanceSource, pool: Arc<ConnectionPool>, health: Arc<InstanceHealth>) -> Self {
        Self::with_balancers(source, pool, health, BalancerChoice::default())
    }

    /// Calls one fixed address (`host:port`) through `pool`.
    pub fn direct(addr: &str, pool: Arc<ConnectionPool>) -> Result<Self, ClientBuildError> {
        let source = InstanceSource::address(addr).map_err(ClientBuildError::InvalidAddress)?;
        Ok(Self::new(source, pool, Arc::new(InstanceHealth::default())))
    }

    /// Like [`ClusterInvoker::new`], with balancers of the user's own.
    pub fn with_balancers(
        source: InstanceSource,
        pool: Arc<ConnectionPool>,
        health: Arc<InstanceHealth>,
        balancers: BalancerChoice,
    ) -> Self {
        Self {
            source,
            pool,
            health,
            balancers,
            routes: DashMap::new(),
        }
    }

    /// The health of every instance called so far.
    pub fn health(&self) -> &Arc<InstanceHealth> {
        &self.health
    }

    /// The service's route for this instance list under its balancer.
    fn route(&self, call: &CallRequest<'_>, instances: &Arc<[ServiceInstance]>) -> Arc<Route> {
        let (id, factory) = self.balancers.resolve(call.service, call.policy.load_balancer);
        let previous = self.routes.get(call.service).map(|r| r.clone());
        if let Some(route) = &previous {
            if route.is_for(id, instances) {
                return route.clone();
            }
        }
        // Keep the balancer's state (counter, ring) when only the instances changed.
        let balancer = match &previous {
            Some(route) if route.balancer_id == id => route.balancer.clone(),
            _ => Route::make_balancer(id, factory),
        };
        let route = Arc::new(Route::new(id, balancer, instances.clone(), |instance| {
            let addr = instance.address();
            Target {
                health: self.health.stat(&addr),
                endpoint: self.pool.endpoint(&addr),
                addr,
            }
        }));
        self.routes.insert(call.service.to_owned(), route.clone());
        route
    }
}

/// One attempt on one instance, ending at the call's deadline or the attempt timeout; its
/// outcome feeds the instance's health. An application error comes back as
/// `RpcError::Application(reply)` for the retry step to judge.
async fn attempt(target: &Target, call: &CallRequest<'_>) -> Result<Reply, RpcError<Reply>> {
    let deadline = match call.policy.retry.attempt_timeout {
        Some(limit) => call.deadline.min(Instant::now() + limit),
        None => call.deadline,
    };
    let outcome = {
        let _in_flight = target.health.begin();
        match target.endpoint.connection(Some(deadline)).await {
            Ok(conn) => {
                conn.call(call.service, call.method, call.serializer, call.body.clone(), deadline)
                    .await
            }
            Err(e) => Err(e),
        }
    };
    match outcome {
        Ok(reply) => {
            target.health.success();
            if reply.status == Status::ApplicationError {
                Err(RpcError::Application(reply))
            } else {
                Ok(reply)
            }
        }
        Err(e) => {
            target.health.failure(&e);
            Err(e.into_typed())
        }
    }
}

impl Invoker for ClusterInvoker {
    fn invoke<'a>(&'a self, call: &'a CallRequest<'a>) -> BoxFuture<'a, Result<Reply, RpcError>> {
        Box::pin(async move {
            let policy = call.policy;
            let instances = self.source.instances(call.service, call.deadline).await?;
            if instances.is_empty() {
                return Err(RpcError::NoInstances(call.service.to_owned()));
            }
            let route = self.route(call, &instances);
            retry::run(policy, call.deadline, |_round| {
                failover::run(
                    Candidates::new(&route, call.hash_key),
                    policy.fail_over,
                    policy.idempotent,
                    |target| attempt(target, call),
                )
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Channel;

    #[test]
    fn a_direct_address_needs_a_host_and_a_port_above_zero() {
        for bad in ["host", "host:", ":9000", "host:0", "host:99999", "host:http"] {
            let e = Channel::direct(bad).unwrap_err();
            assert!(matches!(e, ClientBuildError::InvalidAddress(_)), "{bad}: {e}");
            assert!(e.to_string().contains(bad), "{e}");
        }
        for good in ["127.0.0.1:9001", "localhost:1", "[::1]:9001"] {
            assert!(InstanceSource::address(good).is_ok(), "{good}");
        }
    }
}
