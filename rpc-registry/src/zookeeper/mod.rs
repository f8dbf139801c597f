//! The ZooKeeper backend.
//!
//! # Layout
//!
//! The same as etcd's: a persistent node `{root}/{name}:{version}` per service (created on
//! demand, with its parents) and one ephemeral node `{host}:{port}` per instance under it,
//! holding the instance JSON (readable with `zkCli.sh get`).
//!
//! # Sessions
//!
//! The ephemeral nodes live as long as this process's session. The client library reconnects
//! a lost connection within the session by itself; a supervisor task (see the `session` module) watches
//! the session state and, when the session ends for good (expired, closed under us, or
//! unreachable for longer than the session timeout), opens a new session with capped backoff
//! and creates every local ephemeral node again. Graceful [`Registry::close`] deletes the nodes
//! and closes the session.
//!
//! # Watches
//!
//! ZooKeeper watches fire once. A watch (see the `watch` module) arms a child watch on the service node
//! and a data watch on every instance node, reads them, and sends the result as a snapshot; when
//! any of those watches fires it arms them again *before* reading again, so no change between
//! two arms is lost.

mod rules;
mod session;
mod watch;

use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio_util::task::AbortOnDropHandle;
use waypost_core::config::{RegistryConfig, Secret};
use waypost_core::registry::{
    is_service_key, rules_path, schema_path, service_path, Registry, RegistryError, RulesStream, ServiceInstance,
    WatchStream,
};
use waypost_core::BoxFuture;

use crate::local::LocalRegistrations;
use tracing::{info, warn};
use zookeeper_client as zk;

pub(crate) const BACKEND: &str = "zookeeper";

/// Settings of a [`ZookeeperRegistry`].
#[derive(Debug, Clone)]
pub struct ZookeeperOptions {
    /// `host:port` of each ensemble member.
    pub servers: Vec<String>,
    /// Root of every node, e.g. `/rpc`.
    pub root: String,
    /// Session timeout: how long after a crash this process's nodes disappear.
    pub session_timeout: Duration,
    /// Limit of connecting and of each request.
    pub timeout: Duration,
    /// Digest authentication (user, password): the nodes this process creates are then
    /// writable by that identity only, readable by everyone.
    pub credentials: Option<(String, Secret)>,
}

/// With digest credentials: full rights for the identity that created a node, read for
/// everyone else.
static OWNER_WRITES_ANYONE_READS: [zk::Acl; 2] = [
    zk::Acl::new_const(zk::Permission::ALL, "auth", ""),
    zk::Acl::new_const(zk::Permission::READ, "world", "anyone"),
];

impl ZookeeperOptions {
    /// The ACLs of the nodes this process creates.
    pub(crate) fn acls(&self) -> zk::Acls<'static> {
        match self.credentials {
            Some(_) => zk::Acls::new(&OWNER_WRITES_ANYONE_READS),
            None => zk::Acls::anyone_all(),
        }
    }

    /// Options from the `rpc.registry` section; the session timeout is
    /// `session_timeout_ms`, or `ttl_secs` when that is not set.
    pub fn from_config(config: &RegistryConfig) -> Self {
        Self {
            servers: config.endpoints.clone(),
            root: config.root.clone(),
            session_timeout: config.session_timeout(),
            timeout: config.timeout(),
            credentials: config.username.clone().zip(config.password.clone()),
        }
    }
}

/// A [`Registry`] on ZooKeeper.
pub struct ZookeeperRegistry {
    shared: Arc<Shared>,
    _supervisor: AbortOnDropHandle<()>,
}

pub(crate) struct Shared {
    options: ZookeeperOptions,
    /// The live client; replaced when a new session is opened, `None` once closed.
    client: RwLock<Option<zk::Client>>,
    /// Instances registered by this process, by node path.
    local: LocalRegistrations,
    /// Bumped whenever a new session replaces the old one.
    generation: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    /// A handle to the current session. Hold it only for a request: the session closes when
    /// the last handle is dropped after [`Registry::close`].
    pub(crate) fn client(&self) -> Result<zk::Client, RegistryError> {
        self.client
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(RegistryError::Closed)
    }

    /// A handle to a live session: when the current session has ended, waits (up to the
    /// timeout) for the supervisor to open the next one.
    pub(crate) async fn live_client(&self) -> Result<zk::Client, RegistryError> {
        let mut generations = self.generation.subscribe();
        let client = self.client()?;
        if !session::is_terminal(client.state()) {
            return Ok(client);
        }
        drop(client);
        let seen = *generations.borrow_and_update();
        let renewed = tokio::time::timeout(self.options.timeout, async {
            generations.wait_for(|g| *g != seen).await.is_ok()
        })
        .await;
        match renewed {
            Ok(true) => self.client(),
            Ok(false) => Err(RegistryError::Closed),
            Err(_) => Err(self.timeout_error("waiting for a new session")),
        }
    }

    fn replace_client(&self, client: zk::Client) -> bool {
        {
            let mut slot = self.client.write().unwrap_or_else(PoisonError::into_inner);
            if slot.is_none() {
                return false; // closed meanwhile
            }
            *slot = Some(client);
        }
        self.generation.send_modify(|g| *g += 1);
        true
    }

    fn take_client(&self) -> Option<zk::Client> {
        self.client.write().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// Deletes a node; a node that is already gone is fine.
    pub(crate) async fn delete_node(&self, client: &zk::Client, path: &str) -> Result<(), RegistryError> {
        match tokio::time::timeout(self.options.timeout, client.delete(path, None)).await {
            Ok(Ok(())) | Ok(Err(zk::Error::NoNode)) => Ok(()),
            Ok(Err(e)) => Err(self.unavailable("delete", e)),
            Err(_) => Err(self.timeout_error("delete")),
        }
    }

    pub(crate) fn timeout_error(&self, operation: &'static str) -> RegistryError {
        RegistryError::timed_out(BACKEND, &self.options.servers, operation, self.options.timeout)
    }

    /// The error for a failed `operation`.
    pub(crate) fn unavailable(&self, operation: &'static str, e: zk::Error) -> RegistryError {
        unavailable(&self.options.servers, operation, e)
    }

    /// Runs one request under the configured timeout.
    pub(crate) async fn timed<T>(
        &self,
        operation: &'static str,
        request: impl Future<Output = Result<T, zk::Error>>,
    ) -> Result<T, RegistryError> {
        match tokio::time::timeout(self.options.timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.unavailable(operation, e)),
            Err(_) => Err(self.timeout_error(operation)),
        }
    }

    /// Creates (or replaces) the ephemeral node of one instance in the current session.
    pub(crate) async fn put_instance(&self, path: &str, instance: &ServiceInstance) -> Result<(), RegistryError> {
        let client = self.live_client().await?;
        let parent = service_path(&self.options.root, &instance.service_key());
        let persistent = zk::CreateMode::Persistent.with_acls(self.options.acls());
        self.timed("mkdir", client.mkdir(&parent, &persistent)).await?;
        let ephemeral = zk::CreateMode::Ephemeral.with_acls(self.options.acls());
        let data = instance.to_json();
        match tokio::time::timeout(self.options.timeout, client.create(path, data.as_bytes(), &ephemeral)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(zk::Error::NodeExists)) => {
                // Left by an earlier session of ours (or a process that used this address):
                // replace it so it hangs on the current session.
                let (_, stat) = self.timed("get", client.get_data(path)).await?;
                if stat.ephemeral_owner == client.session_id().0 {
                    self.timed("set", client.set_data(path, data.as_bytes(), None)).await?;
                    return Ok(());
                }
                self.delete_node(&client, path).await?;
                self.timed("create", client.create(path, data.as_bytes(), &ephemeral))
                    .await
                    .map(drop)
            }
            Ok(Err(e)) => Err(self.unavailable("create", e)),
            Err(_) => Err(self.timeout_error("create")),
        }
    }

    /// Creates every local node again (after a new session was opened).
    pub(crate) async fn put_all(&self) -> Result<usize, RegistryError> {
        self.local
            .put_all(|path, instance| async move { self.put_instance(&path, &instance).await })
            .await
    }
}

impl ZookeeperRegistry {
    /// Opens a session with the ensemble (failing within the timeout when no server answers).
    pub async fn connect(options: ZookeeperOptions) -> Result<Self, RegistryError> {
        let client = session::open(&options).await?;
        let shared = Arc::new(Shared {
            options,
            client: RwLock::new(Some(client)),
            local: LocalRegistrations::default(),
            generation: tokio::sync::watch::channel(0).0,
        });
        let supervisor = tokio::spawn(session::supervise(Arc::downgrade(&shared)));
        Ok(Self {
            shared,
            _supervisor: AbortOnDropHandle::new(supervisor),
        })
    }

    fn rules_path(&self, service_key: &str) -> String {
        rules_path(&self.shared.options.root, service_key)
    }

    /// The current session (its id and password), e.g. to expire it from another client.
    pub fn session(&self) -> Result<zk::SessionInfo, RegistryError> {
        Ok(self.shared.client()?.session().clone())
    }
}

impl Registry for ZookeeperRegistry {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn endpoints(&self) -> String {
        self.shared.options.servers.join(",")
    }

    fn register<'a>(&'a self, instance: &'a ServiceInstance) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let path = instance.path(&self.shared.options.root);
            let put = self.shared.put_instance(&path, instance);
            self.shared.local.register(&path, instance, put).await
        })
    }

    fn deregister<'a>(&'a self, instance: &'a ServiceInstance) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let path = instance.path(&self.shared.options.root);
            self.shared.local.forget(&path);
            let client = self.shared.live_client().await?;
            self.shared.delete_node(&client, &path).await?;
            info!(%path, "deregistered");
            Ok(())
        })
    }

    fn services(&self) -> BoxFuture<'_, Result<Vec<String>, RegistryError>> {
        Box::pin(async move {
            let root = &self.shared.options.root;
            let client = self.shared.client()?;
            let mut children = match tokio::time::timeout(self.shared.options.timeout, client.list_children(root)).await
            {
                Ok(Ok(children)) => children,
                Ok(Err(zk::Error::NoNode)) => return Ok(Vec::new()),
                Ok(Err(e)) => return Err(self.shared.unavailable("list", e)),
                Err(_) => return Err(self.shared.timeout_error("list")),
            };
            children.retain(|child| is_service_key(child));
            children.sort();
            Ok(children)
        })
    }

    fn discover<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<Vec<ServiceInstance>, RegistryError>> {
        Box::pin(async move {
            let parent = service_path(&self.shared.options.root, service_key);
            let client = self.shared.client()?;
            let children = match tokio::time::timeout(self.shared.options.timeout, client.list_children(&parent)).await
            {
                Ok(Ok(children)) => children,
                Ok(Err(zk::Error::NoNode)) => return Ok(Vec::new()),
                Ok(Err(e)) => return Err(self.shared.unavailable("list", e)),
                Err(_) => return Err(self.shared.timeout_error("list")),
            };
            let mut found = Vec::with_capacity(children.len());
            for child in children {
                let path = format!("{parent}/{child}");
                match tokio::time::timeout(self.shared.options.timeout, client.get_data(&path)).await {
                    Ok(Ok((data, _))) => {
                        if let Some(instance) = parse_instance(service_key, &path, &child, &data) {
                            found.push(instance);
                        }
                    }
                    // Removed between the listing and the read.
                    Ok(Err(zk::Error::NoNode)) => {}
                    Ok(Err(e)) => return Err(self.shared.unavailable("get", e)),
                    Err(_) => return Err(self.shared.timeout_error("get")),
                }
            }
            Ok(found)
        })
    }

    fn watch<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<WatchStream, RegistryError>> {
        Box::pin(watch::start(self.shared.clone(), service_key.to_owned()))
    }

    fn rules_location(&self, service_key: &str) -> String {
        self.rules_path(service_key)
    }

    fn get_rules<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<Option<String>, RegistryError>> {
        Box::pin(async move { rules::get(&self.shared, &self.rules_path(service_key)).await })
    }

    fn put_rules<'a>(&'a self, service_key: &'a str, text: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move { rules::put(&self.shared, &self.rules_path(service_key), text).await })
    }

    fn delete_rules<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move { rules::delete(&self.shared, &self.rules_path(service_key)).await })
    }

    fn watch_rules<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<RulesStream, RegistryError>> {
        Box::pin(rules::watch(self.shared.clone(), self.rules_path(service_key)))
    }

    fn put_schema<'a>(
        &'a self,
        service_key: &'a str,
        fingerprint: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let path = schema_path(&self.shared.options.root, service_key, fingerprint);
            rules::put(&self.shared, &path, text).await
        })
    }

    fn get_schema<'a>(
        &'a self,
        service_key: &'a str,
        fingerprint: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, RegistryError>> {
        Box::pin(async move {
            let path = schema_path(&self.shared.options.root, service_key, fingerprint);
            rules::get(&self.shared, &path).await
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            let paths = self.shared.local.take_all();
            let Some(client) = self.shared.take_client() else {
                return Ok(());
            };
            let mut result = Ok(());
            for path in paths {
                if let Err(e) = self.shared.delete_node(&client, &path).await {
                    warn!(%path, error = %e, "could not delete node on close; the session's end removes it");
                    result = Err(e);
                }
            }
            // Dropping the last handle closes the session.
            drop(client);
            info!("session closed");
            waypost_core::metrics::registry_session_up(BACKEND, false);
            result
        })
    }
}

/// Parses a node's data, skipping (with a warning) data that is not a valid instance.
pub(crate) fn parse_instance(service_key: &str, path: &str, name: &str, data: &[u8]) -> Option<ServiceInstance> {
    match ServiceInstance::from_json(data, service_key, name) {
        Ok(instance) => Some(instance),
        Err(e) => {
            warn!(%path, error = %e, "skipping a registry node that is not a valid instance");
            None
        }
    }
}

/// The registry error for a failed ZooKeeper `operation`: refused credentials (authentication
/// failed, or no permission for the node) get their own kind.
pub(crate) fn unavailable(servers: &[String], operation: &'static str, e: zk::Error) -> RegistryError {
    let auth = matches!(e, zk::Error::AuthFailed | zk::Error::NoAuth);
    RegistryError::from_backend(BACKEND, servers, operation, e, auth)
}
