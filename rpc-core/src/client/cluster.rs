//! The cluster invoker: find instances, pick one, call it, and recover from failures by retry,
//! fail-over and outlier ejection.
//!
//! One call runs as a bounded loop of attempts under its [`MethodPolicy`]:
//!
//! 1. the instances come from the [`InstanceSource`] (a fixed address, or the discovery cache);
//! 2. the service's balancer picks among the *available* ones: not ejected as outliers, and
//!    under `fail_over` not already tried by this call; when every candidate is ejected, the
//!    least recently ejected one is tried rather than failing blind;
//! 3. the attempt's outcome feeds the instance's health (in-flight count for p2c, ejection);
//! 4. a failure is tried again only if it is retryable for this method (see
//!    [`is_retryable`]), attempts remain (`retry.max_attempts`), the policy retries
//!    (a retry strategy other than `none`, or `fail_over`), and the pause before the next
//!    attempt still ends before the call's deadline.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::time::Instant;
use tracing::debug;

use super::{CallRequest, ConnectionPool, Endpoint, Invoker};
use crate::balance::{self, LoadBalancer, PickContext};
use crate::config::{LoadBalancerKind, TolerantKind};
use crate::error::RpcError;
use crate::fault::{is_retryable, InstanceHealth, InstanceStat};
use crate::protocol::Status;
use crate::registry::{DiscoveryCache, ServiceInstance};
use crate::reply::Reply;
use crate::server::BoxFuture;

/// Where a cluster invoker finds the instances of a service.
#[derive(Clone)]
pub enum InstanceSource {
    /// Always these instances, whatever the service (a direct channel).
    Fixed(Arc<[ServiceInstance]>),
    /// The discovery cache.
    Discovery(Arc<DiscoveryCache>),
}

impl InstanceSource {
    /// One fixed endpoint, `host:port`.
    pub fn address(addr: &str) -> Self {
        let (host, port) = match addr.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().unwrap_or(0)),
            None => (addr, 0),
        };
        Self::Fixed(Arc::from(vec![ServiceInstance::new("", "", host, port)]))
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
    routes: DashMap<String, Arc<Route>>,
}

/// What one service's calls need, cached per service and rebuilt only when its instance list
/// (a new `Arc` from the discovery cache) or its balancer kind changes: the balancer, and for
/// each instance its address, health and pool slot, so a call formats no address and looks
/// nothing up by it.
struct Route {
    kind: LoadBalancerKind,
    balancer: Arc<dyn LoadBalancer>,
    instances: Arc<[ServiceInstance]>,
    targets: Vec<Target>,
}

struct Target {
    addr: String,
    health: Arc<InstanceStat>,
    endpoint: Arc<Endpoint>,
}

impl ClusterInvoker {
    /// Calls instances from `source`, connected through `pool`, tracked in `health`.
    pub fn new(source: InstanceSource, pool: Arc<ConnectionPool>, health: Arc<InstanceHealth>) -> Self {
        Self {
            source,
            pool,
            health,
            routes: DashMap::new(),
        }
    }

    /// Calls one fixed address (`host:port`) through `pool`.
    pub fn direct(addr: &str, pool: Arc<ConnectionPool>) -> Self {
        Self::new(InstanceSource::address(addr), pool, Arc::new(InstanceHealth::default()))
    }

    /// The health of every instance called so far.
    pub fn health(&self) -> &Arc<InstanceHealth> {
        &self.health
    }

    /// The service's route for this instance list and balancer kind.
    fn route(&self, service: &str, kind: LoadBalancerKind, instances: &Arc<[ServiceInstance]>) -> Arc<Route> {
        let previous = self.routes.get(service).map(|r| r.clone());
        if let Some(route) = &previous {
            if route.kind == kind && Arc::ptr_eq(&route.instances, instances) {
                return route.clone();
            }
        }
        // Keep the balancer's state (counter, ring) when only the instances changed.
        let balancer = match &previous {
            Some(route) if route.kind == kind => route.balancer.clone(),
            _ => balance::for_kind(kind),
        };
        let targets = instances
            .iter()
            .map(|instance| {
                let addr = instance.address();
                Target {
                    health: self.health.stat(&addr),
                    endpoint: self.pool.endpoint(&addr),
                    addr,
                }
            })
            .collect();
        let route = Arc::new(Route {
            kind,
            balancer,
            instances: instances.clone(),
            targets,
        });
        self.routes.insert(service.to_owned(), route.clone());
        route
    }

    /// Picks an instance not in `tried`; when every such instance is ejected, the least
    /// recently ejected one.
    fn choose(route: &Route, hash_key: Option<u64>, tried: &[usize]) -> Option<usize> {
        let available = |i: usize| !tried.contains(&i) && route.targets[i].health.is_available();
        let load = |i: usize| route.targets[i].health.in_flight();
        let ctx = PickContext {
            hash_key,
            available: &available,
            load: &load,
        };
        route.balancer.pick(&route.instances, &ctx).or_else(|| {
            (0..route.targets.len())
                .filter(|i| !tried.contains(i))
                .min_by_key(|&i| route.targets[i].health.ejected_at())
        })
    }

    /// One attempt on `target`, ending at the call's deadline or the attempt timeout.
    async fn attempt(target: &Target, call: &CallRequest<'_>) -> Result<Reply, RpcError> {
        let deadline = match call.policy.retry.attempt_timeout {
            Some(limit) => call.deadline.min(Instant::now() + limit),
            None => call.deadline,
        };
        let conn = target.endpoint.connection(Some(deadline)).await?;
        conn.call(call.service, call.method, call.serializer, call.body.clone(), deadline)
            .await
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
            let route = self.route(call.service, policy.load_balancer, &instances);
            let fail_over = policy.tolerant == TolerantKind::FailOver;
            let retrying = policy.retry.retries() || fail_over;
            let max_attempts = policy.retry.max_attempts.max(1);
            let mut tried: Vec<usize> = Vec::new();
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                let Some(index) = Self::choose(&route, call.hash_key, &tried) else {
                    return Err(RpcError::NoInstances(call.service.to_owned()));
                };
                let target = &route.targets[index];
                let outcome = {
                    let _in_flight = target.health.begin();
                    Self::attempt(target, call).await
                };
                // An application error is a result, not an instance failure; an idempotent
                // method may still try it again.
                let error: RpcError<Reply> = match outcome {
                    Ok(reply) => {
                        target.health.success();
                        if reply.status != Status::ApplicationError {
                            return Ok(reply);
                        }
                        RpcError::Application(reply)
                    }
                    Err(e) => {
                        target.health.failure(&e);
                        e.into_typed()
                    }
                };
                let last_chance = attempt >= max_attempts
                    || !retrying
                    || !is_retryable(&error, policy.idempotent)
                    || (fail_over && tried.len() + 1 >= route.targets.len());
                let delay = policy.retry.delay_after(attempt);
                if last_chance || Instant::now() + delay >= call.deadline {
                    return match error {
                        RpcError::Application(reply) => Ok(reply),
                        other => Err(other.without_application()),
                    };
                }
                debug!(instance = %target.addr, attempt, error = %error.kind(), "attempt failed; trying again");
                if fail_over {
                    tried.push(index);
                }
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
        })
    }
}
