//! The etcd backend.
//!
//! # Registrations
//!
//! Every key this process registers hangs on one lease with the configured TTL. The lease is
//! granted on the first registration and kept alive by etcd's lease keep-alive stream (see
//! the `lease` module); keys are never re-put on a timer. When the lease is lost (etcd restarted
//! without its data, wiped, or keep-alives failed for longer than the TTL) a new lease is
//! granted and every local instance is put again. A reconciler job (tokio-cron-scheduler)
//! also checks every `reconcile_secs` that each local key still exists with this process's
//! value and lease, and re-puts the ones that do not.
//!
//! Both repairs are one pass, `Shared::reconcile`, run one at a time: after a registry
//! outage the lease keeper and the reconciler usually notice the loss together, and whichever
//! runs second finds every key in place instead of putting it again, so a storm costs etcd one
//! put per key. A pass on a lease it has just granted puts every key without reading it first
//! (nothing can be on that lease yet).
//!
//! # Rules
//!
//! A service's rules are one key without a lease (see the `rules` module).
//!
//! # Discovery
//!
//! Discovery is one prefix get of `{root}/{name}:{version}/`. A watch lists the prefix, then
//! watches it from the listing's revision + 1, so no change between the two is missed (see
//! the `watch` module). A value that is not valid instance JSON is skipped with a warning naming its key.
//! Every watch of a client shares one stream (see the `hub` module).
//!
//! # Several members
//!
//! Requests require a leader; unanswered ones are hedged (see the `requests` module); members that do
//! not answer or have no leader leave the client's balancer until they do (see the `members` module).

mod hub;
mod lease;
mod members;
mod requests;
mod rules;
mod tls;
mod watch;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, KeyValue};
use tracing::{info, warn};
use waypost_core::config::{RegistryConfig, RegistryTlsConfig, Secret};
use waypost_core::metrics;
use waypost_core::registry::{
    rules_path, schema_path, service_key_in, service_path, Registry, RegistryError, RulesStream, ServiceInstance,
    WatchStream,
};
use waypost_core::schedule::PeriodicJob;
use waypost_core::BoxFuture;

use self::hub::WatchHub;
use self::lease::LeaseManager;
use self::members::MemberHealth;
use crate::local::LocalRegistrations;

pub(crate) const BACKEND: &str = "etcd";

/// Settings of an [`EtcdRegistry`].
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// `host:port` (or `http://host:port`) of each cluster member.
    pub endpoints: Vec<String>,
    /// Root of every key, e.g. `/rpc`.
    pub root: String,
    /// Lease TTL.
    pub ttl: Duration,
    /// Limit of connecting and of each request.
    pub timeout: Duration,
    /// Optional user and password.
    pub credentials: Option<(String, Secret)>,
    /// TLS files (`https` endpoints); none: plain.
    pub tls: Option<RegistryTlsConfig>,
    /// How often the reconciler checks the local registrations.
    pub reconcile_interval: Duration,
    /// How often an idle connection is pinged.
    pub keepalive_interval: Duration,
}

impl EtcdOptions {
    /// Options from the `rpc.registry` section.
    pub fn from_config(config: &RegistryConfig) -> Self {
        Self {
            endpoints: config.endpoints.clone(),
            root: config.root.clone(),
            ttl: Duration::from_secs(config.ttl_secs),
            timeout: config.timeout(),
            credentials: config.username.clone().zip(config.password.clone()),
            tls: config.tls.clone(),
            reconcile_interval: Duration::from_secs(config.reconcile_secs),
            keepalive_interval: Duration::from_millis(config.keepalive_interval_ms),
        }
    }
}

/// A [`Registry`] on etcd v3.
pub struct EtcdRegistry {
    shared: Arc<Shared>,
    reconciler: Mutex<Option<PeriodicJob>>,
}

/// State shared with the lease task and the reconciler.
pub(crate) struct Shared {
    client: Client,
    options: EtcdOptions,
    /// Instances registered by this process, by key.
    local: LocalRegistrations,
    lease: LeaseManager,
    /// Probes the members when there are several (see [`members`]).
    members: Option<MemberHealth>,
    /// The one watch stream every watch shares (see [`hub`]).
    watches: WatchHub,
    /// Held by a repair pass ([`Shared::reconcile`]), so there is one at a time.
    repairing: tokio::sync::Mutex<()>,
}

impl Shared {
    /// A request went unanswered or failed: probe the members soon.
    pub(crate) fn suspect_members(&self) {
        if let Some(members) = &self.members {
            members.suspect();
        }
    }

    /// Puts one instance's key on the current lease (granting one if needed).
    pub(crate) async fn put_instance(
        self: &Arc<Self>,
        key: &str,
        instance: &ServiceInstance,
    ) -> Result<(), RegistryError> {
        let lease = self.lease.ensure(self).await?;
        let value = instance.to_json();
        match self.put(key, &value, lease).await {
            Err(e) if is_lease_not_found(&e) => {
                // The lease vanished under us (etcd wiped): take a new one and try once more.
                self.lease.invalidate(lease);
                let lease = self.lease.ensure(self).await?;
                self.put(key, &value, lease).await
            }
            other => other.map(drop),
        }
    }

    /// Whether any instance is registered locally.
    pub(crate) fn has_local(&self) -> bool {
        !self.local.is_empty()
    }

    /// One repair pass, one at a time (see the module docs): replaces the lease if etcd no
    /// longer knows it, then re-puts every local key that is missing, changed or on another
    /// lease; returns how many it put.
    pub(crate) async fn reconcile(self: &Arc<Self>) -> Result<usize, RegistryError> {
        let _one_pass = self.repairing.lock().await;
        if !self.has_local() {
            return Ok(0);
        }
        // A lease that etcd no longer knows cannot hold keys: replace it first.
        self.lease.check_alive(self).await?;
        let before = self.lease.current();
        let lease = self.lease.ensure(self).await?;
        // Granted by this pass: no key is on it yet (but a registration made meanwhile).
        let fresh = before != Some(lease);
        let mut repaired = 0;
        for (key, instance) in self.local.snapshot() {
            let healthy = !fresh && {
                let resp = self.get(&key, None).await?;
                resp.kvs()
                    .first()
                    .is_some_and(|kv| kv.lease() == lease && kv.value() == instance.to_json().as_bytes())
            };
            // Deregistered meanwhile: nothing to repair.
            if healthy || !self.local.contains(&key) {
                continue;
            }
            if !fresh {
                warn!(%key, "registration missing or stale, putting it again");
            }
            self.put_instance(&key, &instance).await?;
            metrics::registry_reregistered(BACKEND, 1);
            repaired += 1;
        }
        Ok(repaired)
    }
}

impl EtcdRegistry {
    /// Connects to the cluster and checks that it answers within the timeout.
    pub async fn connect(options: EtcdOptions) -> Result<Self, RegistryError> {
        let endpoints: Vec<String> = options
            .endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else if options.tls.is_some() {
                    format!("https://{e}")
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        // Every request, watch and keep-alive requires a leader: a member cut off from its
        // peers refuses them (and cancels its watches) instead of serving stale data, so they
        // move to a member of the majority.
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.timeout)
            .with_keep_alive(options.keepalive_interval, options.timeout)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let Some((user, password)) = &options.credentials {
            // Tokens expire (etcd's JWT tokens after 5 minutes by default; simple tokens when
            // idle): a request refused for an invalid token logs in again and is retried,
            // watches and lease keep-alives included.
            connect = connect
                .with_user(user.clone(), password.expose().to_owned())
                .with_auto_token_refresh(true);
        }
        if let Some(tls) = &options.tls {
            connect = connect.with_tls(tls::options(tls).await?);
        }
        let client =
            match tokio::time::timeout(options.timeout, Client::connect(&endpoints, Some(connect.clone()))).await {
                Ok(Ok(client)) => client,
                Ok(Err(e)) => {
                    let operation = match options.tls {
                        Some(_) => "connect over TLS",
                        None => "connect in plain text (an etcd serving TLS needs rpc.registry.tls)",
                    };
                    return Err(unavailable(&options.endpoints, operation, e));
                }
                Err(_) => {
                    return Err(RegistryError::timed_out(
                        BACKEND,
                        &options.endpoints,
                        "connect",
                        options.timeout,
                    ))
                }
            };
        // A member is probed once per request timeout (a member silent for longer than a
        // request may wait is left), each probe within a quarter of it (as requests hedge).
        let members = MemberHealth::start(
            client.clone(),
            &endpoints,
            connect,
            options.timeout,
            options.timeout / 4,
        );
        let removals = members.as_ref().map(MemberHealth::removals);
        let shared = Arc::new_cyclic(|weak| Shared {
            watches: WatchHub::start(weak.clone(), options.endpoints.clone(), removals, options.timeout / 4),
            client,
            options,
            local: LocalRegistrations::default(),
            lease: LeaseManager::default(),
            members,
            repairing: tokio::sync::Mutex::new(()),
        });
        // Fail fast when no endpoint answers.
        shared
            .get(
                &shared.options.root,
                Some(GetOptions::new().with_keys_only().with_limit(1)),
            )
            .await?;
        let weak = Arc::downgrade(&shared);
        let reconciler = PeriodicJob::start("etcd reconciler", shared.options.reconcile_interval, move || {
            let weak = weak.clone();
            async move {
                let Some(shared) = weak.upgrade() else { return };
                match shared.reconcile().await {
                    Ok(0) => {}
                    Ok(n) => info!(repaired = n, "reconciler re-registered missing instances"),
                    Err(e) => warn!(error = %e, "reconciler could not check registrations"),
                }
            }
        })
        .await
        .map_err(|e| {
            RegistryError::from_backend(BACKEND, &shared.options.endpoints, "start the reconciler", e, false)
        })?;
        Ok(Self {
            shared,
            reconciler: Mutex::new(Some(reconciler)),
        })
    }

    /// The lease this process's keys hang on, if one is granted.
    pub fn lease_id(&self) -> Option<i64> {
        self.shared.lease.current()
    }

    fn rules_key(&self, service_key: &str) -> String {
        rules_path(&self.shared.options.root, service_key)
    }

    fn prefix(&self, service_key: &str) -> String {
        format!("{}/", service_path(&self.shared.options.root, service_key))
    }
}

impl Registry for EtcdRegistry {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn endpoints(&self) -> String {
        self.shared.options.endpoints.join(",")
    }

    fn register<'a>(&'a self, instance: &'a ServiceInstance) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let key = instance.path(&self.shared.options.root);
            let put = self.shared.put_instance(&key, instance);
            self.shared.local.register(&key, instance, put).await
        })
    }

    fn deregister<'a>(&'a self, instance: &'a ServiceInstance) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let key = instance.path(&self.shared.options.root);
            self.shared.local.forget(&key);
            self.shared.delete(&key).await?;
            info!(%key, "deregistered");
            Ok(())
        })
    }

    fn discover<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<Vec<ServiceInstance>, RegistryError>> {
        Box::pin(async move {
            let prefix = self.prefix(service_key);
            let resp = self.shared.get(&prefix, Some(GetOptions::new().with_prefix())).await?;
            Ok(parse_instances(service_key, &prefix, resp.kvs()))
        })
    }

    fn services(&self) -> BoxFuture<'_, Result<Vec<String>, RegistryError>> {
        Box::pin(async move {
            let root = &self.shared.options.root;
            let prefix = format!("{}/", root.trim_end_matches('/'));
            let resp = self
                .shared
                .get(&prefix, Some(GetOptions::new().with_prefix().with_keys_only()))
                .await?;
            let keys: BTreeSet<String> = resp
                .kvs()
                .iter()
                .filter_map(|kv| kv.key_str().ok())
                .filter_map(|key| service_key_in(root, key))
                .map(str::to_owned)
                .collect();
            Ok(keys.into_iter().collect())
        })
    }

    fn watch<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<WatchStream, RegistryError>> {
        Box::pin(watch::start(
            self.shared.clone(),
            service_key.to_owned(),
            self.prefix(service_key),
        ))
    }

    fn rules_location(&self, service_key: &str) -> String {
        self.rules_key(service_key)
    }

    fn get_rules<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<Option<String>, RegistryError>> {
        Box::pin(async move { rules::get(&self.shared, &self.rules_key(service_key)).await })
    }

    fn put_rules<'a>(&'a self, service_key: &'a str, rules: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move { self.shared.put_plain(&self.rules_key(service_key), rules).await })
    }

    fn delete_rules<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move { self.shared.delete(&self.rules_key(service_key)).await })
    }

    fn watch_rules<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<RulesStream, RegistryError>> {
        Box::pin(rules::watch(self.shared.clone(), self.rules_key(service_key)))
    }

    fn put_schema<'a>(
        &'a self,
        service_key: &'a str,
        fingerprint: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let key = schema_path(&self.shared.options.root, service_key, fingerprint);
            self.shared.put_plain(&key, text).await
        })
    }

    fn get_schema<'a>(
        &'a self,
        service_key: &'a str,
        fingerprint: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, RegistryError>> {
        Box::pin(async move {
            let key = schema_path(&self.shared.options.root, service_key, fingerprint);
            rules::get(&self.shared, &key).await
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            let job = self.reconciler.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(job) = job {
                job.stop().await;
            }
            let keys = self.shared.local.take_all();
            let mut result = Ok(());
            for key in keys {
                if let Err(e) = self.shared.delete(&key).await {
                    warn!(%key, error = %e, "could not delete key on close; the lease will expire it");
                    result = Err(e);
                }
            }
            self.shared.lease.revoke(&self.shared).await?;
            result
        })
    }
}

/// Parses the key-values under `prefix`, skipping (with a warning) values that are not valid
/// instances of `service_key`.
pub(crate) fn parse_instances(service_key: &str, prefix: &str, kvs: &[KeyValue]) -> Vec<ServiceInstance> {
    kvs.iter()
        .filter_map(|kv| parse_instance(service_key, prefix, kv))
        .collect()
}

pub(crate) fn parse_instance(service_key: &str, prefix: &str, kv: &KeyValue) -> Option<ServiceInstance> {
    let key = String::from_utf8_lossy(kv.key());
    let address = key.strip_prefix(prefix)?;
    match ServiceInstance::from_json(kv.value(), service_key, address) {
        Ok(instance) => Some(instance),
        Err(e) => {
            warn!(%key, error = %e, "skipping a registry value that is not a valid instance");
            None
        }
    }
}

/// gRPC status codes, as etcd uses them.
mod code {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const NOT_FOUND: i32 = 5;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// The gRPC status code of an etcd error, when it is a status.
pub(crate) fn grpc_code(e: &etcd_client::Error) -> Option<i32> {
    match e {
        etcd_client::Error::GRpcStatus(status) => Some(i32::from(status.code())),
        _ => None,
    }
}

/// The registry error for a failed etcd `operation`: an authentication failure (a token etcd
/// no longer accepts, missing permission, or wrong credentials at connect) gets its own kind.
pub(crate) fn unavailable(endpoints: &[String], operation: &'static str, e: etcd_client::Error) -> RegistryError {
    let auth = match grpc_code(&e) {
        Some(code::UNAUTHENTICATED | code::PERMISSION_DENIED) => true,
        // etcd answers wrong credentials with InvalidArgument ("authentication failed").
        Some(code::INVALID_ARGUMENT) => operation == "connect",
        _ => false,
    };
    RegistryError::from_backend(BACKEND, endpoints, operation, e, auth)
}

/// Whether etcd refused a request because its lease no longer exists (NotFound: the only
/// NotFound a put with a lease can get).
fn is_lease_not_found(e: &RegistryError) -> bool {
    e.backend_error()
        .and_then(|b| b.downcast_ref::<etcd_client::Error>())
        .and_then(grpc_code)
        == Some(code::NOT_FOUND)
}
