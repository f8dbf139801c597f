//! Per-service routes, and the candidate iterator the fail-over step walks.
//!
//! A [`Route`] is what one service's calls need, cached per service and rebuilt only when its
//! instance list (a new `Arc` from the discovery cache) or its balancer changes: the balancer,
//! and for each instance its address, health and connection slot, so a call formats no address
//! and looks nothing up by it.
//!
//! [`Candidates`] yields the instances a call may try, one at a time, as the balancer picks
//! them: never one already tried by this round, skipping ejected outliers and instances whose
//! server said it is going away; when every untried instance is skipped, the least recently
//! ejected one (rather than failing blind).

use std::collections::HashMap;
use std::sync::Arc;

use crate::balance::{self, LoadBalancer, LoadBalancerKind, PickContext};
use crate::fault::{InstanceStat, RetryBudget};
use crate::registry::ServiceInstance;

use super::Endpoint;

/// Makes a balancer for one service (each service gets its own, as balancers keep state).
pub type BalancerFactory = Arc<dyn Fn() -> Arc<dyn LoadBalancer> + Send + Sync>;

/// Which balancer each service uses: the configured kind, unless the consumer builder was
/// given a balancer of the user's own for that service (or for all).
#[derive(Clone, Default)]
pub struct BalancerChoice {
    /// A balancer for every service, replacing the configured kinds.
    pub all: Option<BalancerFactory>,
    /// Balancers for single services, by service key; they win over `all`.
    pub by_service: HashMap<String, BalancerFactory>,
}

/// Identifies a balancer: a configured kind, or a user factory (by its address).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum BalancerId {
    Kind(LoadBalancerKind),
    Custom(usize),
}

impl BalancerChoice {
    /// The balancer `service` uses under the configured `kind`, and what identifies it.
    pub(crate) fn resolve(&self, service: &str, kind: LoadBalancerKind) -> (BalancerId, Option<&BalancerFactory>) {
        match self.by_service.get(service).or(self.all.as_ref()) {
            Some(factory) => (
                BalancerId::Custom(Arc::as_ptr(factory) as *const () as usize),
                Some(factory),
            ),
            None => (BalancerId::Kind(kind), None),
        }
    }
}

/// One service's cached route.
pub struct Route {
    pub(crate) balancer_id: BalancerId,
    pub(crate) balancer: Arc<dyn LoadBalancer>,
    pub(crate) instances: Arc<[ServiceInstance]>,
    pub(crate) targets: Vec<Target>,
    /// The service's retry budget (kept across rebuilds, like the balancer).
    pub(crate) budget: Arc<RetryBudget>,
}

/// One instance of a route.
pub struct Target {
    /// `host:port`.
    pub addr: String,
    /// Its health (in flight, ejection).
    pub health: Arc<InstanceStat>,
    /// Its connection slot.
    pub endpoint: Arc<Endpoint>,
}

impl Route {
    /// A route over `instances` with `balancer`, its targets made by `target`.
    pub(crate) fn new(
        balancer_id: BalancerId,
        balancer: Arc<dyn LoadBalancer>,
        budget: Arc<RetryBudget>,
        instances: Arc<[ServiceInstance]>,
        target: impl Fn(&ServiceInstance) -> Target,
    ) -> Self {
        let targets = instances.iter().map(target).collect();
        Self {
            balancer_id,
            balancer,
            instances,
            targets,
            budget,
        }
    }

    /// Whether this route serves `instances` with the balancer `id`.
    pub(crate) fn is_for(&self, id: BalancerId, instances: &Arc<[ServiceInstance]>) -> bool {
        self.balancer_id == id && Arc::ptr_eq(&self.instances, instances)
    }

    /// A new balancer for `id`: from the factory when there is one, else the built-in kind.
    pub(crate) fn make_balancer(id: BalancerId, factory: Option<&BalancerFactory>) -> Arc<dyn LoadBalancer> {
        match (id, factory) {
            (_, Some(factory)) => factory(),
            (BalancerId::Kind(kind), None) => balance::for_kind(kind),
            (BalancerId::Custom(_), None) => balance::for_kind(LoadBalancerKind::RoundRobin),
        }
    }

    /// Number of instances.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether the route has no instance.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

/// The instances one round of a call may try, in the balancer's order.
pub struct Candidates<'r> {
    route: &'r Route,
    hash_key: Option<u64>,
    /// The first pick, kept inline: most calls never fail over and allocate nothing.
    first: Option<usize>,
    /// Later picks, after failed attempts.
    more: Vec<usize>,
}

impl<'r> Candidates<'r> {
    /// Candidates from `route` for a call with `hash_key`.
    pub fn new(route: &'r Route, hash_key: Option<u64>) -> Self {
        Self {
            route,
            hash_key,
            first: None,
            more: Vec::new(),
        }
    }

    /// Number of instances tried so far.
    pub fn tried(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    /// Whether every instance has been tried.
    pub fn exhausted(&self) -> bool {
        self.tried() >= self.route.len()
    }

    fn was_tried(&self, index: usize) -> bool {
        self.first == Some(index) || self.more.contains(&index)
    }
}

impl<'r> Iterator for Candidates<'r> {
    type Item = &'r Target;

    fn next(&mut self) -> Option<&'r Target> {
        let route = self.route;
        let tried = |i: usize| self.was_tried(i);
        let available = |i: usize| {
            let target = &route.targets[i];
            !tried(i) && target.health.is_available() && !target.endpoint.is_leaving()
        };
        let load = |i: usize| route.targets[i].health.in_flight();
        let ctx = PickContext {
            hash_key: self.hash_key,
            available: &available,
            load: &load,
        };
        let index = route.balancer.pick(&route.instances, &ctx).or_else(|| {
            (0..route.targets.len())
                .filter(|&i| !tried(i))
                .min_by_key(|&i| route.targets[i].health.ejected_at())
        })?;
        match self.first {
            None => self.first = Some(index),
            Some(_) => self.more.push(index),
        }
        Some(&route.targets[index])
    }
}
