//! The built-in health method every served service answers.
//!
//! A call of [`HEALTH_METHOD`] on any service a server serves returns that server's
//! [`Health`], encoded with the caller's serializer, without running user code and without
//! counting against the server's concurrency limit: [`Health::Serving`] normally,
//! [`Health::Draining`] from the moment shutdown begins (while it still deregisters and
//! finishes its calls). A load balancer or an operator (`waypost health`) probes it with
//! [`Channel::health`](crate::client::Channel::health); a server without the service answers
//! `ServiceNotFound`, as for any call.

use serde::{Deserialize, Serialize};

/// The method name of the health check. Names starting with `__` are reserved: `#[service]`
/// refuses them.
pub const HEALTH_METHOD: &str = "__health";

/// What a server says of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Health {
    /// Serving calls.
    Serving,
    /// Shutting down: deregistered or deregistering, finishing its calls; send new calls
    /// elsewhere.
    Draining,
}

impl Health {
    /// `serving` or `draining`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Serving => "serving",
            Self::Draining => "draining",
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
