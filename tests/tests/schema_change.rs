//! Changing a service during a rollout: old and new clients calling old and new servers over
//! real TCP, for every serializer and every kind of change.
//!
//! Version 2 adds a field of an `Option` type and one with `#[serde(default)]` to a struct, a
//! variant to an enum, a method, and a last argument of an `Option` type. Two incompatible
//! versions change a field's type and remove a field. The default serializer (msgpack) must
//! give the right value for every additive case and an error naming the field or the variant
//! for the others; no serializer may give a wrong value. The printed table is the matrix the
//! guide quotes (docs/define-and-serve.md).

use waypost_core::server::{RunningServer, ServerBuilder};
use waypost_core::{Channel, RpcError, SerializerKind};

/// A version of the service whose methods are those of version 1, over its own `User`.
macro_rules! version_one_methods {
    ($module:ident, $sample:expr) => {
        pub mod $module {
            pub use super::common::*;
            use super::shapes::$module::User;

            #[waypost_core::service(name = "Profiles", version = "1.0")]
            pub trait Profiles {
                /// What the server read.
                async fn put_user(&self, user: User) -> String;
                /// A user as the server has it.
                async fn get_user(&self, id: u64) -> User;
                /// The best tier the server knows.
                async fn best_tier(&self) -> Tier1;
                /// A greeting.
                async fn greet(&self, name: String) -> String;
            }

            pub struct Impl;

            impl Profiles for Impl {
                async fn put_user(&self, user: User) -> String {
                    format!("{user:?}")
                }
                async fn get_user(&self, id: u64) -> User {
                    let make: fn(u64) -> User = $sample;
                    make(id)
                }
                async fn best_tier(&self) -> Tier1 {
                    Tier1::Pro { seats: 5 }
                }
                async fn greet(&self, name: String) -> String {
                    format!("Hello, {name}")
                }
            }

            pub async fn serve() -> (waypost_core::server::RunningServer, String) {
                super::serve(ProfilesServer::new(Impl)).await
            }
        }
    };
}

/// The types of each version.
mod shapes {
    pub mod v1 {
        use serde::{Deserialize, Serialize};

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct User {
            pub id: u64,
            pub name: String,
            pub tier: super::super::common::Tier1,
        }
    }

    pub mod v2 {
        use serde::{Deserialize, Serialize};

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct User {
            pub id: u64,
            pub name: String,
            pub tier: super::super::common::Tier2,
            pub email: Option<String>,
            #[serde(default)]
            pub score: u32,
        }
    }

    /// Not compatible: `name` changed its type.
    pub mod retyped {
        use serde::{Deserialize, Serialize};

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct User {
            pub id: u64,
            pub name: u32,
            pub tier: super::super::common::Tier1,
        }
    }

    /// Not compatible: `name`, which version 1 requires, is gone.
    pub mod removed {
        use serde::{Deserialize, Serialize};

        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct User {
            pub id: u64,
            pub tier: super::super::common::Tier1,
        }
    }
}

mod common {
    use serde::{Deserialize, Serialize};

    /// The tiers of version 1 (named `Tier` on the wire, as in every version).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename = "Tier")]
    pub enum Tier1 {
        Free,
        Pro { seats: u32 },
    }

    /// Version 2 adds `Gold`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename = "Tier")]
    pub enum Tier2 {
        Free,
        Pro { seats: u32 },
        Gold(u8),
    }
}

version_one_methods!(v1, |id| User {
    id,
    name: "Ada".into(),
    tier: Tier1::Pro { seats: 3 },
});
version_one_methods!(retyped, |id| User {
    id,
    name: 7,
    tier: Tier1::Free,
});
version_one_methods!(removed, |id| User { id, tier: Tier1::Free });

mod v2 {
    pub use super::common::*;
    pub use super::shapes::v2::User;

    #[waypost_core::service(name = "Profiles", version = "1.0")]
    pub trait Profiles {
        async fn put_user(&self, user: User) -> String;
        async fn get_user(&self, id: u64) -> User;
        async fn best_tier(&self) -> Tier2;
        /// Version 2 takes a greeting.
        async fn greet(&self, name: String, greeting: Option<String>) -> String;
        /// New in version 2.
        async fn audit(&self, id: u64) -> String;
    }

    pub struct Impl;

    impl Profiles for Impl {
        async fn put_user(&self, user: User) -> String {
            format!("{user:?}")
        }
        async fn get_user(&self, id: u64) -> User {
            User {
                id,
                name: "Ada".into(),
                tier: Tier2::Pro { seats: 3 },
                email: Some("ada@example.com".into()),
                score: 9,
            }
        }
        async fn best_tier(&self) -> Tier2 {
            Tier2::Gold(2)
        }
        async fn greet(&self, name: String, greeting: Option<String>) -> String {
            format!("{}, {name}", greeting.as_deref().unwrap_or("Hello"))
        }
        async fn audit(&self, id: u64) -> String {
            format!("audited {id}")
        }
    }

    pub async fn serve() -> (waypost_core::server::RunningServer, String) {
        super::serve(ProfilesServer::new(Impl)).await
    }
}

async fn serve(service: impl waypost_core::server::Service) -> (RunningServer, String) {
    let server = ServerBuilder::new()
        .add_service(service)
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = server.local_addr().expect("addr").to_string();
    (server, addr)
}

fn channel(addr: &str, kind: SerializerKind) -> Channel {
    Channel::direct(addr).expect("channel").with_serializer(kind)
}

/// What a case must give.
enum Expect {
    /// This value (its `Debug`).
    Value(&'static str),
    /// An error whose message holds each of these.
    Error(&'static [&'static str]),
}

/// One case: its name, what it must give, and what it gave.
struct Case {
    name: &'static str,
    additive: bool,
    expect: Expect,
    got: Result<String, String>,
}

fn outcome<T: std::fmt::Debug>(result: Result<T, RpcError>) -> Result<String, String> {
    result.map(|v| format!("{v:?}")).map_err(|e| e.to_string())
}

async fn run_cases(kind: SerializerKind) -> Vec<Case> {
    let (old_server, old) = v1::serve().await;
    let (new_server, new) = v2::serve().await;
    let (retyped_server, retyped) = retyped::serve().await;
    let (removed_server, removed) = removed::serve().await;
    let old_client = v1::ProfilesClient::new(channel(&old, kind)).unwrap();
    let old_to_new = v1::ProfilesClient::new(channel(&new, kind)).unwrap();
    let old_to_retyped = v1::ProfilesClient::new(channel(&retyped, kind)).unwrap();
    let old_to_removed = v1::ProfilesClient::new(channel(&removed, kind)).unwrap();
    let new_to_old = v2::ProfilesClient::new(channel(&old, kind)).unwrap();
    let retyped_to_old = retyped::ProfilesClient::new(channel(&old, kind)).unwrap();
    let removed_to_old = removed::ProfilesClient::new(channel(&old, kind)).unwrap();

    let ada_v1 = shapes::v1::User {
        id: 1,
        name: "Ada".into(),
        tier: common::Tier1::Pro { seats: 3 },
    };
    let ada_v2 = |tier| shapes::v2::User {
        id: 1,
        name: "Ada".into(),
        tier,
        email: Some("ada@example.com".into()),
        score: 9,
    };
    const ADA_V1: &str = "User { id: 1, name: \"Ada\", tier: Pro { seats: 3 } }";

    let cases = vec![
        Case {
            name: "same version",
            additive: true,
            expect: Expect::Value(ADA_V1),
            got: outcome(old_client.get_user(1).await),
        },
        Case {
            name: "fields added: new client sends to old server",
            additive: true,
            expect: Expect::Value("\"User { id: 1, name: \\\"Ada\\\", tier: Pro { seats: 3 } }\""),
            got: outcome(new_to_old.put_user(ada_v2(common::Tier2::Pro { seats: 3 })).await),
        },
        Case {
            name: "fields added: old client sends to new server",
            additive: true,
            expect: Expect::Value(
                "\"User { id: 1, name: \\\"Ada\\\", tier: Pro { seats: 3 }, email: None, score: 0 }\"",
            ),
            got: outcome(old_to_new.put_user(ada_v1.clone()).await),
        },
        Case {
            name: "fields added: old client reads new server's result",
            additive: true,
            expect: Expect::Value(ADA_V1),
            got: outcome(old_to_new.get_user(1).await),
        },
        Case {
            name: "fields added: new client reads old server's result",
            additive: true,
            expect: Expect::Value("User { id: 1, name: \"Ada\", tier: Pro { seats: 3 }, email: None, score: 0 }"),
            got: outcome(new_to_old.get_user(1).await),
        },
        Case {
            name: "variant added: a known variant to an old client",
            additive: true,
            expect: Expect::Value("Pro { seats: 5 }"),
            got: outcome(new_to_old.best_tier().await),
        },
        Case {
            name: "variant added: new variant sent to old server",
            additive: true,
            expect: Expect::Error(&["unknown variant `Gold`", "enum `Tier`"]),
            got: outcome(new_to_old.put_user(ada_v2(common::Tier2::Gold(1))).await),
        },
        Case {
            name: "variant added: new variant returned to old client",
            additive: true,
            expect: Expect::Error(&["unknown variant `Gold`", "enum `Tier`"]),
            got: outcome(old_to_new.best_tier().await),
        },
        Case {
            name: "method added: new client calls old server",
            additive: true,
            expect: Expect::Error(&["method audit not found in service Profiles:1.0"]),
            got: outcome(new_to_old.audit(1).await),
        },
        Case {
            name: "last Option argument added: new client calls old server",
            additive: true,
            expect: Expect::Value("\"Hello, Ada\""),
            got: outcome(new_to_old.greet("Ada".into(), Some("Hi".into())).await),
        },
        Case {
            name: "last Option argument added: old client calls new server",
            additive: true,
            expect: Expect::Value("\"Hello, Ada\""),
            got: outcome(old_to_new.greet("Ada".into()).await),
        },
        Case {
            name: "field type changed: client sends to old server",
            additive: false,
            expect: Expect::Error(&["field `name` of `User`"]),
            got: outcome(
                retyped_to_old
                    .put_user(shapes::retyped::User {
                        id: 1,
                        name: 7,
                        tier: common::Tier1::Free,
                    })
                    .await,
            ),
        },
        Case {
            name: "field type changed: old client reads the result",
            additive: false,
            expect: Expect::Error(&["field `name` of `User`"]),
            got: outcome(old_to_retyped.get_user(1).await),
        },
        Case {
            name: "required field removed: client sends to old server",
            additive: false,
            expect: Expect::Error(&["missing field `name`"]),
            got: outcome(
                removed_to_old
                    .put_user(shapes::removed::User {
                        id: 1,
                        tier: common::Tier1::Free,
                    })
                    .await,
            ),
        },
        Case {
            name: "required field removed: old client reads the result",
            additive: false,
            expect: Expect::Error(&["missing field `name`"]),
            got: outcome(old_to_removed.get_user(1).await),
        },
    ];
    for server in [old_server, new_server, retyped_server, removed_server] {
        server.shutdown().await;
    }
    cases
}

/// Whether `got` is what the case expects.
fn as_expected(case: &Case) -> bool {
    match (&case.expect, &case.got) {
        (Expect::Value(want), Ok(got)) => got == want,
        (Expect::Error(parts), Err(message)) => parts.iter().all(|p| message.contains(p)),
        _ => false,
    }
}

/// A wrong value: a value where another value, or an error, was the right answer.
fn wrong_value(case: &Case) -> bool {
    case.got.is_ok() && !as_expected(case)
}

#[tokio::test]
async fn every_change_with_every_serializer() {
    let mut table = vec![format!(
        "{:<62} {:>8} {:>8} {:>8} {:>8}",
        "case", "msgpack", "json", "bincode", "postcard"
    )];
    let kinds = [
        SerializerKind::MsgPack,
        SerializerKind::Json,
        SerializerKind::Bincode,
        SerializerKind::Postcard,
    ];
    let mut results = Vec::new();
    for kind in kinds {
        results.push(run_cases(kind).await);
    }
    for row in 0..results[0].len() {
        let marks: Vec<&str> = results
            .iter()
            .map(|cases| match (&cases[row], as_expected(&cases[row])) {
                (_, true) => "ok",
                (case, false) if wrong_value(case) => "WRONG",
                _ => "error",
            })
            .collect();
        table.push(format!(
            "{:<62} {:>8} {:>8} {:>8} {:>8}",
            results[0][row].name, marks[0], marks[1], marks[2], marks[3]
        ));
    }
    println!("{}", table.join("\n"));

    for (kind, cases) in kinds.iter().zip(&results) {
        for case in cases {
            // The default serializer: every case as expected, errors naming what changed.
            if *kind == SerializerKind::default() {
                assert!(as_expected(case), "{kind}: {}: got {:?}", case.name, case.got);
            }
            // Every serializer: a value only when it is the right one.
            assert!(
                !wrong_value(case),
                "{kind}: {}: a wrong value {:?}",
                case.name,
                case.got
            );
            // What is not additive fails with every serializer.
            if !case.additive {
                assert!(case.got.is_err(), "{kind}: {}: got {:?}", case.name, case.got);
            }
        }
    }
}

#[test]
fn each_version_records_its_schema() {
    let old = v1::ProfilesClient::schema();
    let new = v2::ProfilesClient::schema();
    assert!(old.method("audit").is_none() && new.method("audit").is_some());
    let greet = new.method("greet").unwrap();
    assert_eq!(
        greet.args.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
        ["name", "greeting"]
    );
    let waypost_core::schema::TypeDef::Struct(fields) = &new.types["User"] else {
        panic!("User is a struct: {:?}", new.types["User"]);
    };
    assert!(fields.iter().any(|f| f.name == "email"));
    assert_ne!(old.fingerprint(), new.fingerprint());
    assert_eq!(old.fingerprint(), v1::ProfilesClient::schema().fingerprint());
    // The server adapter publishes the same schema.
    use waypost_core::server::Service;
    assert_eq!(v2::ProfilesServer::new(v2::Impl).schema(), Some(new));
}

/// The rollout a fleet goes through: providers of version 1 replaced one by one by version 2
/// against a real etcd, while a version-1 consumer and a version-2 consumer call steadily,
/// the latter also calling the method version 2 adds. Method-aware routing sends that method
/// only to upgraded providers; every other change is additive. Not one call may fail.
mod rollout {
    use std::future::Future;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use waypost_core::client::{ClientOptions, ClusterInvoker, ConnectionPool, InstanceSource};
    use waypost_core::fault::InstanceHealth;
    use waypost_core::registry::{DiscoveryCache, DiscoveryOptions, Registry};
    use waypost_core::server::{Registration, RunningServer, ServerBuilder, Service};
    use waypost_core::Channel;
    use waypost_registry::etcd::{EtcdOptions, EtcdRegistry};
    use waypost_tests::servers::{shared_etcd, unique_root};
    use waypost_tests::wait_until;

    use super::{common, shapes, v1, v2};

    async fn registry(endpoints: &[String], root: &str) -> Arc<EtcdRegistry> {
        let options = EtcdOptions {
            endpoints: endpoints.to_vec(),
            root: root.to_owned(),
            ttl: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            credentials: None,
            tls: None,
            reconcile_interval: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(30),
        };
        Arc::new(EtcdRegistry::connect(options).await.expect("connect to etcd"))
    }

    /// A provider with its own registry connection, as a process of its own would have.
    async fn provider(service: impl Service, endpoints: &[String], root: &str) -> (RunningServer, Arc<EtcdRegistry>) {
        let mut server = ServerBuilder::new()
            .add_service(service)
            .deregister_wait(Duration::from_secs(2), Duration::from_millis(300))
            .bind("127.0.0.1:0")
            .await
            .expect("bind");
        let registry = registry(endpoints, root).await;
        let registration = Registration {
            host: "127.0.0.1".into(),
            weight: 1,
            metadata: Default::default(),
        };
        server
            .register(registry.clone(), &registration)
            .await
            .expect("register");
        (server, registry)
    }

    /// A consumer's channel over its own registry connection and discovery cache.
    async fn consumer(endpoints: &[String], root: &str) -> (Channel, Arc<DiscoveryCache>) {
        let registry: Arc<dyn Registry> = registry(endpoints, root).await;
        let cache = Arc::new(
            DiscoveryCache::new(registry, DiscoveryOptions::default())
                .await
                .expect("cache"),
        );
        let invoker = ClusterInvoker::new(
            InstanceSource::Discovery(cache.clone()),
            Arc::new(ConnectionPool::new(ClientOptions::default())),
            Arc::new(InstanceHealth::default()),
        );
        let channel = Channel::new(Arc::new(invoker)).with_timeout(Duration::from_secs(2));
        (channel, cache)
    }

    /// Calls made and failures seen by the steady callers.
    #[derive(Default)]
    struct Tally {
        calls: AtomicU64,
        audits: AtomicU64,
        failures: Mutex<Vec<String>>,
    }

    /// Calls `call(n)` for n = 0, 1, ... until `stop`, a millisecond apart, counting into
    /// `tally`; a call gives the failure's description, if it failed.
    fn steady<F, Fut>(stop: Arc<AtomicBool>, tally: Arc<Tally>, call: F) -> tokio::task::JoinHandle<()>
    where
        F: Fn(u64) -> Fut + Send + 'static,
        Fut: Future<Output = Option<String>> + Send,
    {
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Some(failure) = call(n).await {
                    tally.failures.lock().unwrap().push(failure);
                }
                tally.calls.fetch_add(1, Ordering::Relaxed);
                n += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    }

    /// A failure's description, unless `result` is `Ok` and `check` accepts its value.
    fn judge<T: std::fmt::Debug>(
        what: &str,
        result: Result<T, waypost_core::RpcError>,
        check: impl Fn(&T) -> bool,
    ) -> Option<String> {
        match result {
            Ok(value) if check(&value) => None,
            Ok(value) => Some(format!("{what}: wrong value {value:?}")),
            Err(e) => Some(format!("{what}: {e}")),
        }
    }

    #[tokio::test]
    async fn three_providers_replaced_one_by_one_while_both_versions_call() {
        let Some(endpoints) = shared_etcd() else { return };
        let root = unique_root("rollout");
        let mut old = Vec::new();
        for _ in 0..3 {
            old.push(provider(v1::ProfilesServer::new(v1::Impl), &endpoints, &root).await);
        }
        let (old_channel, old_cache) = consumer(&endpoints, &root).await;
        let (new_channel, new_cache) = consumer(&endpoints, &root).await;
        let old_client = v1::ProfilesClient::new(old_channel).unwrap();
        let new_client = v2::ProfilesClient::new(new_channel).unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let (old_tally, new_tally) = (Arc::new(Tally::default()), Arc::new(Tally::default()));
        let ada = shapes::v1::User {
            id: 1,
            name: "Ada".into(),
            tier: common::Tier1::Pro { seats: 3 },
        };
        let mut callers = Vec::new();
        callers.push(steady(stop.clone(), old_tally.clone(), {
            let client = old_client.clone();
            move |n| {
                let (client, ada) = (client.clone(), ada.clone());
                async move {
                    match n % 3 {
                        0 => judge("v1 get_user", client.get_user(1).await, |u| *u == ada),
                        1 => judge("v1 put_user", client.put_user(ada).await, |s| {
                            s.starts_with("User { id: 1, name: \"Ada\"")
                        }),
                        _ => judge("v1 greet", client.greet("Ada".into()).await, |s| s == "Hello, Ada"),
                    }
                }
            }
        }));
        let audit_on = Arc::new(AtomicBool::new(false));
        callers.push(steady(stop.clone(), new_tally.clone(), {
            let (client, audit_on, tally) = (new_client.clone(), audit_on.clone(), new_tally.clone());
            move |n| {
                let (client, audit_on, tally) = (client.clone(), audit_on.clone(), tally.clone());
                async move {
                    let user = shapes::v2::User {
                        id: 2,
                        name: "Bea".into(),
                        tier: common::Tier2::Free,
                        email: Some("bea@example.com".into()),
                        score: 4,
                    };
                    match n % 4 {
                        0 => judge("v2 get_user", client.get_user(2).await, |u| {
                            u.id == 2 && u.name == "Ada"
                        }),
                        1 => judge("v2 put_user", client.put_user(user).await, |s| {
                            s.starts_with("User { id: 2, name: \"Bea\", tier: Free")
                        }),
                        2 => judge("v2 greet", client.greet("Bea".into(), Some("Hi".into())).await, |s| {
                            s == "Hi, Bea" || s == "Hello, Bea"
                        }),
                        _ if audit_on.load(Ordering::Relaxed) => {
                            tally.audits.fetch_add(1, Ordering::Relaxed);
                            judge("v2 audit", client.audit(n).await, |s| *s == format!("audited {n}"))
                        }
                        _ => None,
                    }
                }
            }
        }));

        let count = |cache: Arc<DiscoveryCache>, want: usize| async move {
            cache.cached("Profiles:1.0").is_some_and(|list| list.len() == want)
        };
        wait_until(
            Duration::from_secs(10),
            "both consumers see the three v1 providers",
            || async { count(old_cache.clone(), 3).await && count(new_cache.clone(), 3).await },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;

        let mut new = Vec::new();
        for (step, (server, registry)) in old.into_iter().enumerate() {
            new.push(provider(v2::ProfilesServer::new(v2::Impl), &endpoints, &root).await);
            wait_until(
                Duration::from_secs(10),
                "both consumers see the new provider",
                || async { count(old_cache.clone(), 4).await && count(new_cache.clone(), 4).await },
            )
            .await;
            // The version-2 consumer starts using the new method once a provider has it.
            audit_on.store(true, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(300)).await;
            server.shutdown().await;
            registry.close().await.expect("close the provider's registry");
            wait_until(
                Duration::from_secs(10),
                "both consumers see the old provider leave",
                || async { count(old_cache.clone(), 3).await && count(new_cache.clone(), 3).await },
            )
            .await;
            let audits = new_tally.audits.load(Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(300)).await;
            println!(
                "step {step}: v1 consumer {} calls, v2 consumer {} calls ({audits} audits)",
                old_tally.calls.load(Ordering::Relaxed),
                new_tally.calls.load(Ordering::Relaxed)
            );
        }
        stop.store(true, Ordering::Relaxed);
        for caller in callers {
            caller.await.expect("caller");
        }

        // Every instance now serves version 2, whose schema the consumers fetched.
        let schemas = new_cache.schemas("Profiles:1.0").expect("schemas");
        assert_eq!(schemas.len(), 1, "{:?}", schemas.keys());
        assert!(schemas.values().all(|s| s.method("audit").is_some()));

        let (old_failures, new_failures) = (
            old_tally.failures.lock().unwrap().clone(),
            new_tally.failures.lock().unwrap().clone(),
        );
        let (old_calls, new_calls) = (
            old_tally.calls.load(Ordering::Relaxed),
            new_tally.calls.load(Ordering::Relaxed),
        );
        let audits = new_tally.audits.load(Ordering::Relaxed);
        println!(
            "rollout: v1 consumer {old_calls} calls, v2 consumer {new_calls} calls ({audits} audits), failures {} + {}",
            old_failures.len(),
            new_failures.len()
        );
        assert!(old_failures.is_empty(), "v1 consumer: {old_failures:?}");
        assert!(new_failures.is_empty(), "v2 consumer: {new_failures:?}");
        assert!(
            old_calls > 300 && new_calls > 300 && audits > 50,
            "{old_calls} {new_calls} {audits}"
        );

        for (server, registry) in new {
            server.shutdown().await;
            registry.close().await.expect("close");
        }
        old_cache.close().await;
        new_cache.close().await;
    }
}

/// A provider whose schema breaks a method as a consumer calls it: warned about once per
/// method, and, with `schema_check: strict`, sent none of that method's calls.
mod schema_check {
    use std::sync::Arc;

    use waypost_core::client::{ClientOptions, ClusterInvoker, ClusterOptions, ConnectionPool, InstanceSource};
    use waypost_core::config::SchemaCheck;
    use waypost_core::fault::InstanceHealth;
    use waypost_core::registry::{DiscoveryCache, DiscoveryOptions, Registry};
    use waypost_core::server::{Registration, RunningServer};
    use waypost_core::Channel;
    use waypost_registry::memory::MemoryRegistry;
    use waypost_tests::logs::CapturedLogs;
    use waypost_tests::servers::unique_root;

    use super::{retyped, v1};

    async fn registered(mut server: RunningServer, registry: Arc<dyn Registry>) -> RunningServer {
        let registration = Registration {
            host: "127.0.0.1".into(),
            weight: 1,
            metadata: Default::default(),
        };
        server.register(registry, &registration).await.expect("register");
        server
    }

    async fn client(root: &str, check: SchemaCheck) -> (v1::ProfilesClient, Arc<DiscoveryCache>) {
        let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::shared(root));
        let cache = Arc::new(
            DiscoveryCache::new(registry, DiscoveryOptions::default())
                .await
                .unwrap(),
        );
        let invoker = ClusterInvoker::with_options(
            InstanceSource::Discovery(cache.clone()),
            Arc::new(ConnectionPool::new(ClientOptions::default())),
            Arc::new(InstanceHealth::default()),
            ClusterOptions {
                schema_check: check,
                ..ClusterOptions::default()
            },
        );
        (v1::ProfilesClient::new(Channel::new(Arc::new(invoker))).unwrap(), cache)
    }

    #[tokio::test]
    async fn an_incompatible_provider_is_warned_about_once_and_skipped_when_strict() {
        let root = unique_root("check");
        let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::shared(&root));
        let good = registered(v1::serve().await.0, registry.clone()).await;
        let bad = registered(retyped::serve().await.0, registry.clone()).await;
        let logs = CapturedLogs::start();

        let mut failed = Vec::new();
        for check in [SchemaCheck::Warn, SchemaCheck::Strict, SchemaCheck::Off] {
            let mark = logs.len();
            let (client, cache) = client(&root, check).await;
            let mut failures = 0;
            for _ in 0..20 {
                failures += usize::from(client.get_user(1).await.is_err());
            }
            failed.push(failures);
            let warnings = logs.since(mark);
            let lines = warnings
                .lines()
                .filter(|l| l.contains("cannot serve this method"))
                .count();
            match check {
                SchemaCheck::Off => assert_eq!(lines, 0, "{warnings}"),
                // put_user and get_user each break against the retyped schema.
                _ => {
                    assert_eq!(lines, 2, "{warnings}");
                    assert!(
                        warnings.contains("get_user result.name: written as u32, read as String"),
                        "{warnings}"
                    );
                }
            }
            cache.close().await;
        }
        // Round robin over both: half the calls reach the retyped provider, unless strict.
        assert_eq!(failed, [10, 0, 10]);

        // With only the incompatible provider left, a strict consumer says why it sends nothing.
        let (client, cache) = client(&root, SchemaCheck::Strict).await;
        good.shutdown().await;
        waypost_tests::wait_until(std::time::Duration::from_secs(5), "the good provider leaves", || {
            let cache = cache.clone();
            async move { cache.instances("Profiles:1.0").await.is_ok_and(|list| list.len() == 1) }
        })
        .await;
        let e = client.get_user(1).await.unwrap_err();
        assert!(e.to_string().contains("schema_check: strict"), "{e}");
        assert!(client.greet("Ada".into()).await.is_ok(), "greet did not change");
        cache.close().await;
        bad.shutdown().await;
        registry.close().await.unwrap();
    }
}

/// With a fixed-schema serializer, a call whose two sides' types differ never runs: a version 2
/// client (a field and a variant added) calling a version 1 server gets `SchemaMismatch`
/// naming both fingerprints and the first difference, before the handler reads a byte (it had
/// read the bytes as something else and answered a wrong value). The same build, and the
/// default serializer across the change, are served as before.
#[tokio::test]
async fn a_fixed_schema_serializer_refuses_calls_whose_types_differ() {
    let (old_server, old) = v1::serve().await;
    let ada_v2 = shapes::v2::User {
        id: 1,
        name: "Ada".into(),
        tier: common::Tier2::Gold(1),
        email: Some("ada@example.com".into()),
        score: 9,
    };
    let fingerprint = |schema: waypost_core::schema::ServiceSchema| schema.method_fingerprint("put_user").unwrap();
    let (theirs, ours) = (
        fingerprint(v1::ProfilesClient::schema()),
        fingerprint(v2::ProfilesClient::schema()),
    );
    assert_ne!(theirs, ours);
    for kind in [SerializerKind::Bincode, SerializerKind::Postcard] {
        let new_to_old = v2::ProfilesClient::new(channel(&old, kind)).unwrap();
        let error = new_to_old.put_user(ada_v2.clone()).await.unwrap_err();
        let RpcError::SchemaMismatch(mismatch) = &error else {
            panic!("{kind}: expected a schema mismatch, got {error:?}");
        };
        assert_eq!(
            (mismatch.caller.as_str(), mismatch.provider.as_str()),
            (ours.as_str(), theirs.as_str())
        );
        let difference = mismatch.difference.as_deref().expect("the first difference is named");
        assert!(difference.starts_with("put_user"), "{kind}: {difference}");
        let text = error.to_string();
        assert!(text.contains(&ours) && text.contains(&theirs), "{kind}: {text}");
        println!("{kind}: {text}");
        // Every method whose types changed is refused, results included.
        assert!(
            matches!(new_to_old.get_user(1).await, Err(RpcError::SchemaMismatch(_))),
            "{kind}"
        );
        assert!(
            matches!(new_to_old.best_tier().await, Err(RpcError::SchemaMismatch(_))),
            "{kind}"
        );
        // The same build is served.
        let same = v1::ProfilesClient::new(channel(&old, kind)).unwrap();
        assert_eq!(same.get_user(1).await.unwrap().name, "Ada", "{kind}");
    }
    // The default serializer reads the additive change by name.
    let new_to_old = v2::ProfilesClient::new(channel(&old, SerializerKind::MsgPack)).unwrap();
    let mut known = ada_v2;
    known.tier = common::Tier2::Pro { seats: 3 };
    assert!(new_to_old.put_user(known).await.unwrap().contains("Ada"));
    old_server.shutdown().await;
}
