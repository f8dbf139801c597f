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

use super::{CallRequest, ConnectionPool, Invoker};
use crate::balance::{self, LoadBalancer, PickContext};
use crate::config::{LoadBalancerKind, TolerantKind};
use crate::error::RpcError;
use crate::fault::{is_retryable, InstanceHealth};
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
    balancers: DashMap<String, (LoadBalancerKind, Arc<dyn LoadBalancer>)>,
}

impl ClusterInvoker {
    /// Calls instances from `source`, connected through `pool`, tracked in `health`.
    pub fn new(source: InstanceSource, pool: Arc<ConnectionPool>, health: Arc<InstanceHealth>) -> Self {
        Self {
            source,
            pool,
            health,
            balancers: DashMap::new(),
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

    /// The service's balancer, created on first use (one per service, so counters and hash
    /// rings are per service).
    fn balancer(&self, service: &str, kind: LoadBalancerKind) -> Arc<dyn LoadBalancer> {
        if let Some(entry) = self.balancers.get(service) {
            if entry.0 == kind {
                return entry.1.clone();
            }
        }
        let balancer = balance::for_kind(kind);
        self.balancers.insert(service.to_owned(), (kind, balancer.clone()));
        balancer
    }

    /// Picks an instance not in `tried`; when every such instance is ejected, the least
    /// recently ejected one.
    fn choose(
        &self,
        instances: &Arc<[ServiceInstance]>,
        balancer: &dyn LoadBalancer,
        hash_key: Option<u64>,
        tried: &[usize],
    ) -> Option<usize> {
        let available = |i: usize| !tried.contains(&i) && self.health.is_available(&instances[i].address());
        let load = |i: usize| self.health.in_flight(&instances[i].address());
        let ctx = PickContext {
            hash_key,
            available: &available,
            load: &load,
        };
        balancer.pick(instances, &ctx).or_else(|| {
            (0..instances.len())
                .filter(|i| !tried.contains(i))
                .min_by_key(|&i| self.health.ejected_at(&instances[i].address()))
        })
    }

    /// One attempt on `addr`, ending at the call's deadline or the attempt timeout.
    async fn attempt(&self, addr: &str, call: &CallRequest<'_>) -> Result<Reply, RpcError> {
        let deadline = match call.policy.retry.attempt_timeout {
            Some(limit) => call.deadline.min(Instant::now() + limit),
            None => call.deadline,
        };
        let conn = self.pool.get(addr, Some(deadline)).await?;
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
            let balancer = self.balancer(call.service, policy.load_balancer);
            let fail_over = policy.tolerant == TolerantKind::FailOver;
            let retrying = policy.retry.retries() || fail_over;
            let max_attempts = policy.retry.max_attempts.max(1);
            let mut tried: Vec<usize> = Vec::new();
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                let Some(index) = self.choose(&instances, balancer.as_ref(), call.hash_key, &tried) else {
                    return Err(RpcError::NoInstances(call.service.to_owned()));
                };
                let addr = instances[index].address();
                let outcome = {
                    let _in_flight = self.health.begin(&addr);
                    self.attempt(&addr, call).await
                };
                // An application error is a result, not an instance failure; an idempotent
                // method may still try it again.
                let error: RpcError<Reply> = match outcome {
                    Ok(reply) => {
                        self.health.success(&addr);
                        if reply.status != Status::ApplicationError {
                            return Ok(reply);
                        }
                        RpcError::Application(reply)
                    }
                    Err(e) => {
                        self.health.failure(&addr, &e);
                        e.into_typed()
                    }
                };
                let last_chance = attempt >= max_attempts
                    || !retrying
                    || !is_retryable(&error, policy.idempotent)
                    || (fail_over && tried.len() + 1 >= instances.len());
                let delay = policy.retry.delay_after(attempt);
                if last_chance || Instant::now() + delay >= call.deadline {
                    return match error {
                        RpcError::Application(reply) => Ok(reply),
                        other => Err(other.without_application()),
                    };
                }
                debug!(instance = %addr, attempt, error = %error.kind(), "attempt failed; trying again");
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
