//! The consumer-side discovery cache: one exact, watch-driven instance list per service key.
//!
//! # Design
//!
//! * Entries live in a [`DashMap`] keyed by service key. Each holds the current list as an
//!   `Arc<[ServiceInstance]>` inside a `tokio::sync::watch` channel: a hit is a map lookup, a
//!   read lock and an `Arc` clone, with no registry round trip and no allocation. The channel
//!   also lets anyone [`subscribe`](DiscoveryCache::subscribe) to changes.
//! * The first lookup of a key creates its entry and starts exactly one watcher task for it
//!   (the map's entry API decides the race). Lookups wait for the watcher's first snapshot, up
//!   to the load timeout.
//! * The watcher applies every event to a map keyed by address and publishes a new list:
//!   additions appear, removals disappear, and no other key's entry is touched. An empty list
//!   is just the current state: the watch stays open, so a provider that registers later is
//!   seen as soon as it does.
//! * When the watch fails or ends (registry unreachable, compaction), the entry keeps its
//!   last-known list and the watcher re-watches (which re-lists) with capped, jittered backoff.
//! * Empty-list protection: a fresh listing (the opening snapshot of a re-established watch,
//!   or a resync) that would empty a non-empty entry is not trusted at once; changes on a live
//!   watch, snapshots included, apply as they are. It is what a registry that lost its data says
//!   before the providers have registered again. The entry keeps its last-known instances for
//!   `empty_list_grace`; the first instance the registry reports replaces them, and if none
//!   appears within the grace, the empty list is accepted. For the same grace after a watch is
//!   re-established, a removal that would empty the entry is treated the same way: it is what
//!   a registry that was frozen longer than the lease TTL says when it thaws (it expires every
//!   lease at once, before the providers' keep-alives reach it), while the providers live on.
//! * A periodic resync job (tokio-cron-scheduler) re-lists every key as a safety net against
//!   missed events. A resync result is applied only if no watch event arrived while it was in
//!   flight, so it can never roll back a newer change.
//! * With a cache file (see [`super::cache_file`]), a writer task rewrites the file after lists
//!   change, at most once a second; a consumer that starts while the registry is unreachable
//!   [seeds](DiscoveryCache::seed) its entries from the file and watches as usual, so live data
//!   replaces the cached instances as soon as the registry answers.
//! * Each entry also keeps the schemas its instances name (see [`super::schemas`]), fetched
//!   once per fingerprint as instances appear; like the rules, they are read without waiting.
//! * Watcher and writer tasks are owned by the cache and aborted when it is closed or dropped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use super::schemas::{keep_schemas, KnownSchemas, SchemaMap};
use super::{CacheFile, CachedInstances, Registry, RegistryError, ServiceInstance, WatchEvent};
use crate::backoff::Backoff;
use crate::metrics;
use crate::schedule::{PeriodicJob, ScheduleError};
use tokio_util::task::AbortOnDropHandle;

/// Tunables of a [`DiscoveryCache`].
#[derive(Debug, Clone)]
pub struct DiscoveryOptions {
    /// How long a first lookup waits for the registry.
    pub load_timeout: Duration,
    /// How often every watched key is re-listed.
    pub resync_interval: Duration,
    /// First delay before re-watching a failed watch.
    pub retry_base: Duration,
    /// Longest delay between re-watch attempts.
    pub retry_cap: Duration,
    /// How long an empty listing may leave the last-known instances in place.
    pub empty_list_grace: Duration,
    /// Where the last-known instances are written (see [`super::cache_file`]), if anywhere.
    pub cache_file: Option<CacheFile>,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        Self {
            load_timeout: Duration::from_secs(3),
            resync_interval: Duration::from_secs(30),
            retry_base: Duration::from_millis(100),
            retry_cap: Duration::from_secs(5),
            empty_list_grace: Duration::from_secs(10),
            cache_file: None,
        }
    }
}

/// A cached, watch-driven view of a registry.
pub struct DiscoveryCache {
    inner: Arc<Inner>,
    resync: Mutex<Option<PeriodicJob>>,
}

struct Inner {
    registry: Arc<dyn Registry>,
    entries: DashMap<String, Arc<Entry>>,
    watchers: Mutex<Vec<AbortOnDropHandle<()>>>,
    options: DiscoveryOptions,
    /// Signalled whenever an entry publishes a new list.
    changed: Arc<Notify>,
    /// Watches that ended or failed and were started again.
    rewatches: Arc<AtomicU64>,
}

struct Entry {
    key: String,
    /// The cache's change signal.
    changed: Arc<Notify>,
    empty_list_grace: Duration,
    /// Woken when empty-list protection starts, so its expiry gets scheduled.
    protection_started: Notify,
    /// `None` until the first snapshot; then the current list, sorted by address.
    published: watch::Sender<Option<Arc<[ServiceInstance]>>>,
    /// The text of the service's rules: `None` until the rules watch said something, then
    /// `Some(None)` for no rules or `Some(Some(text))`. Kept while the registry is unreachable.
    rules: watch::Sender<Option<Option<Arc<str>>>>,
    /// The schemas the instances name.
    schemas: watch::Sender<KnownSchemas>,
    state: Mutex<EntryState>,
}

#[derive(Default)]
struct EntryState {
    by_address: BTreeMap<String, ServiceInstance>,
    /// Bumped by every applied watch event.
    generation: u64,
    last_error: Option<RegistryError>,
    /// While set, `by_address` holds last-known instances kept despite an empty listing.
    stale_until: Option<Instant>,
    /// Until then, the current watch is newly re-established: a removal that would empty the
    /// entry is protected like an empty listing.
    settling_until: Option<Instant>,
}

impl EntryState {
    /// Whether the current watch was re-established within the grace.
    fn settling(&self) -> bool {
        self.settling_until.is_some_and(|until| Instant::now() < until)
    }
}

impl Entry {
    fn state(&self) -> std::sync::MutexGuard<'_, EntryState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn current(&self) -> Option<Arc<[ServiceInstance]>> {
        self.published.borrow().clone()
    }

    fn current_rules(&self) -> Option<Arc<str>> {
        self.rules.borrow().clone().flatten()
    }

    /// The rules watch said the rules are now `text` (`None`: none).
    fn set_rules(&self, text: Option<String>) {
        let text: Option<Arc<str>> = text.map(Arc::from);
        self.rules.send_if_modified(|current| {
            let changed = current.as_ref().map(|c| c.as_deref()) != Some(text.as_deref());
            if changed {
                debug!(service = %self.key, rules = ?text.as_deref(), "rules updated");
                *current = Some(text.clone());
            }
            changed
        });
    }

    /// Applies one watch event. `fresh` marks the opening snapshot of a new watch, a listing
    /// that may come from a registry that just lost its data; later events of a live watch are
    /// changes and apply as they are, except that one emptying the entry within the grace
    /// after a watch was re-established is protected as that listing is.
    fn apply(&self, event: WatchEvent, fresh: bool) {
        metrics::discovery_watch_event(&self.key);
        let mut state = self.state();
        match event {
            WatchEvent::Snapshot(list) => {
                let first = self.published.borrow().is_none();
                if fresh && !first {
                    state.settling_until = Some(Instant::now() + self.empty_list_grace);
                }
                let protect = fresh || state.settling();
                if !self.replace_all(&mut state, list, protect) && !first {
                    return;
                }
            }
            WatchEvent::Upsert(instance) => {
                if state.stale_until.take().is_some() {
                    // The registry reports instances again: the kept ones go.
                    state.by_address.clear();
                }
                state.by_address.insert(instance.address(), instance);
            }
            WatchEvent::Remove { address } => {
                let empties = state.by_address.len() == 1 && state.by_address.contains_key(&address);
                if state.settling() && empties && !self.empty_list_grace.is_zero() {
                    self.keep_last_known(&mut state);
                    return;
                }
                state.by_address.remove(&address);
            }
        }
        state.generation += 1;
        state.last_error = None;
        self.publish(&state);
    }

    /// Replaces the list with a resync result unless a watch event arrived since `generation`.
    fn resync(&self, generation: u64, list: Vec<ServiceInstance>) {
        let mut state = self.state();
        if state.generation != generation {
            return;
        }
        let before = state.by_address.len();
        if self.replace_all(&mut state, list, true) {
            info!(service = %self.key, before, after = state.by_address.len(), "resync corrected the cache");
            state.generation += 1;
            self.publish(&state);
        }
    }

    /// Replaces every instance with `list`, unless `protect` is set and that would empty a
    /// non-empty entry: then the last-known instances stay for the grace period. Returns
    /// whether anything changed.
    fn replace_all(&self, state: &mut EntryState, list: Vec<ServiceInstance>, protect: bool) -> bool {
        if protect && list.is_empty() && !state.by_address.is_empty() && !self.empty_list_grace.is_zero() {
            self.keep_last_known(state);
            return false;
        }
        let fresh: BTreeMap<String, ServiceInstance> = list.into_iter().map(|i| (i.address(), i)).collect();
        state.stale_until = None;
        if fresh == state.by_address {
            return false;
        }
        state.by_address = fresh;
        true
    }

    /// Starts empty-list protection (unless it runs): the last-known instances stay until the
    /// registry reports one or the grace passes.
    fn keep_last_known(&self, state: &mut EntryState) {
        if state.stale_until.is_none() {
            state.stale_until = Some(Instant::now() + self.empty_list_grace);
            warn!(
                service = %self.key,
                kept = state.by_address.len(),
                grace = ?self.empty_list_grace,
                "the registry lists no instances; keeping the last-known ones until it reports some or the grace ends"
            );
            self.protection_started.notify_one();
        }
    }

    /// Ends empty-list protection whose grace has passed, publishing the empty list.
    fn expire_protection(&self) {
        let mut state = self.state();
        if state.stale_until.is_some_and(|until| Instant::now() >= until) {
            warn!(service = %self.key, "no instance reappeared within the grace; the service has none");
            state.stale_until = None;
            state.by_address.clear();
            state.generation += 1;
            self.publish(&state);
        }
    }

    /// Runs for the entry's lifetime, ending each empty-list protection when its grace passes.
    async fn expire_protections(&self) {
        loop {
            let until = self.state().stale_until;
            match until {
                Some(until) => {
                    tokio::time::sleep_until(until).await;
                    self.expire_protection();
                }
                None => self.protection_started.notified().await,
            }
        }
    }

    fn publish(&self, state: &EntryState) {
        let list: Arc<[ServiceInstance]> = state.by_address.values().cloned().collect();
        debug!(service = %self.key, instances = list.len(), "instances updated");
        metrics::discovery_instances(&self.key, list.len());
        self.published.send_replace(Some(list));
        self.changed.notify_one();
    }

    /// Starts the entry from instances read from the cache file, unless it has a list already.
    fn seed(&self, instances: &[ServiceInstance]) {
        let mut state = self.state();
        if self.published.borrow().is_some() {
            return;
        }
        state.by_address = instances.iter().map(|i| (i.address(), i.clone())).collect();
        self.publish(&state);
    }

    fn record_error(&self, error: RegistryError) {
        self.state().last_error = Some(error);
    }
}

impl DiscoveryCache {
    /// A cache in front of `registry`; starts the resync job.
    pub async fn new(registry: Arc<dyn Registry>, options: DiscoveryOptions) -> Result<Self, ScheduleError> {
        let inner = Arc::new(Inner {
            registry,
            entries: DashMap::new(),
            watchers: Mutex::new(Vec::new()),
            options,
            changed: Arc::new(Notify::new()),
            rewatches: Arc::new(AtomicU64::new(0)),
        });
        if let Some(file) = inner.options.cache_file.clone() {
            let writer = tokio::spawn(write_cache_file(Arc::downgrade(&inner), file));
            inner.watchers().push(AbortOnDropHandle::new(writer));
        }
        let weak = Arc::downgrade(&inner);
        let resync = PeriodicJob::start("discovery resync", inner.options.resync_interval, move || {
            let weak = weak.clone();
            async move {
                if let Some(inner) = weak.upgrade() {
                    resync_all(inner).await;
                }
            }
        })
        .await?;
        Ok(Self {
            inner,
            resync: Mutex::new(Some(resync)),
        })
    }

    /// The registry behind the cache.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.inner.registry
    }

    /// The instances of `service_key`, from the cache when it is loaded; the first call for a
    /// key loads it and starts its watch.
    pub async fn instances(&self, service_key: &str) -> Result<Arc<[ServiceInstance]>, RegistryError> {
        let entry = match self.inner.entries.get(service_key) {
            Some(entry) => {
                if let Some(list) = entry.current() {
                    return Ok(list);
                }
                entry.clone()
            }
            None => self.entry(service_key),
        };
        let mut rx = entry.published.subscribe();
        let timeout = self.inner.options.load_timeout;
        let loaded = tokio::time::timeout(timeout, async {
            rx.wait_for(Option::is_some).await.map(|list| list.clone())
        })
        .await;
        // The first call should already follow the service's rules and know which instances
        // have its method; both arrive on their own, and a registry that does not answer
        // them holds the call up only briefly.
        let mut rules = entry.rules.subscribe();
        let mut schemas = entry.schemas.subscribe();
        let _ = tokio::time::timeout(FIRST_RULES_WAIT, async {
            let _ = rules.wait_for(Option::is_some).await;
            let _ = schemas.wait_for(|known| known.list.is_some()).await;
        })
        .await;
        match loaded {
            Ok(Ok(Some(list))) => Ok(list),
            Ok(Ok(None) | Err(_)) => Err(RegistryError::Closed),
            Err(_) => Err(match entry.state().last_error.clone() {
                Some(error) => error,
                None => RegistryError::Timeout {
                    backend: self.inner.registry.backend(),
                    endpoints: self.inner.registry.endpoints(),
                    operation: "first discovery",
                    timeout_ms: timeout.as_millis() as u64,
                },
            }),
        }
    }

    /// The cached instances of `service_key`, if it has been loaded; never waits.
    pub fn cached(&self, service_key: &str) -> Option<Arc<[ServiceInstance]>> {
        self.inner.entries.get(service_key).and_then(|e| e.current())
    }

    /// The text of `service_key`'s rules as last seen (none, or not loaded yet: `None`); never
    /// waits. Consumers validate it: an invalid text is for them to ignore.
    pub fn rules(&self, service_key: &str) -> Option<Arc<str>> {
        self.inner.entries.get(service_key).and_then(|e| e.current_rules())
    }

    /// The schemas `service_key`'s instances name, by fingerprint, as fetched so far; never
    /// waits. An instance whose fingerprint is not in it has no schema, or one not read yet.
    pub fn schemas(&self, service_key: &str) -> Option<Arc<SchemaMap>> {
        self.inner
            .entries
            .get(service_key)
            .map(|e| e.schemas.borrow().map.clone())
    }

    /// Where `service_key`'s rules live in the registry, for messages.
    pub fn rules_location(&self, service_key: &str) -> String {
        self.inner.registry.rules_location(service_key)
    }

    /// A receiver that sees every new list of `service_key` (starting its watch if needed).
    pub fn subscribe(&self, service_key: &str) -> watch::Receiver<Option<Arc<[ServiceInstance]>>> {
        match self.inner.entries.get(service_key) {
            Some(entry) => entry.published.subscribe(),
            None => self.entry(service_key).published.subscribe(),
        }
    }

    /// Starts every service of `cached` (read from the cache file while the registry is
    /// unreachable) from its cached instances, and watches it; live data replaces them as soon
    /// as the registry answers.
    pub fn seed(&self, cached: &CachedInstances) {
        for (key, instances) in &cached.services {
            self.entry(key).seed(instances);
        }
    }

    /// How many times a watch ended or failed and had to be started again, over every key:
    /// zero on a healthy registry connection.
    pub fn rewatches(&self) -> u64 {
        self.inner.rewatches.load(Ordering::Relaxed)
    }

    /// The service keys being watched.
    pub fn keys(&self) -> Vec<String> {
        self.inner.entries.iter().map(|e| e.key().clone()).collect()
    }

    /// Stops every watch and the resync job.
    pub async fn close(&self) {
        let job = self.resync.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(job) = job {
            job.stop().await;
        }
        self.inner.watchers().clear();
    }

    /// The entry for `key`, created with its watcher if it does not exist yet.
    fn entry(&self, key: &str) -> Arc<Entry> {
        self.inner
            .entries
            .entry(key.to_owned())
            .or_insert_with(|| {
                let entry = Arc::new(Entry {
                    key: key.to_owned(),
                    changed: self.inner.changed.clone(),
                    empty_list_grace: self.inner.options.empty_list_grace,
                    protection_started: Notify::new(),
                    published: watch::channel(None).0,
                    rules: watch::channel(None).0,
                    schemas: watch::channel(KnownSchemas::default()).0,
                    state: Mutex::new(EntryState::default()),
                });
                let task = tokio::spawn(
                    watch_key(
                        self.inner.registry.clone(),
                        entry.clone(),
                        self.inner.options.clone(),
                        self.inner.rewatches.clone(),
                    )
                    .instrument(tracing::info_span!("discovery_watch", service = key)),
                );
                self.inner.watchers().push(AbortOnDropHandle::new(task));
                entry
            })
            .clone()
    }
}

/// Keeps one key's entry exact for as long as the cache lives.
async fn watch_key(
    registry: Arc<dyn Registry>,
    entry: Arc<Entry>,
    options: DiscoveryOptions,
    rewatches: Arc<AtomicU64>,
) {
    let lists = entry.published.subscribe();
    let schema_backoff = Backoff::new(options.retry_base, options.retry_cap);
    tokio::select! {
        _ = entry.expire_protections() => {}
        _ = watch_rules_forever(registry.clone(), &entry, options.clone()) => {}
        _ = keep_schemas(registry.clone(), &entry.key, lists, &entry.schemas, options.load_timeout, schema_backoff) => {}
        _ = watch_forever(registry, &entry, options, &rewatches) => {}
    }
}

/// Keeps the entry's rules text current, with the same backoff as the instance watch; while
/// the registry is unreachable the last-known text stays.
async fn watch_rules_forever(registry: Arc<dyn Registry>, entry: &Entry, options: DiscoveryOptions) {
    let backoff = Backoff::new(options.retry_base, options.retry_cap);
    super::follow_rules(&*registry, &entry.key, backoff, |text| entry.set_rules(text)).await
}

async fn watch_forever(registry: Arc<dyn Registry>, entry: &Entry, options: DiscoveryOptions, rewatches: &AtomicU64) {
    let mut backoff = Backoff::new(options.retry_base, options.retry_cap);
    let mut started = false;
    loop {
        if std::mem::replace(&mut started, true) {
            rewatches.fetch_add(1, Ordering::Relaxed);
            metrics::discovery_rewatch(&entry.key);
        }
        match registry.watch(&entry.key).await {
            Ok(mut stream) => {
                let mut first = true;
                while let Some(event) = stream.next().await {
                    if first {
                        backoff.reset();
                    }
                    entry.apply(event, first);
                    first = false;
                }
                debug!("watch ended; keeping the last-known instances and watching again");
            }
            Err(e) => {
                warn!(error = %e, "watch failed; serving the last-known instances");
                entry.record_error(e);
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

impl Inner {
    fn watchers(&self) -> std::sync::MutexGuard<'_, Vec<AbortOnDropHandle<()>>> {
        self.watchers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every entry's current list.
    fn snapshot(&self) -> BTreeMap<String, Vec<ServiceInstance>> {
        self.entries
            .iter()
            .filter_map(|e| e.current().map(|list| (e.key().clone(), list.to_vec())))
            .collect()
    }
}

/// Keeps the cache file current: rewrites it after changes, at most once a second.
async fn write_cache_file(inner: Weak<Inner>, file: CacheFile) {
    let Some(changed) = inner.upgrade().map(|i| i.changed.clone()) else {
        return;
    };
    let mut last_write: Option<Instant> = None;
    let mut failing = false;
    loop {
        changed.notified().await;
        if let Some(at) = last_write {
            // Changes in the meantime coalesce into this write.
            tokio::time::sleep_until(at + CACHE_FILE_MIN_INTERVAL).await;
        }
        let Some(services) = inner.upgrade().map(|i| i.snapshot()) else {
            return;
        };
        last_write = Some(Instant::now());
        match file.write(&services).await {
            Ok(()) => {
                if std::mem::take(&mut failing) {
                    info!(file = %file.path().display(), "cache file written again");
                }
                debug!(file = %file.path().display(), services = services.len(), "cache file written");
            }
            Err(e) if !failing => {
                failing = true;
                warn!(file = %file.path().display(), error = %e, "cannot write the cache file; will keep trying");
            }
            Err(_) => {}
        }
    }
}

/// How long a first lookup waits for the service's rules once its instances are there.
const FIRST_RULES_WAIT: Duration = Duration::from_millis(500);

/// Shortest time between two writes of the cache file.
const CACHE_FILE_MIN_INTERVAL: Duration = Duration::from_secs(1);

async fn resync_all(inner: Arc<Inner>) {
    let entries: Vec<Arc<Entry>> = inner.entries.iter().map(|e| e.value().clone()).collect();
    for entry in entries {
        let generation = entry.state().generation;
        let listed = tokio::time::timeout(inner.options.load_timeout, inner.registry.discover(&entry.key)).await;
        match listed {
            Ok(Ok(list)) => entry.resync(generation, list),
            Ok(Err(e)) => debug!(service = %entry.key, error = %e, "resync failed"),
            Err(_) => debug!(service = %entry.key, "resync timed out"),
        }
    }
}
