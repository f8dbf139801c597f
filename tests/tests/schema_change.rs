//! Changing a service during a rollout: old and new clients calling old and new servers over
//! real TCP, for every serializer and every kind of change.
//!
//! Version 2 adds a field of an `Option` type and one with `#[serde(default)]` to a struct, a
//! variant to an enum, a method, and a last argument of an `Option` type. Two incompatible
//! versions change a field's type and remove a field. The default serializer (msgpack) must
//! give the right value for every additive case and an error naming the field or the variant
//! for the others; no serializer may give a wrong value. The printed table is the matrix the
//! README quotes.

use rpc_core::server::{RunningServer, ServerBuilder};
use rpc_core::{Channel, RpcError, SerializerKind};

/// A version of the service whose methods are those of version 1, over its own `User`.
macro_rules! version_one_methods {
    ($module:ident, $sample:expr) => {
        pub mod $module {
            pub use super::common::*;
            use super::shapes::$module::User;

            #[rpc_core::service(name = "Profiles", version = "1.0")]
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

            pub async fn serve() -> (rpc_core::server::RunningServer, String) {
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

    #[rpc_core::service(name = "Profiles", version = "1.0")]
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

    pub async fn serve() -> (rpc_core::server::RunningServer, String) {
        super::serve(ProfilesServer::new(Impl)).await
    }
}

async fn serve(service: impl rpc_core::server::Service) -> (RunningServer, String) {
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
    let rpc_core::schema::TypeDef::Struct(fields) = &new.types["User"] else {
        panic!("User is a struct: {:?}", new.types["User"]);
    };
    assert!(fields.iter().any(|f| f.name == "email"));
    assert_ne!(old.fingerprint(), new.fingerprint());
    assert_eq!(old.fingerprint(), v1::ProfilesClient::schema().fingerprint());
    // The server adapter publishes the same schema.
    use rpc_core::server::Service;
    assert_eq!(v2::ProfilesServer::new(v2::Impl).schema(), Some(new));
}
