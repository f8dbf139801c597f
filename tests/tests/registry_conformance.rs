//! The `Registry` contract, written once and run against every backend.
//!
//! Each backend is one line in the `conformance!` invocation at the bottom: it gets a module
//! with one test per case. Cases that cannot apply to a backend (the in-process memory registry
//! cannot outlive or lose its process) say so in their output and pass.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use waypost_core::registry::{Registry, ServiceInstance, WatchEvent, WatchStream};
use waypost_registry::etcd::{EtcdOptions, EtcdRegistry};
use waypost_registry::memory::MemoryRegistry;
use waypost_registry::zookeeper::{ZookeeperOptions, ZookeeperRegistry};
use waypost_tests::process::ProviderProcess;
use waypost_tests::proxy::FaultProxy;
use waypost_tests::servers::{shared_etcd, shared_zookeeper, unique_root};
use zookeeper_client as zk;

/// Lease TTL / session timeout used by the suite.
const TTL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Memory,
    Etcd,
    Zookeeper,
}

/// One backend under test, with a root of its own.
struct Harness {
    backend: Backend,
    endpoints: Vec<String>,
    root: String,
    memory: Option<MemoryRegistry>,
}

/// A registry handle, as one process would hold it.
struct Handle {
    registry: Arc<dyn Registry>,
}

impl Harness {
    async fn start(backend: Backend) -> Option<Self> {
        let endpoints = match backend {
            Backend::Memory => Vec::new(),
            Backend::Etcd => shared_etcd()?,
            Backend::Zookeeper => shared_zookeeper()?,
        };
        Some(Self {
            backend,
            endpoints,
            root: unique_root("conformance"),
            memory: (backend == Backend::Memory).then(MemoryRegistry::isolated),
        })
    }

    /// A new handle, as a separate process would have, on this harness's root.
    async fn handle(&self) -> Handle {
        self.handle_at(&self.root).await
    }

    async fn handle_at(&self, root: &str) -> Handle {
        self.connect(root, self.endpoints.clone()).await
    }

    /// A handle whose traffic goes through a proxy the test can cut (`None` for memory).
    async fn cuttable_handle(&self) -> (Handle, Option<FaultProxy>) {
        if self.backend == Backend::Memory {
            return (self.handle().await, None);
        }
        let proxy = FaultProxy::start(&self.endpoints[0]).await;
        (self.connect(&self.root, vec![proxy.endpoint()]).await, Some(proxy))
    }

    async fn connect(&self, root: &str, endpoints: Vec<String>) -> Handle {
        match self.backend {
            Backend::Memory => {
                let memory = match self.memory.as_ref() {
                    Some(m) if root == self.root => m.handle(),
                    _ => MemoryRegistry::shared(root),
                };
                Handle {
                    registry: Arc::new(memory),
                }
            }
            Backend::Etcd => {
                let etcd = EtcdRegistry::connect(EtcdOptions {
                    endpoints,
                    root: root.to_owned(),
                    ttl: TTL,
                    timeout: Duration::from_secs(3),
                    credentials: None,
                    tls: None,
                    reconcile_interval: Duration::from_secs(1),
                    keepalive_interval: Duration::from_secs(30),
                })
                .await
                .expect("connect etcd");
                Handle {
                    registry: Arc::new(etcd),
                }
            }
            Backend::Zookeeper => {
                let zookeeper = ZookeeperRegistry::connect(ZookeeperOptions {
                    servers: endpoints,
                    root: root.to_owned(),
                    session_timeout: TTL,
                    timeout: Duration::from_secs(3),
                    credentials: None,
                })
                .await
                .expect("connect ZooKeeper");
                Handle {
                    registry: Arc::new(zookeeper),
                }
            }
        }
    }

    /// The YAML a child provider process uses to register here; `None` for memory.
    fn provider_yaml(&self) -> Option<String> {
        let kind = match self.backend {
            Backend::Memory => return None,
            Backend::Etcd => "etcd",
            Backend::Zookeeper => "zookeeper",
        };
        Some(format!(
            "rpc:\n  server: {{ host: 127.0.0.1, port: 0 }}\n  registry:\n    type: {kind}\n    endpoints: [{}]\n    root: \"{}\"\n    ttl_secs: {}\n",
            waypost_tests::servers::yaml_list(&self.endpoints),
            self.root,
            TTL.as_secs()
        ))
    }

    /// Writes a value that is not an instance at `{root}/{service}/{name}`; `false` where the
    /// backend cannot hold one.
    async fn put_garbage(&self, service: &str, name: &str, value: &str) -> bool {
        let path = format!("{}/{service}/{name}", self.root);
        match self.backend {
            Backend::Memory => false,
            Backend::Etcd => {
                let mut raw = etcd_client::Client::connect([format!("http://{}", self.endpoints[0])], None)
                    .await
                    .expect("raw etcd client");
                raw.put(path, value, None).await.expect("put garbage");
                true
            }
            Backend::Zookeeper => {
                let raw = zk::Client::connect(&self.endpoints.join(","))
                    .await
                    .expect("raw ZooKeeper client");
                let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                raw.mkdir(&format!("{}/{service}", self.root), &persistent)
                    .await
                    .expect("mkdir");
                raw.create(&path, value.as_bytes(), &persistent)
                    .await
                    .expect("create garbage");
                true
            }
        }
    }

    /// Cuts the handle behind `proxy` off its server for twice the TTL, so the server expires
    /// its lease or session and drops its registrations, then reconnects it. `false` for
    /// memory, which cannot lose its state independently of its process.
    async fn lose_state(&self, proxy: Option<&FaultProxy>) -> bool {
        let Some(proxy) = proxy else { return false };
        proxy.set_blackhole(true);
        tokio::time::sleep(TTL * 2 + Duration::from_millis(500)).await;
        proxy.set_blackhole(false);
        true
    }
}

fn instance(service: &str, port: u16) -> ServiceInstance {
    let (name, version) = service.split_once(':').expect("name:version");
    ServiceInstance::new(name, version, "127.0.0.1", port)
}

/// Applies watch events to a map, the way the discovery cache does.
struct Watched {
    stream: WatchStream,
    state: BTreeMap<String, ServiceInstance>,
}

impl Watched {
    async fn open(registry: &Arc<dyn Registry>, key: &str) -> Self {
        let mut stream = registry.watch(key).await.expect("watch");
        let mut state = BTreeMap::new();
        match tokio::time::timeout(Duration::from_secs(3), stream.next()).await {
            Ok(Some(WatchEvent::Snapshot(list))) => state.extend(list.into_iter().map(|i| (i.address(), i))),
            other => panic!("a watch must open with a snapshot, got {other:?}"),
        }
        Self { stream, state }
    }

    /// Applies events until `condition` holds on the state, for at most `timeout`.
    async fn until(
        &mut self,
        timeout: Duration,
        what: &str,
        condition: impl Fn(&BTreeMap<String, ServiceInstance>) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !condition(&self.state) {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(WatchEvent::Snapshot(list))) => {
                    self.state = list.into_iter().map(|i| (i.address(), i)).collect();
                }
                Ok(Some(WatchEvent::Upsert(i))) => {
                    self.state.insert(i.address(), i);
                }
                Ok(Some(WatchEvent::Remove { address })) => {
                    self.state.remove(&address);
                }
                Ok(Some(other)) => panic!("an event this test does not know: {other:?}"),
                Ok(None) => panic!("the watch ended while waiting until {what}"),
                Err(_) => panic!(
                    "timed out after {timeout:?} waiting until {what}; state: {:?}",
                    self.state.keys()
                ),
            }
        }
    }

    /// Whether any event arrives within `quiet`.
    async fn stays_quiet(&mut self, quiet: Duration) -> bool {
        tokio::time::timeout(quiet, self.stream.next()).await.is_err()
    }
}

async fn discover_sorted(registry: &Arc<dyn Registry>, key: &str) -> Vec<ServiceInstance> {
    let mut list = registry.discover(key).await.expect("discover");
    list.sort_by_key(ServiceInstance::address);
    list
}

/// The cases. Each takes a fresh harness.
mod cases {
    use super::*;

    pub async fn register_discover_round_trip(h: &Harness) {
        let handle = h.handle().await;
        let mut a = instance("Svc:1.0", 7001);
        a.weight = 3;
        a.metadata.insert("zone".into(), "eu-1".into());
        let b = instance("Svc:1.0", 7002);
        handle.registry.register(&a).await.unwrap();
        handle.registry.register(&b).await.unwrap();
        let other = h.handle().await;
        assert_eq!(discover_sorted(&other.registry, "Svc:1.0").await, vec![a, b]);
        handle.registry.close().await.unwrap();
        other.registry.close().await.unwrap();
    }

    pub async fn deregister_removes_the_instance(h: &Harness) {
        let handle = h.handle().await;
        let a = instance("Svc:1.0", 7001);
        handle.registry.register(&a).await.unwrap();
        handle.registry.register(&instance("Svc:1.0", 7002)).await.unwrap();
        handle.registry.deregister(&a).await.unwrap();
        let left = discover_sorted(&handle.registry, "Svc:1.0").await;
        assert_eq!(left.iter().map(|i| i.port).collect::<Vec<_>>(), vec![7002]);
        // Deregistering what is not registered is not an error.
        handle.registry.deregister(&a).await.unwrap();
        handle.registry.close().await.unwrap();
        assert!(
            discover_sorted(&h.handle().await.registry, "Svc:1.0").await.is_empty(),
            "close removes the rest"
        );
    }

    pub async fn watch_sees_add_update_and_remove(h: &Harness) {
        let consumer = h.handle().await;
        let provider = h.handle().await;
        let mut watch = Watched::open(&consumer.registry, "Svc:1.0").await;
        assert!(watch.state.is_empty());
        let mut a = instance("Svc:1.0", 7001);
        provider.registry.register(&a).await.unwrap();
        watch
            .until(Duration::from_secs(3), "the instance appears", |s| s.len() == 1)
            .await;
        a.weight = 9;
        provider.registry.register(&a).await.unwrap();
        watch
            .until(Duration::from_secs(3), "the update arrives", |s| {
                s.values().all(|i| i.weight == 9)
            })
            .await;
        provider.registry.register(&instance("Svc:1.0", 7002)).await.unwrap();
        watch
            .until(Duration::from_secs(3), "a second instance appears", |s| s.len() == 2)
            .await;
        provider.registry.deregister(&a).await.unwrap();
        watch
            .until(Duration::from_secs(3), "the first instance leaves", |s| {
                s.len() == 1 && s.contains_key("127.0.0.1:7002")
            })
            .await;
        provider.registry.close().await.unwrap();
        consumer.registry.close().await.unwrap();
    }

    pub async fn service_keys_and_roots_are_isolated(h: &Harness) {
        let handle = h.handle().await;
        let elsewhere = h.handle_at(&unique_root("conformance-other")).await;
        handle.registry.register(&instance("Svc:1.0", 7001)).await.unwrap();
        handle.registry.register(&instance("Svc:2.0", 7002)).await.unwrap();
        handle.registry.register(&instance("Other:1.0", 7003)).await.unwrap();
        elsewhere.registry.register(&instance("Svc:1.0", 7004)).await.unwrap();
        let ports = |l: Vec<ServiceInstance>| l.iter().map(|i| i.port).collect::<Vec<_>>();
        assert_eq!(ports(discover_sorted(&handle.registry, "Svc:1.0").await), vec![7001]);
        assert_eq!(ports(discover_sorted(&handle.registry, "Svc:2.0").await), vec![7002]);
        assert_eq!(ports(discover_sorted(&elsewhere.registry, "Svc:1.0").await), vec![7004]);
        assert!(
            discover_sorted(&handle.registry, "Svc:1").await.is_empty(),
            "a key is not a prefix match"
        );

        let mut other_watch = Watched::open(&handle.registry, "Other:1.0").await;
        handle.registry.register(&instance("Svc:1.0", 7005)).await.unwrap();
        elsewhere.registry.register(&instance("Other:1.0", 7006)).await.unwrap();
        assert!(
            other_watch.stays_quiet(Duration::from_millis(500)).await,
            "Other:1.0 saw another key's or root's change"
        );
        handle.registry.close().await.unwrap();
        elsewhere.registry.close().await.unwrap();
    }

    pub async fn registrations_come_back_after_the_backend_loses_them(h: &Harness) {
        let (provider, proxy) = h.cuttable_handle().await;
        let consumer = h.handle().await;
        provider.registry.register(&instance("Svc:1.0", 7001)).await.unwrap();
        provider.registry.register(&instance("Svc:1.0", 7002)).await.unwrap();
        let mut watch = Watched::open(&consumer.registry, "Svc:1.0").await;
        let cut = Instant::now();
        if !h.lose_state(proxy.as_ref()).await {
            eprintln!(
                "NOT APPLICABLE for {:?}: it cannot lose its state independently of its process",
                h.backend
            );
            return;
        }
        // While the provider was cut off, the server expired it and dropped its instances.
        watch
            .until(Duration::from_secs(1), "the lost instances are gone", |s| s.len() < 2)
            .await;
        let reconnected = Instant::now();
        watch.until(TTL * 5, "both instances are back", |s| s.len() == 2).await;
        eprintln!(
            "MEASURED {:?}: cut off for {:?}; registrations back {:?} after the link returned",
            h.backend,
            reconnected - cut,
            reconnected.elapsed()
        );
        provider.registry.close().await.unwrap();
        consumer.registry.close().await.unwrap();
    }

    pub async fn an_instance_that_dies_disappears_within_its_ttl(h: &Harness) {
        let Some(yaml) = h.provider_yaml() else {
            eprintln!(
                "NOT APPLICABLE for {:?}: an in-process registry dies with its process",
                h.backend
            );
            return;
        };
        let consumer = h.handle().await;
        let mut provider = ProviderProcess::start(Path::new(env!("CARGO_BIN_EXE_test-provider")), &yaml).await;
        let mut watch = Watched::open(&consumer.registry, "TestService:1.0").await;
        let port = provider.port;
        watch
            .until(Duration::from_secs(3), "the provider is listed", |s| {
                s.values().any(|i| i.port == port)
            })
            .await;
        let killed = Instant::now();
        provider.kill().await;
        watch
            .until(TTL * 4, "the killed provider leaves", |s| {
                s.values().all(|i| i.port != port)
            })
            .await;
        let took = killed.elapsed();
        eprintln!(
            "MEASURED {:?}: SIGKILLed provider left the watch after {took:?} (TTL {TTL:?})",
            h.backend
        );
        assert!(
            took >= TTL / 4,
            "gone after {took:?}: faster than a TTL allows, was it deregistered?"
        );
        consumer.registry.close().await.unwrap();
    }

    pub async fn garbage_values_are_skipped(h: &Harness) {
        let handle = h.handle().await;
        handle.registry.register(&instance("Svc:1.0", 7001)).await.unwrap();
        if !h.put_garbage("Svc:1.0", "127.0.0.1:7002", "{not json").await {
            eprintln!(
                "NOT APPLICABLE for {:?}: it stores typed instances, never raw values",
                h.backend
            );
            return;
        }
        h.put_garbage(
            "Svc:1.0",
            "127.0.0.1:7003",
            r#"{"name":"Wrong","version":"1.0","host":"127.0.0.1","port":7003}"#,
        )
        .await;
        // Valid JSON of instances that cannot be dialed, and one too large to trust.
        let oversized = format!(
            r#"{{"name":"Svc","version":"1.0","host":"127.0.0.1","port":7007,"metadata":{{"pad":"{}"}}}}"#,
            "x".repeat(70_000)
        );
        for (name, value) in [
            (
                "127.0.0.1:0",
                r#"{"name":"Svc","version":"1.0","host":"127.0.0.1","port":0}"#.to_owned(),
            ),
            (
                "bad host!:7006",
                r#"{"name":"Svc","version":"1.0","host":"bad host!","port":7006}"#.to_owned(),
            ),
            (
                ":7008",
                r#"{"name":"Svc","version":"1.0","host":"","port":7008}"#.to_owned(),
            ),
            ("127.0.0.1:7007", oversized),
        ] {
            h.put_garbage("Svc:1.0", name, &value).await;
        }
        let ports = |l: Vec<ServiceInstance>| l.iter().map(|i| i.port).collect::<Vec<_>>();
        assert_eq!(ports(discover_sorted(&handle.registry, "Svc:1.0").await), vec![7001]);
        let mut watch = Watched::open(&handle.registry, "Svc:1.0").await;
        assert_eq!(watch.state.keys().collect::<Vec<_>>(), vec!["127.0.0.1:7001"]);
        h.put_garbage("Svc:1.0", "127.0.0.1:7004", "garbage arriving later")
            .await;
        handle.registry.register(&instance("Svc:1.0", 7005)).await.unwrap();
        watch
            .until(Duration::from_secs(3), "the valid newcomer appears", |s| {
                s.contains_key("127.0.0.1:7005")
            })
            .await;
        assert_eq!(
            watch.state.len(),
            2,
            "garbage got into the watch: {:?}",
            watch.state.keys()
        );
        handle.registry.close().await.unwrap();
    }

    pub async fn a_hundred_concurrent_registrations_are_all_visible(h: &Harness) {
        let mut handles = Vec::new();
        for _ in 0..4 {
            handles.push(h.handle().await);
        }
        let consumer = h.handle().await;
        let mut watch = Watched::open(&consumer.registry, "Svc:1.0").await;
        let started = Instant::now();
        let registrations = (0..100u16).map(|i| {
            let registry = handles[usize::from(i) % handles.len()].registry.clone();
            tokio::spawn(async move { registry.register(&instance("Svc:1.0", 8000 + i)).await })
        });
        for r in registrations.collect::<Vec<_>>() {
            r.await.unwrap().unwrap();
        }
        let registered = started.elapsed();
        assert_eq!(discover_sorted(&consumer.registry, "Svc:1.0").await.len(), 100);
        watch
            .until(Duration::from_secs(5), "all 100 are watched", |s| s.len() == 100)
            .await;
        eprintln!(
            "MEASURED {:?}: 100 concurrent registrations in {registered:?}",
            h.backend
        );
        for handle in handles {
            handle.registry.close().await.unwrap();
        }
        consumer.registry.close().await.unwrap();
    }

    pub async fn services_are_listed_without_rules(h: &Harness) {
        let handle = h.handle().await;
        assert_eq!(handle.registry.services().await.unwrap(), Vec::<String>::new());
        handle.registry.register(&instance("Svc:1.0", 7001)).await.unwrap();
        handle.registry.register(&instance("Svc:1.0", 7002)).await.unwrap();
        handle.registry.register(&instance("Other:2.0", 7003)).await.unwrap();
        handle.registry.put_rules("Svc:1.0", "{}").await.unwrap();
        let other = h.handle().await;
        assert_eq!(other.registry.services().await.unwrap(), vec!["Other:2.0", "Svc:1.0"]);
        handle.registry.delete_rules("Svc:1.0").await.unwrap();
        handle.registry.close().await.unwrap();
        other.registry.close().await.unwrap();
    }

    pub async fn rules_are_stored_watched_and_deleted(h: &Harness) {
        let writer = h.handle().await;
        let reader = h.handle().await;
        let key = "Svc:1.0";
        assert_eq!(reader.registry.get_rules(key).await.unwrap(), None);
        let mut watch = reader.registry.watch_rules(key).await.unwrap();
        async fn next(watch: &mut waypost_core::registry::RulesStream) -> Option<String> {
            tokio::time::timeout(Duration::from_secs(3), watch.next())
                .await
                .expect("a rules event within 3 s")
                .expect("the rules watch is open")
        }
        assert_eq!(next(&mut watch).await, None, "no rules at first");
        let first = r#"{"disabled":["127.0.0.1:7001"]}"#;
        writer.registry.put_rules(key, first).await.unwrap();
        assert_eq!(next(&mut watch).await.as_deref(), Some(first));
        let second = r#"{"weights":{"127.0.0.1:7001":5}}"#;
        writer.registry.put_rules(key, second).await.unwrap();
        assert_eq!(next(&mut watch).await.as_deref(), Some(second));
        assert_eq!(reader.registry.get_rules(key).await.unwrap().as_deref(), Some(second));
        assert_eq!(
            reader.registry.get_rules("Other:1.0").await.unwrap(),
            None,
            "rules are per service"
        );
        writer.registry.delete_rules(key).await.unwrap();
        assert_eq!(next(&mut watch).await, None, "deleted");
        assert_eq!(reader.registry.get_rules(key).await.unwrap(), None);
        writer.registry.delete_rules(key).await.unwrap();
        // Rules do not end with the process that set them (no lease, no ephemeral node).
        writer.registry.put_rules(key, first).await.unwrap();
        writer.registry.close().await.unwrap();
        assert_eq!(reader.registry.get_rules(key).await.unwrap().as_deref(), Some(first));
        reader.registry.close().await.unwrap();
    }

    pub async fn schemas_are_published_once_and_outlive_their_provider(h: &Harness) {
        use waypost_core::registry::publish_schema;
        use waypost_core::schema::{SchemaBuilder, ServiceSchema};
        let writer = h.handle().await;
        let reader = h.handle().await;
        let key = "Svc:1.0";
        let schema = SchemaBuilder::new("Svc", "1.0")
            .method::<(String,), Vec<u32>>("find", &["query"], true)
            .build();
        let fingerprint = publish_schema(&*writer.registry, key, &schema).await.unwrap();
        assert_eq!(fingerprint, schema.fingerprint());
        assert_eq!(
            publish_schema(&*writer.registry, key, &schema).await.unwrap(),
            fingerprint
        );
        let text = reader
            .registry
            .get_schema(key, &fingerprint)
            .await
            .unwrap()
            .expect("published");
        assert_eq!(serde_json::from_str::<ServiceSchema>(&text).unwrap(), schema);
        assert_eq!(reader.registry.get_schema(key, "0000000000000000").await.unwrap(), None);
        assert_eq!(
            reader.registry.get_schema("Other:1.0", &fingerprint).await.unwrap(),
            None
        );
        writer.registry.register(&instance(key, 7001)).await.unwrap();
        // The schema directory is not a service, and a schema outlives its publisher.
        assert_eq!(reader.registry.services().await.unwrap(), vec![key]);
        writer.registry.close().await.unwrap();
        assert!(reader.registry.get_schema(key, &fingerprint).await.unwrap().is_some());
        reader.registry.close().await.unwrap();
    }
}

/// Generates one test per case for a backend.
macro_rules! cases_for {
    ($backend:expr) => {
        cases_for!(@ $backend;
            register_discover_round_trip,
            deregister_removes_the_instance,
            watch_sees_add_update_and_remove,
            service_keys_and_roots_are_isolated,
            registrations_come_back_after_the_backend_loses_them,
            an_instance_that_dies_disappears_within_its_ttl,
            garbage_values_are_skipped,
            a_hundred_concurrent_registrations_are_all_visible,
            rules_are_stored_watched_and_deleted,
            services_are_listed_without_rules,
            schemas_are_published_once_and_outlive_their_provider,
        );
    };
    (@ $backend:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                if let Some(harness) = super::Harness::start($backend).await {
                    super::cases::$case(&harness).await;
                }
            }
        )*
    };
}

/// One line per backend: each gets the whole suite.
macro_rules! conformance {
    ($($name:ident => $backend:expr),* $(,)?) => {
        $(mod $name { cases_for!($backend); })*
    };
}

conformance! {
    memory => super::Backend::Memory,
    etcd => super::Backend::Etcd,
    zookeeper => super::Backend::Zookeeper,
}
