//! The embedded in-memory registry, for single-process use and tests.
//!
//! Handles built for the same root share one namespace in the process, so a provider and a
//! consumer configured with `type: memory` in one process see each other. Each handle remembers
//! what it registered and removes it on [`Registry::close`] (as a lease expiry would).
//!
//! Rules and schemas live in the same namespace; rules are watched the same way.
//!
//! Watches follow the [`Registry`] contract: a snapshot, then one event per change. A watcher
//! that falls more than its queue behind is dropped, which ends its stream; the discovery cache
//! then watches again and gets a fresh snapshot, so lagging never loses a change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use tokio::sync::mpsc;
use waypost_core::registry::{Registry, RegistryError, RulesStream, ServiceInstance, WatchEvent, WatchStream};
use waypost_core::BoxFuture;

/// Events queued per watcher before it counts as lagging.
const WATCH_QUEUE: usize = 1024;

#[derive(Default)]
struct Namespace {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    services: HashMap<String, BTreeMap<String, ServiceInstance>>,
    watchers: HashMap<String, Vec<mpsc::Sender<WatchEvent>>>,
    /// Rules text by service key.
    rules: HashMap<String, String>,
    rule_watchers: HashMap<String, Vec<mpsc::Sender<Option<String>>>>,
    /// Schema texts by (service key, fingerprint).
    schemas: HashMap<(String, String), String>,
}

impl State {
    fn notify(&mut self, key: &str, event: WatchEvent) {
        if let Some(list) = self.watchers.get_mut(key) {
            list.retain(|tx| tx.try_send(event.clone()).is_ok());
        }
    }

    fn set_rules(&mut self, key: &str, rules: Option<String>) {
        match &rules {
            Some(text) => self.rules.insert(key.to_owned(), text.clone()),
            None => self.rules.remove(key),
        };
        if let Some(list) = self.rule_watchers.get_mut(key) {
            list.retain(|tx| tx.try_send(rules.clone()).is_ok());
        }
    }
}

/// An in-process registry.
pub struct MemoryRegistry {
    namespace: Arc<Namespace>,
    /// (service key, address) of what this handle registered.
    owned: Mutex<HashSet<(String, String)>>,
}

impl MemoryRegistry {
    /// A handle to the process-wide namespace of `root`.
    pub fn shared(root: &str) -> Self {
        static NAMESPACES: OnceLock<Mutex<HashMap<String, Weak<Namespace>>>> = OnceLock::new();
        let mut all = NAMESPACES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        all.retain(|_, ns| ns.strong_count() > 0);
        let namespace = match all.get(root).and_then(Weak::upgrade) {
            Some(ns) => ns,
            None => {
                let ns = Arc::new(Namespace::default());
                all.insert(root.to_owned(), Arc::downgrade(&ns));
                ns
            }
        };
        Self::with_namespace(namespace)
    }

    /// A registry with a namespace of its own.
    pub fn isolated() -> Self {
        Self::with_namespace(Arc::new(Namespace::default()))
    }

    /// Another handle on the same namespace (as a second process would have).
    pub fn handle(&self) -> Self {
        Self::with_namespace(self.namespace.clone())
    }

    fn with_namespace(namespace: Arc<Namespace>) -> Self {
        Self {
            namespace,
            owned: Mutex::new(HashSet::new()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.namespace.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn owned(&self) -> MutexGuard<'_, HashSet<(String, String)>> {
        self.owned.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remove(&self, key: &str, address: &str) {
        let mut state = self.state();
        let removed = state.services.get_mut(key).and_then(|m| m.remove(address)).is_some();
        if removed {
            state.notify(
                key,
                WatchEvent::Remove {
                    address: address.to_owned(),
                },
            );
        }
    }
}

impl Registry for MemoryRegistry {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn register<'a>(&'a self, instance: &'a ServiceInstance) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let key = instance.service_key();
            let address = instance.address();
            self.owned().insert((key.clone(), address.clone()));
            let mut state = self.state();
            state
                .services
                .entry(key.clone())
                .or_default()
                .insert(address, instance.clone());
            state.notify(&key, WatchEvent::Upsert(instance.clone()));
            Ok(())
        })
    }

    fn deregister<'a>(&'a self, instance: &'a ServiceInstance) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let key = instance.service_key();
            let address = instance.address();
            self.owned().remove(&(key.clone(), address.clone()));
            self.remove(&key, &address);
            Ok(())
        })
    }

    fn discover<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<Vec<ServiceInstance>, RegistryError>> {
        Box::pin(async move {
            Ok(self
                .state()
                .services
                .get(service_key)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default())
        })
    }

    fn services(&self) -> BoxFuture<'_, Result<Vec<String>, RegistryError>> {
        Box::pin(async move {
            let state = self.state();
            let mut keys: Vec<String> = state
                .services
                .iter()
                .filter(|(_, instances)| !instances.is_empty())
                .map(|(key, _)| key.clone())
                .collect();
            keys.sort();
            Ok(keys)
        })
    }

    fn watch<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<WatchStream, RegistryError>> {
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(WATCH_QUEUE);
            let mut state = self.state();
            let snapshot = state
                .services
                .get(service_key)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            // The queue is empty, so the snapshot always fits.
            let _ = tx.try_send(WatchEvent::Snapshot(snapshot));
            state.watchers.entry(service_key.to_owned()).or_default().push(tx);
            Ok(WatchStream::new(rx, None))
        })
    }

    fn rules_location(&self, service_key: &str) -> String {
        format!("memory registry, config/{service_key}")
    }

    fn get_rules<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<Option<String>, RegistryError>> {
        Box::pin(async move { Ok(self.state().rules.get(service_key).cloned()) })
    }

    fn put_rules<'a>(&'a self, service_key: &'a str, rules: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            self.state().set_rules(service_key, Some(rules.to_owned()));
            Ok(())
        })
    }

    fn delete_rules<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            self.state().set_rules(service_key, None);
            Ok(())
        })
    }

    fn watch_rules<'a>(&'a self, service_key: &'a str) -> BoxFuture<'a, Result<RulesStream, RegistryError>> {
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(WATCH_QUEUE);
            let mut state = self.state();
            // The queue is empty, so the current value always fits.
            let _ = tx.try_send(state.rules.get(service_key).cloned());
            state.rule_watchers.entry(service_key.to_owned()).or_default().push(tx);
            Ok(RulesStream::new(rx, None))
        })
    }

    fn put_schema<'a>(
        &'a self,
        service_key: &'a str,
        fingerprint: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let key = (service_key.to_owned(), fingerprint.to_owned());
            self.state().schemas.insert(key, text.to_owned());
            Ok(())
        })
    }

    fn get_schema<'a>(
        &'a self,
        service_key: &'a str,
        fingerprint: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, RegistryError>> {
        Box::pin(async move {
            let key = (service_key.to_owned(), fingerprint.to_owned());
            Ok(self.state().schemas.get(&key).cloned())
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            let owned: Vec<(String, String)> = self.owned().drain().collect();
            for (key, address) in owned {
                self.remove(&key, &address);
            }
            Ok(())
        })
    }
}
