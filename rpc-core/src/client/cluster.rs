//! The cluster invoker: finds the instances of a service, and runs the retry step over the
//! fail-over step over single attempts (see the [module docs](super)).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

use super::hedge::{self, Latencies};
use super::methods::{MethodSet, Refused};
use super::retry::FromApplication;
use super::route::{BalancerChoice, BalancerId, Candidates, Route, Target};
use super::{failover, retry, CallRequest, ClientBuildError, ConnectionPool, Invoker, StreamOpen};
use crate::balance::LoadBalancer;
use crate::config::SchemaCheck;
use crate::error::RpcError;
use crate::fault::{BudgetOptions, InstanceHealth, RetryBudget};
use crate::future::BoxFuture;
use crate::protocol::Status;
use crate::registry::{DiscoveryCache, SchemaMap, ServiceInstance};
use crate::reply::Reply;
use crate::rules::ServiceRules;
use crate::schema::{incompatible_methods, ServiceSchema};
use crate::stream::RawStream;
use futures_util::future::Either;

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
    pub fn address(addr: &str) -> Result<Self, ClientBuildError> {
        let invalid = |problem: String| ClientBuildError::InvalidAddress(problem);
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| invalid(format!("\"{addr}\" is not host:port")))?;
        let port: u16 = port
            .parse()
            .map_err(|_| invalid(format!("\"{addr}\": \"{port}\" is not a port number")))?;
        if host.is_empty() || port == 0 {
            return Err(invalid(format!(
                "\"{addr}\" is not host:port with a host and a port above 0"
            )));
        }
        Ok(Self::Fixed(Arc::from(vec![ServiceInstance::new("", "", host, port)])))
    }

    /// The schemas `service`'s instances name, when the source has them (the discovery cache
    /// does).
    fn schemas(&self, service: &str) -> Option<Arc<SchemaMap>> {
        match self {
            Self::Fixed(_) => None,
            Self::Discovery(cache) => cache.schemas(service),
        }
    }

    /// The text of `service`'s rules, when the source has rules (the discovery cache does).
    fn rules_text(&self, service: &str) -> Option<Arc<str>> {
        match self {
            Self::Fixed(_) => None,
            Self::Discovery(cache) => cache.rules(service),
        }
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
                    .map_err(|e| RpcError::Registry(Box::new(e)))
            }
        }
    }
}

/// What one service's route is made from.
struct RouteInputs<'a> {
    service: &'a str,
    instances: &'a Arc<[ServiceInstance]>,
    rules: Option<Arc<ServiceRules>>,
    schemas: Option<Arc<SchemaMap>>,
}

impl RouteInputs<'_> {
    /// Whether `route` was made from these inputs with the balancer `id`.
    fn made(&self, route: &Route, id: BalancerId) -> bool {
        route.is_for(id, self.instances, &self.rules, &self.schemas)
    }
}

/// What a [`ClusterInvoker`] is built with besides its instances, pool and health.
#[derive(Clone)]
pub struct ClusterOptions {
    /// Balancers of the user's own, by service (else the configured kinds).
    pub balancers: BalancerChoice,
    /// Each service's retry budget.
    pub budget: BudgetOptions,
    /// How long an instance that left discovery keeps its connection and health record.
    pub departed_grace: Duration,
    /// The consumer's zone: calls prefer instances registered in it while any is usable.
    pub zone: Option<String>,
    /// What to do with providers whose schema is incompatible with the one a client declared.
    pub schema_check: SchemaCheck,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            balancers: BalancerChoice::default(),
            budget: BudgetOptions::default(),
            departed_grace: Duration::from_secs(30),
            zone: None,
            schema_check: SchemaCheck::Warn,
        }
    }
}

/// An [`Invoker`] over a set of instances, with load balancing, retry, fail-over, a retry
/// budget and outlier ejection.
///
/// Over the discovery cache it also owns a sweeper task: an instance that has been gone from
/// discovery for the departed grace loses its connection (closed) and its health record, and
/// routes built from an older instance list are dropped, so a long-lived consumer keeps
/// nothing for instances that left.
pub struct ClusterInvoker {
    inner: Arc<Inner>,
    _sweeper: Option<AbortOnDropHandle<()>>,
}

struct Inner {
    source: InstanceSource,
    pool: Arc<ConnectionPool>,
    health: Arc<InstanceHealth>,
    options: ClusterOptions,
    routes: DashMap<String, Arc<Route>>,
    /// Per service: the rules text last seen, and the last valid rules.
    rules: DashMap<String, RulesSeen>,
    /// Per service: its schema as this process's clients call it.
    declared: DashMap<String, Arc<ServiceSchema>>,
    /// Per (service, provider schema fingerprint): the methods incompatible with the declared
    /// schema, checked (and warned about) once; forgotten when no instance names it.
    checked: Mutex<HashMap<(String, String), Arc<MethodSet>>>,
    /// Per service with hedged calls: their recent latencies (the adaptive hedge delay).
    latencies: DashMap<String, Arc<Latencies>>,
}

/// A service's rules text as last seen, and the last valid rules (which stay in force while
/// the text is invalid).
type RulesSeen = (Option<Arc<str>>, Option<Arc<ServiceRules>>);

impl ClusterInvoker {
    /// Calls instances from `source`, connected through `pool`, tracked in `health`, with
    /// default options (the configured balancer kinds, a 20% retry budget).
    pub fn new(source: InstanceSource, pool: Arc<ConnectionPool>, health: Arc<InstanceHealth>) -> Self {
        Self::with_options(source, pool, health, ClusterOptions::default())
    }

    /// Calls one fixed address (`host:port`) through `pool`.
    pub fn direct(addr: &str, pool: Arc<ConnectionPool>) -> Result<Self, ClientBuildError> {
        let source = InstanceSource::address(addr)?;
        Ok(Self::new(source, pool, Arc::new(InstanceHealth::default())))
    }

    /// Like [`ClusterInvoker::new`], with `options`. Over the discovery cache, starts the
    /// sweeper of departed instances (on the current tokio runtime).
    pub fn with_options(
        source: InstanceSource,
        pool: Arc<ConnectionPool>,
        health: Arc<InstanceHealth>,
        options: ClusterOptions,
    ) -> Self {
        let discovers = matches!(source, InstanceSource::Discovery(_));
        let inner = Arc::new(Inner {
            source,
            pool,
            health,
            options,
            routes: DashMap::new(),
            rules: DashMap::new(),
            declared: DashMap::new(),
            checked: Mutex::new(HashMap::new()),
            latencies: DashMap::new(),
        });
        let sweeper = match tokio::runtime::Handle::try_current() {
            Ok(runtime) if discovers => Some(AbortOnDropHandle::new(
                runtime.spawn(sweep_departed(Arc::downgrade(&inner))),
            )),
            _ => None,
        };
        Self {
            inner,
            _sweeper: sweeper,
        }
    }

    /// The health of every instance called so far.
    pub fn health(&self) -> &Arc<InstanceHealth> {
        &self.inner.health
    }

    /// The retry budget of `service`, once it has been called.
    pub fn budget(&self, service: &str) -> Option<Arc<RetryBudget>> {
        self.inner.routes.get(service).map(|r| r.budget.clone())
    }
}

impl Inner {
    /// The rules in force for `service`: the current text's, or, when it is invalid, the last
    /// valid ones (the invalid text is reported once, naming its key and the problem).
    fn rules(&self, service: &str) -> Option<Arc<ServiceRules>> {
        if matches!(self.source, InstanceSource::Fixed(_)) {
            return None;
        }
        let text = self.source.rules_text(service);
        let same = |seen: &Option<Arc<str>>| match (seen, &text) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if let Some(state) = self.rules.get(service) {
            if same(&state.0) {
                return state.1.clone();
            }
        }
        let mut state = self.rules.entry(service.to_owned()).or_insert((None, None));
        if !same(&state.0) {
            let parsed = match text.as_deref().map(ServiceRules::parse) {
                None => None,
                Some(Ok(rules)) => {
                    info!(service, rules = ?rules, "routing rules in force");
                    Some(Arc::new(rules))
                }
                Some(Err(problem)) => {
                    let key = match &self.source {
                        InstanceSource::Discovery(cache) => cache.rules_location(service),
                        InstanceSource::Fixed(_) => service.to_owned(),
                    };
                    warn!(%key, %problem, "ignoring invalid routing rules; the last valid ones stay in force");
                    state.1.clone()
                }
            };
            *state = (text, parsed);
        }
        state.1.clone()
    }

    /// Per provider schema of `service`, the methods incompatible with the schema its clients
    /// declared; each schema is compared once, and warned about when it breaks a method. Only
    /// `schema_check: strict` returns them, to keep those calls away.
    fn refused(&self, service: &str, schemas: Option<&SchemaMap>) -> Refused {
        let check = self.options.schema_check;
        let (Some(schemas), Some(declared)) = (schemas, self.declared.get(service).map(|d| d.clone())) else {
            return Refused::new();
        };
        if check == SchemaCheck::Off {
            return Refused::new();
        }
        let mut checked = self.checked.lock().unwrap_or_else(PoisonError::into_inner);
        checked.retain(|(s, f), _| s != service || schemas.contains_key(f));
        let verdicts: Vec<(String, Arc<MethodSet>)> = schemas
            .iter()
            .map(|(fingerprint, theirs)| {
                let key = (service.to_owned(), fingerprint.clone());
                let methods = checked.entry(key).or_insert_with(|| {
                    let broken = incompatible_methods(&declared, theirs);
                    for (method, differences) in &broken {
                        let differences: Vec<String> =
                            differences.iter().map(|d| format!("{}: {}", d.at, d.what)).collect();
                        warn!(
                            service,
                            %fingerprint,
                            method = %method,
                            ?differences,
                            strict = check == SchemaCheck::Strict,
                            "providers with this schema cannot serve this method as this consumer calls it"
                        );
                    }
                    Arc::new(broken.into_iter().map(|(method, _)| method).collect())
                });
                (fingerprint.clone(), methods.clone())
            })
            .collect();
        if check != SchemaCheck::Strict {
            return Refused::new();
        }
        verdicts
            .into_iter()
            .filter(|(_, methods)| !methods.is_empty())
            .collect()
    }

    /// The service's route for this instance list under its balancer, rules and schemas. A
    /// route is built (or rebuilt) under its map entry's lock, so concurrent first calls share
    /// one route, one balancer and one retry budget.
    fn route(&self, call: &CallRequest<'_>, instances: &Arc<[ServiceInstance]>) -> Arc<Route> {
        let inputs = RouteInputs {
            service: call.service,
            instances,
            rules: self.rules(call.service),
            schemas: self.source.schemas(call.service),
        };
        let (id, factory) = self.options.balancers.resolve(call.service, call.policy.load_balancer);
        if let Some(route) = self.routes.get(call.service) {
            if inputs.made(&route, id) {
                return route.clone();
            }
        }
        let mut slot = self.routes.entry(call.service.to_owned()).or_insert_with(|| {
            let budget = Arc::new(RetryBudget::new(self.options.budget));
            self.build_route(id, Route::make_balancer(id, factory), budget, &inputs)
        });
        if !inputs.made(&slot, id) {
            // Keep the balancer's state (counter, ring) when only the instances, rules or
            // schemas changed, and the retry budget always.
            let balancer = if slot.balancer_id == id {
                slot.balancer.clone()
            } else {
                Route::make_balancer(id, factory)
            };
            let rebuilt = self.build_route(id, balancer, slot.budget.clone(), &inputs);
            *slot = rebuilt;
        }
        slot.clone()
    }

    fn build_route(
        &self,
        id: BalancerId,
        balancer: Arc<dyn LoadBalancer>,
        budget: Arc<RetryBudget>,
        inputs: &RouteInputs<'_>,
    ) -> Arc<Route> {
        let refused = self.refused(inputs.service, inputs.schemas.as_deref());
        Arc::new(Route::new(
            id,
            balancer,
            budget,
            inputs.instances.clone(),
            inputs.rules.clone(),
            inputs.schemas.clone(),
            &refused,
            self.options.zone.as_deref(),
            |instance: &ServiceInstance| {
                let addr = instance.address();
                Target {
                    health: self.health.stat(&addr),
                    endpoint: self.pool.endpoint(&addr),
                    addr,
                }
            },
        ))
    }

    /// One sweep: forgets instances gone from discovery for longer than the grace. `departed`
    /// remembers since when each address has been gone.
    fn sweep(&self, cache: &DiscoveryCache, departed: &mut HashMap<String, Instant>) {
        let mut live: HashSet<String> = HashSet::new();
        self.routes.retain(|service, route| match cache.cached(service) {
            Some(current) => {
                live.extend(current.iter().map(ServiceInstance::address));
                // A route built from an older list would keep departed instances' slots alive.
                Arc::ptr_eq(&route.source, &current)
            }
            None => false,
        });
        let now = Instant::now();
        let mut known: HashSet<String> = self.pool.addresses().into_iter().collect();
        known.extend(self.health.addresses());
        departed.retain(|addr, _| known.contains(addr) && !live.contains(addr));
        for addr in known {
            if live.contains(&addr) {
                continue;
            }
            let since = *departed.entry(addr.clone()).or_insert(now);
            if now.duration_since(since) >= self.options.departed_grace {
                debug!(instance = %addr, "instance left discovery; closing its connection and forgetting it");
                self.pool.remove(&addr);
                self.health.remove(&addr);
                departed.remove(&addr);
            }
        }
    }
}

/// Sweeps departed instances every half grace (at least every second, at most every 10 ms)
/// until the invoker is dropped.
async fn sweep_departed(inner: Weak<Inner>) {
    let period = match inner.upgrade() {
        Some(inner) => (inner.options.departed_grace / 2).clamp(Duration::from_millis(10), Duration::from_secs(1)),
        None => return,
    };
    let mut departed = HashMap::new();
    loop {
        tokio::time::sleep(period).await;
        let Some(inner) = inner.upgrade() else { return };
        if let InstanceSource::Discovery(cache) = &inner.source {
            inner.sweep(cache, &mut departed);
        }
    }
}

/// When one attempt of `call` ends: at the call's deadline, or sooner at the attempt timeout.
fn attempt_deadline(call: &CallRequest<'_>) -> Instant {
    match call.policy.retry.attempt_timeout {
        Some(limit) => call.deadline.min(Instant::now() + limit),
        None => call.deadline,
    }
}

/// One attempt on one instance, ending at the call's deadline or the attempt timeout; its
/// outcome feeds the instance's health. An application error comes back as
/// `RpcError::Application(reply)` for the retry step to judge.
async fn attempt(target: &Target, call: &CallRequest<'_>) -> Result<Reply, RpcError<Reply>> {
    let deadline = attempt_deadline(call);
    let reply = on_instance(target, deadline, |conn| async move {
        conn.call(
            call.service,
            call.method,
            call.serializer,
            call.body.clone(),
            deadline,
            call.policy.compression,
        )
        .await
    })
    .await?;
    match reply.status {
        Status::ApplicationError => Err(RpcError::Application(reply)),
        _ => Ok(reply),
    }
}

/// Opens a stream on one instance, waiting for its acceptance until the call's deadline or
/// the attempt timeout; its outcome feeds the instance's health.
async fn open_attempt(
    target: &Target,
    call: &CallRequest<'_>,
    open: &StreamOpen,
) -> Result<RawStream, RpcError<Reply>> {
    let accept_by = attempt_deadline(call);
    on_instance(target, accept_by, |conn| async move {
        let body = call.body.clone();
        conn.open_stream(call.service, call.method, call.serializer, body, open, accept_by)
            .await
    })
    .await
}

/// Runs `exchange` on a connection to `target` (connecting by `deadline`), counted in the
/// instance's calls in flight; its outcome feeds the instance's health.
async fn on_instance<T, F, Fut>(target: &Target, deadline: Instant, exchange: F) -> Result<T, RpcError<Reply>>
where
    F: FnOnce(Arc<super::Connection>) -> Fut,
    Fut: std::future::Future<Output = Result<T, RpcError>>,
{
    let outcome = {
        // At its limit of calls in flight: the call never left, it may go elsewhere.
        let Some(_in_flight) = target.health.begin() else {
            return Err(RpcError::Overloaded);
        };
        crate::context::export::note_peer(&target.addr);
        match target.endpoint.connection(Some(deadline)).await {
            Ok(conn) => exchange(conn).await,
            Err(e) => Err(e),
        }
    };
    match outcome {
        Ok(answer) => {
            target.health.success();
            Ok(answer)
        }
        Err(e) => {
            target.health.failure(&e);
            Err(e.into_typed())
        }
    }
}

/// What one attempt on one instance does: a call, or opening a stream.
trait Attempt {
    /// What a successful attempt answers.
    type Output: FromApplication;

    /// Whether the attempt may be hedged (a call; a stream is never sent twice).
    const HEDGED: bool;

    /// One attempt of `call` on `target`.
    fn attempt<'t>(
        &'t self,
        target: &'t Target,
        call: &'t CallRequest<'t>,
    ) -> impl std::future::Future<Output = Result<Self::Output, RpcError<Reply>>> + 't;
}

/// A call's attempt: send it, wait for its reply.
struct Unary;

impl Attempt for Unary {
    type Output = Reply;
    const HEDGED: bool = true;

    fn attempt<'t>(
        &'t self,
        target: &'t Target,
        call: &'t CallRequest<'t>,
    ) -> impl std::future::Future<Output = Result<Reply, RpcError<Reply>>> + 't {
        attempt(target, call)
    }
}

/// A stream's attempt: open it, wait for its acceptance.
struct Open<'o>(&'o StreamOpen);

impl Attempt for Open<'_> {
    type Output = RawStream;
    const HEDGED: bool = false;

    fn attempt<'t>(
        &'t self,
        target: &'t Target,
        call: &'t CallRequest<'t>,
    ) -> impl std::future::Future<Output = Result<RawStream, RpcError<Reply>>> + 't {
        open_attempt(target, call, self.0)
    }
}

impl Inner {
    /// Runs an attempt of `kind` under the service's route: its instances, rules and schemas, then the
    /// retry step over the fail-over step (see the module docs).
    async fn run<A: Attempt>(&self, call: &CallRequest<'_>, kind: A) -> Result<A::Output, RpcError> {
        let instances = self.source.instances(call.service, call.deadline).await?;
        if instances.is_empty() {
            return Err(RpcError::NoInstances(call.service.to_owned()));
        }
        let route = self.route(call, &instances);
        let lacking = route.lacking(call.method);
        if lacking.is_some_and(|l| !l.contains(&false)) {
            return Err(match route.refuses(call.method) {
                true => RpcError::NoInstances(format!(
                    "{} (no instance's schema serves {} as this consumer calls it; schema_check: strict)",
                    call.service, call.method
                )),
                // Every instance's schema lacks the method: what each would answer.
                false => RpcError::MethodNotFound {
                    service: call.service.to_owned(),
                    method: call.method.to_owned(),
                },
            });
        }
        if !route.is_empty() && Candidates::new(&route, lacking, None, None).exhausted() {
            return Err(RpcError::NoInstances(format!(
                "{} (every instance is disabled by its rules)",
                call.service
            )));
        }
        route.budget.deposit();
        // Hedging, for a call that may be sent twice, once its delay is known.
        let hedged = call.policy.hedge.filter(|_| A::HEDGED);
        let latencies = hedged.map(|_| self.latencies(call.service));
        let hedge = hedged.and_then(|hedge| {
            let delay = hedge.delay.or_else(|| latencies.as_ref()?.delay())?;
            Some((hedge, delay))
        });
        // Only hedged calls read the clock for their latency.
        let started = latencies.is_some().then(Instant::now);
        let answer = retry::run(call, &route.budget, |_round| {
            let candidates = Candidates::new(&route, lacking, call.hash_key, call.route_tag);
            match hedge {
                Some((hedge, delay)) => {
                    Either::Left(hedge::run(candidates, call, &route.budget, hedge, delay, |target| {
                        kind.attempt(target, call)
                    }))
                }
                None => Either::Right(failover::run(candidates, call, &route.budget, |target| {
                    kind.attempt(target, call)
                })),
            }
        })
        .await;
        if let (Some(latencies), Some(started), Ok(_)) = (&latencies, started, &answer) {
            latencies.record(started.elapsed());
        }
        answer
    }

    /// The recent latencies of `service`'s hedged calls.
    fn latencies(&self, service: &str) -> Arc<Latencies> {
        if let Some(latencies) = self.latencies.get(service) {
            return latencies.clone();
        }
        self.latencies.entry(service.to_owned()).or_default().clone()
    }
}

impl Invoker for ClusterInvoker {
    fn invoke<'a>(&'a self, call: &'a CallRequest<'a>) -> BoxFuture<'a, Result<Reply, RpcError>> {
        Box::pin(self.inner.run(call, Unary))
    }

    fn open_stream<'a>(
        &'a self,
        call: &'a CallRequest<'a>,
        open: &'a StreamOpen,
    ) -> BoxFuture<'a, Result<RawStream, RpcError>> {
        Box::pin(self.inner.run(call, Open(open)))
    }

    fn rules(&self, service: &str) -> Option<Arc<ServiceRules>> {
        self.inner.rules(service)
    }

    fn declare_schema(&self, service: &str, schema: fn() -> ServiceSchema) {
        if !self.inner.declared.contains_key(service) {
            self.inner
                .declared
                .entry(service.to_owned())
                .or_insert_with(|| Arc::new(schema()));
        }
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
