//! Per-service routes, and the candidate iterator the fail-over step walks.
//!
//! A [`Route`] is what one service's calls need, cached per service and rebuilt only when its
//! instance list (a new `Arc` from the discovery cache) or its balancer changes: the balancer,
//! and for each instance its address, health and connection slot, so a call formats no address
//! and looks nothing up by it.
//!
//! [`Candidates`] yields the instances a call may try, one at a time, as the balancer picks
//! them: never one already tried by this round, disabled by the rules or known to lack the
//! call's method (see [`super::methods`]), skipping ejected
//! outliers and instances whose server said it is going away; when every untried instance is
//! skipped, the least recently ejected one (rather than failing blind).
//!
//! Preferences narrow the pick while they can be met, and fall away when they cannot: a call
//! with metadata `route-tag: T` goes to the rules' tag group T; a consumer with a zone goes
//! to instances of its zone; otherwise to all. An instance younger than its registered
//! warm-up is skipped with the complementary probability of `age / warm-up`, whatever the
//! balancer, so its share of calls grows linearly while it warms.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::methods::{MethodMap, Refused};
use super::Endpoint;
use crate::balance::{self, LoadBalancer, LoadBalancerKind, PickContext};
use crate::error::RpcError;
use crate::fault::{InstanceStat, RetryBudget};
use crate::registry::{now_ms, SchemaMap, ServiceInstance, WARMUP_SECS, ZONE};
use crate::rules::ServiceRules;

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
    /// The discovery cache's list the route was built from.
    pub(crate) source: Arc<[ServiceInstance]>,
    /// The rules it was built with.
    pub(crate) rules: Option<Arc<ServiceRules>>,
    /// The schemas it was built with.
    pub(crate) schemas: Option<Arc<SchemaMap>>,
    /// Which instances lack which method; `None` when no instance's schema is known.
    pub(crate) methods: Option<MethodMap>,
    /// What the balancer picks from: the source, with weights the rules replace.
    pub(crate) instances: Arc<[ServiceInstance]>,
    pub(crate) targets: Vec<Target>,
    /// The service's retry budget (kept across rebuilds, like the balancer).
    pub(crate) budget: Arc<RetryBudget>,
    /// Preferences beyond a plain pick (rules, zone, warm-up); `None` when there are none,
    /// which keeps the common path as short as it was.
    pub(crate) shape: Option<Shape>,
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

/// Where a route's calls prefer to go, per instance (indices match the targets).
pub(crate) struct Shape {
    /// Disabled by the rules: never picked.
    disabled: Vec<bool>,
    /// In the consumer's zone, when it has one: preferred while any is usable.
    same_zone: Option<Vec<bool>>,
    /// Members of each tag group of the rules.
    tags: BTreeMap<String, Vec<bool>>,
    /// Warm-up of each instance: registered at, and warm-up length, in ms.
    warmup: Vec<Option<(u64, u64)>>,
    /// When the last warming instance is warm (ms since the epoch); 0 when none warms.
    warm_from_ms: u64,
}

impl Shape {
    /// The preferences of `instances` under `rules` for a consumer in `zone`; `None` when
    /// nothing would change a plain pick.
    fn of(instances: &[ServiceInstance], rules: Option<&ServiceRules>, zone: Option<&str>) -> Option<Self> {
        let disabled: Vec<bool> = instances
            .iter()
            .map(|i| rules.is_some_and(|r| r.disabled.contains(&i.address())))
            .collect();
        let same_zone = zone.map(|z| {
            instances
                .iter()
                .map(|i| i.metadata.get(ZONE).is_some_and(|own| own == z))
                .collect::<Vec<bool>>()
        });
        let tags: BTreeMap<String, Vec<bool>> = rules
            .map(|r| {
                r.tags
                    .iter()
                    .map(|(tag, members)| {
                        (
                            tag.clone(),
                            instances.iter().map(|i| members.contains(&i.address())).collect(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let warmup: Vec<Option<(u64, u64)>> = instances
            .iter()
            .map(|i| {
                let secs: u64 = i.metadata.get(WARMUP_SECS)?.parse().ok().filter(|&s| s > 0)?;
                Some((i.registered_at_ms, secs.saturating_mul(1000)))
            })
            .collect();
        let warm_from_ms = warmup
            .iter()
            .flatten()
            .map(|&(at, len)| at.saturating_add(len))
            .max()
            .unwrap_or(0);
        let plain = !disabled.contains(&true) && same_zone.is_none() && tags.is_empty() && warm_from_ms <= now_ms();
        (!plain).then_some(Self {
            disabled,
            same_zone,
            tags,
            warmup,
            warm_from_ms,
        })
    }

    /// The share of calls instance `i` takes while it warms up (1 once warm).
    fn warm_share(&self, i: usize, now: u64) -> f64 {
        match self.warmup[i] {
            Some((at, len)) if now < at.saturating_add(len) => {
                (now.saturating_sub(at) as f64 / len as f64).clamp(0.01, 1.0)
            }
            _ => 1.0,
        }
    }
}

impl Route {
    /// A route over `source` (weights replaced and preferences set by `rules`, preferring
    /// `zone`), its targets made by `target`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        balancer_id: BalancerId,
        balancer: Arc<dyn LoadBalancer>,
        budget: Arc<RetryBudget>,
        source: Arc<[ServiceInstance]>,
        rules: Option<Arc<ServiceRules>>,
        schemas: Option<Arc<SchemaMap>>,
        refused: &Refused,
        zone: Option<&str>,
        target: impl Fn(&ServiceInstance) -> Target,
    ) -> Self {
        let instances: Arc<[ServiceInstance]> = match rules.as_deref() {
            Some(r) if !r.weights.is_empty() => source
                .iter()
                .map(|i| {
                    let mut i = i.clone();
                    if let Some(&w) = r.weights.get(&i.address()) {
                        i.weight = w;
                    }
                    i
                })
                .collect(),
            _ => source.clone(),
        };
        let targets = instances.iter().map(target).collect();
        let shape = Shape::of(&instances, rules.as_deref(), zone);
        let methods = schemas.as_deref().and_then(|s| MethodMap::of(&instances, s, refused));
        Self {
            balancer_id,
            balancer,
            source,
            rules,
            schemas,
            methods,
            instances,
            targets,
            budget,
            shape,
        }
    }

    /// Whether this route serves `source` under `rules` and `schemas` with the balancer `id`.
    pub(crate) fn is_for(
        &self,
        id: BalancerId,
        source: &Arc<[ServiceInstance]>,
        rules: &Option<Arc<ServiceRules>>,
        schemas: &Option<Arc<SchemaMap>>,
    ) -> bool {
        self.balancer_id == id
            && Arc::ptr_eq(&self.source, source)
            && same(&self.rules, rules)
            && same(&self.schemas, schemas)
    }

    /// The instances known to lack `method`; `None` when every instance may have it.
    pub(crate) fn lacking(&self, method: &str) -> Option<&[bool]> {
        self.methods.as_ref()?.lacking(method)
    }

    /// Whether some instance has `method` but is refused it by the strict schema check.
    pub(crate) fn refuses(&self, method: &str) -> bool {
        self.methods.as_ref().is_some_and(|m| m.refuses(method))
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

/// Whether two optional shared values are the same one.
fn same<T: ?Sized>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// The instances one round of a call may try, in the balancer's order.
pub struct Candidates<'r> {
    route: &'r Route,
    hash_key: Option<u64>,
    /// The instances known to lack the call's method.
    lacking: Option<&'r [bool]>,
    /// The tag group the call asks for (metadata `route-tag`), if the rules have it.
    tag: Option<&'r [bool]>,
    /// The first pick, kept inline: most calls never fail over and allocate nothing.
    first: Option<usize>,
    /// Later picks, after failed attempts.
    more: Vec<usize>,
    /// Picks the instances' circuit breakers refused.
    refused: usize,
}

impl<'r> Candidates<'r> {
    /// Candidates from `route` for a call with `hash_key` and, maybe, a route tag, never
    /// among the instances `lacking` marks (those known to lack the call's method, see
    /// [`Route::lacking`]).
    pub fn new(route: &'r Route, lacking: Option<&'r [bool]>, hash_key: Option<u64>, route_tag: Option<&str>) -> Self {
        let tag = route_tag.and_then(|t| route.shape.as_ref()?.tags.get(t).map(Vec::as_slice));
        Self {
            route,
            hash_key,
            lacking,
            tag,
            first: None,
            more: Vec::new(),
            refused: 0,
        }
    }

    /// The error of a call that found no instance to try: every one was refused by its
    /// circuit breaker (overloaded: the call was not sent), or there was none.
    pub fn none_left<E>(&self) -> RpcError<E> {
        match self.refused {
            0 => RpcError::NoInstances("no instance to try".to_owned()),
            _ => RpcError::Overloaded,
        }
    }

    /// Number of instances tried so far.
    pub fn tried(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    /// Whether every instance has been tried (or is disabled, or lacks the method).
    pub fn exhausted(&self) -> bool {
        (0..self.route.len()).all(|i| self.was_tried(i) || self.disabled(i))
    }

    fn was_tried(&self, index: usize) -> bool {
        self.first == Some(index) || self.more.contains(&index)
    }

    /// Whether the instance may never take this call: disabled by the rules, or known to
    /// lack its method.
    fn disabled(&self, index: usize) -> bool {
        self.route.shape.as_ref().is_some_and(|s| s.disabled[index]) || self.lacking.is_some_and(|l| l[index])
    }

    /// Whether the instance may take this call: untried, enabled, healthy, neither leaving
    /// nor unresponsive.
    fn usable(&self, i: usize) -> bool {
        let target = &self.route.targets[i];
        !self.was_tried(i) && !self.disabled(i) && target.health.is_available() && !target.endpoint.should_avoid()
    }

    /// The balancer's pick among the instances `allowed` lets through; warming instances are
    /// skipped with the complementary probability of their share (a warming instance picked
    /// while nothing else is allowed is taken anyway).
    fn pick(&self, allowed: &dyn Fn(usize) -> bool) -> Option<usize> {
        let route = self.route;
        let now = route.shape.as_ref().filter(|s| s.warm_from_ms > 0).map(|_| now_ms());
        let mut skipped: Vec<usize> = Vec::new();
        loop {
            let available = |i: usize| allowed(i) && !skipped.contains(&i);
            let load = |i: usize| route.targets[i].health.in_flight();
            let ctx = PickContext {
                hash_key: self.hash_key,
                available: &available,
                load: &load,
            };
            let Some(i) = route.balancer.pick(&route.instances, &ctx) else {
                return skipped.first().copied();
            };
            let share = match (now, &route.shape) {
                (Some(now), Some(shape)) => shape.warm_share(i, now),
                _ => 1.0,
            };
            if share >= 1.0 || fastrand::f64() < share {
                return Some(i);
            }
            skipped.push(i);
        }
    }
}

impl<'r> Candidates<'r> {
    /// The balancer's next pick among the untried instances (see [`Candidates::next`]).
    fn pick_next(&mut self) -> Option<&'r Target> {
        let route = self.route;
        let usable = |i: usize| self.usable(i);
        let index = match &route.shape {
            None => self.pick(&usable),
            Some(shape) => {
                // The call's tag group first, then the consumer's zone, then every instance.
                let in_tag = self.tag.map(|tag| move |i: usize| usable(i) && tag[i]);
                let in_zone = shape
                    .same_zone
                    .as_deref()
                    .map(|zone| move |i: usize| usable(i) && zone[i]);
                in_tag
                    .and_then(|f| self.pick(&f))
                    .or_else(|| in_zone.and_then(|f| self.pick(&f)))
                    .or_else(|| self.pick(&usable))
            }
        }
        .or_else(|| {
            // Every untried, enabled instance is ejected or leaving: the least recently
            // ejected rather than nothing.
            (0..route.targets.len())
                .filter(|&i| !self.was_tried(i) && !self.disabled(i))
                .min_by_key(|&i| route.targets[i].health.ejected_at())
        })?;
        match self.first {
            None => self.first = Some(index),
            Some(_) => self.more.push(index),
        }
        Some(&route.targets[index])
    }
}

impl<'r> Iterator for Candidates<'r> {
    type Item = &'r Target;

    /// The next instance to try whose circuit breaker lets the attempt through; the ones it
    /// refuses count as tried.
    fn next(&mut self) -> Option<&'r Target> {
        loop {
            let target = self.pick_next()?;
            if target.health.breaker_allows() {
                return Some(target);
            }
            self.refused += 1;
        }
    }
}
