//! The state a server's accept loop, connections and calls share ([`Shared`]): the services,
//! the interceptors and the tower stack, the limits, the tunables, TLS, and the tokens that
//! tell every task how far shutdown has gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::compression::Compression;
use crate::context::MetadataLimits;
use crate::health::Health;
use crate::interceptor::Interceptors;
use crate::schema::MethodPrints;
use crate::stream::StreamWindow;
#[cfg(feature = "tls")]
use crate::tls::ServerTls;
use crate::transport::ByteBudget;

use super::call::ServerStack;
#[cfg(feature = "http")]
use super::http;
use super::limits::Limits;
use super::Service;

/// State shared by the accept loop, the connections and the calls.
pub(crate) struct Shared {
    pub(crate) services: HashMap<String, Arc<dyn Service>>,
    /// Each service's fingerprints of its methods' types (for the callers that encode with a
    /// fixed-schema serializer), by service key.
    pub(crate) prints: HashMap<String, MethodPrints>,
    pub(crate) interceptors: Interceptors,
    /// The tower layers around dispatch, when there are any.
    pub(crate) stack: Option<ServerStack>,
    /// The server's concurrency limit and the services' and methods' limits.
    pub(crate) limits: Limits,
    /// One permit per connection served.
    pub(crate) connection_slots: Arc<Semaphore>,
    pub(crate) max_connections: usize,
    pub(crate) idle_timeout: Duration,
    /// A stream its peer keeps from making progress for this long ends.
    pub(crate) stream_idle: Option<Duration>,
    pub(crate) max_frame_len: usize,
    /// The budget of large request bodies.
    pub(crate) request_bytes: ByteBudget,
    pub(crate) frame_timeout: Duration,
    pub(crate) metadata_limits: MetadataLimits,
    /// The items of a client's stream taken ahead of its handler.
    pub(crate) stream_window: StreamWindow,
    /// How responses are compressed for the clients that ask; none: never.
    pub(crate) compression: Option<Compression>,
    /// TLS on every connection, when configured.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<ServerTls>,
    /// Set when shutdown begins, before deregistering: the health method answers `Draining`.
    pub(crate) leaving: AtomicBool,
    /// Cancelled when the server stops taking calls: connections send GoAway, new requests
    /// are refused.
    pub(crate) draining: CancellationToken,
    /// Cancelled when the drain times out: streams still running end with `ShuttingDown`.
    pub(crate) ending: CancellationToken,
    /// Cancelled when the drain ends: calls still running are dropped, connections close.
    pub(crate) abort: CancellationToken,
    /// Every call task, so shutdown can wait for them.
    pub(crate) calls: TaskTracker,
    /// When the last call arrived, recorded only while shutdown waits for quiet.
    pub(crate) activity: Activity,
    /// The schemas and OpenAPI document the HTTP ingress serves, built at its first request.
    #[cfg(feature = "http")]
    pub(crate) http: http::HttpState,
}

impl Shared {
    /// What the health method answers.
    pub(crate) fn health(&self) -> Health {
        if self.leaving.load(Ordering::Relaxed) || self.draining.is_cancelled() {
            Health::Draining
        } else {
            Health::Serving
        }
    }
}

/// When calls arrive, recorded only while someone watches (a read of one flag otherwise).
#[derive(Default)]
pub(crate) struct Activity {
    watching: std::sync::atomic::AtomicBool,
    last_ms: std::sync::atomic::AtomicU64,
    epoch: std::sync::OnceLock<tokio::time::Instant>,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        let epoch = *self.epoch.get_or_init(tokio::time::Instant::now);
        epoch.elapsed().as_millis() as u64
    }

    /// A call arrived.
    pub(crate) fn call_arrived(&self) {
        use std::sync::atomic::Ordering;
        if self.watching.load(Ordering::Relaxed) {
            self.last_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// Waits until no call has arrived for `quiet`, at most `grace`.
    pub(crate) async fn wait_quiet(&self, quiet: Duration, grace: Duration) -> bool {
        use std::sync::atomic::Ordering;
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
        self.watching.store(true, Ordering::Relaxed);
        let give_up = tokio::time::Instant::now() + grace;
        let quiet_ms = quiet.as_millis() as u64;
        loop {
            let idle = self.now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed));
            if idle >= quiet_ms {
                return true;
            }
            let next = tokio::time::Instant::now() + Duration::from_millis(quiet_ms - idle);
            if next >= give_up {
                tokio::time::sleep_until(give_up).await;
                return false;
            }
            tokio::time::sleep_until(next).await;
        }
    }
}
