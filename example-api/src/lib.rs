//! The example `UserService`: the trait both example programs share, and the in-memory
//! implementation the provider serves.

#![deny(missing_docs)]

use std::io::IsTerminal;

use serde::{Deserialize, Serialize};
use waypost::Streaming;

/// Logs to stderr at `default_level` unless `RUST_LOG` says otherwise; the scheduler's own
/// chatter is kept at `warn`.
pub fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| format!("{default_level},tokio_cron_scheduler=warn").into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// A user record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Unique id.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// The provider instance (`host:port`) that answered.
    pub served_by: String,
}

/// The error of [`UserService::get_user`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserError {
    /// No user has this id.
    NotFound(u64),
}

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserError::NotFound(id) => write!(f, "no user with id {id}"),
        }
    }
}

impl std::error::Error for UserError {}

/// Looks users up.
#[waypost::service(name = "UserService", version = "1.0")]
pub trait UserService {
    /// The user with this id.
    #[idempotent]
    async fn get_user(&self, id: u64) -> Result<User, UserError>;
    /// Which provider answered: its `host:port`.
    #[idempotent]
    async fn whoami(&self) -> String;
    /// Every user from `from_id` on, one by one (a server stream).
    async fn list_users(&self, from_id: u64) -> Streaming<User>;
}

/// A `UserService` over a fixed table, reporting `instance` as its address.
#[derive(Debug, Clone)]
pub struct InMemoryUsers {
    instance: String,
}

impl InMemoryUsers {
    /// A service answering `whoami` with `instance`.
    pub fn new(instance: impl Into<String>) -> Self {
        Self {
            instance: instance.into(),
        }
    }
}

/// The users' names; a user's id is its index.
const NAMES: [&str; 5] = ["Ada", "Barbara", "Claude", "Dennis", "Edsger"];

impl InMemoryUsers {
    fn user(&self, id: u64) -> Option<User> {
        let name = usize::try_from(id).ok().and_then(|i| NAMES.get(i))?;
        Some(User {
            id,
            name: (*name).to_owned(),
            served_by: self.instance.clone(),
        })
    }
}

impl UserService for InMemoryUsers {
    async fn get_user(&self, id: u64) -> Result<User, UserError> {
        self.user(id).ok_or(UserError::NotFound(id))
    }

    async fn whoami(&self) -> String {
        self.instance.clone()
    }

    async fn list_users(&self, from_id: u64) -> Streaming<User> {
        let users: Vec<User> = (from_id..NAMES.len() as u64).filter_map(|id| self.user(id)).collect();
        Streaming::from_iter(users)
    }
}
