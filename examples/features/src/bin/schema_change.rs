//! Changing a service during a rolling upgrade: version 2 adds fields and a method, and old and
//! new programs keep calling each other.
//!
//! The default encoding (msgpack) writes structs as maps by field name, so a field that one
//! side does not know is skipped and a field it misses takes its default. Both versions here
//! are the service `Profiles` (version `1.0` on the wire: an additive change keeps the
//! version); version 2 of `Profile` adds `email` (an `Option`) and `plan` (with
//! `#[serde(default)]`), and the service adds a method. A new client calling an old provider
//! gets the new fields' defaults, an old client calling a new provider ignores them, and the
//! new method on an old provider fails with `method_not_found`, never a misread value.
//!
//! `cargo run -p waypost-examples --bin schema_change`

use waypost::server::ServerBuilder;
use waypost::{Channel, ErrorKind};

/// What was deployed first.
mod v1 {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Profile {
        pub id: u64,
        pub name: String,
    }

    #[waypost::service(name = "Profiles", version = "1.0")]
    pub trait Profiles {
        async fn get(&self, id: u64) -> Profile;
    }

    pub struct Store;

    impl Profiles for Store {
        async fn get(&self, id: u64) -> Profile {
            Profile { id, name: "Ada".into() }
        }
    }
}

/// The version rolling out.
mod v2 {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Profile {
        pub id: u64,
        pub name: String,
        /// New: absent from version 1's answers, so `None`.
        pub email: Option<String>,
        /// New, with a default for answers without it.
        #[serde(default = "free")]
        pub plan: String,
    }

    fn free() -> String {
        "free".into()
    }

    #[waypost::service(name = "Profiles", version = "1.0")]
    pub trait Profiles {
        async fn get(&self, id: u64) -> Profile;
        /// New in version 2.
        async fn count(&self) -> u64;
    }

    pub struct Store;

    impl Profiles for Store {
        async fn get(&self, id: u64) -> Profile {
            Profile {
                id,
                name: "Ada".into(),
                email: Some("ada@example.com".into()),
                plan: "pro".into(),
            }
        }

        async fn count(&self) -> u64 {
            1
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let old = ServerBuilder::new()
        .add_service(v1::ProfilesServer::new(v1::Store))
        .bind("127.0.0.1:0")
        .await?;
    let new = ServerBuilder::new()
        .add_service(v2::ProfilesServer::new(v2::Store))
        .bind("127.0.0.1:0")
        .await?;
    let old_addr = old.local_addr()?.to_string();
    let new_addr = new.local_addr()?.to_string();

    // A new client calls a provider not yet upgraded: the new fields take their defaults.
    let new_client = v2::ProfilesClient::new(Channel::direct(&old_addr)?)?;
    let profile = new_client.get(1).await?;
    println!("new client, old provider: {profile:?}");
    if (profile.email.as_deref(), profile.plan.as_str()) != (None, "free") {
        return Err(waypost_examples::unexpected("the new fields' defaults", profile));
    }
    match new_client.count().await {
        Err(e) if e.kind() == ErrorKind::MethodNotFound => println!("new method, old provider: {e}"),
        other => return Err(waypost_examples::unexpected("method_not_found", other)),
    }

    // An old client calls an upgraded provider: it reads the fields it knows.
    let old_client = v1::ProfilesClient::new(Channel::direct(&new_addr)?)?;
    let profile = old_client.get(1).await?;
    println!("old client, new provider: {profile:?}");
    if profile
        != (v1::Profile {
            id: 1,
            name: "Ada".into(),
        })
    {
        return Err(waypost_examples::unexpected("version 1's fields", profile));
    }

    old.shutdown().await;
    new.shutdown().await;
    Ok(())
}
