//! The etcd requests the backend makes, each bounded by the configured timeout and retried
//! with short backoff while etcd answers with a transient error (no leader during an
//! election, a member going away, a broken connection), so a cluster failover or a restart
//! does not fail a registration that would succeed a moment later.
//!
//! An attempt that has not answered within a quarter of the timeout is hedged: another one is
//! sent every quarter while the earlier ones stay pending, and the first answer wins. The
//! client sends each request to a member at random, and a frozen member keeps its connections
//! open and answers nothing; the first hedge also has the members probed at once (see
//! [`super::members`]), which takes an unresponsive one out of the balancer, so later hedges
//! go to members that answer. A transient error (a member without a leader answers at once)
//! has them probed too. Every request here may run more than once: puts and deletes are
//! idempotent, and a lease granted twice is kept alive only once, so etcd expires the other.

use std::future::Future;
use std::time::Duration;

use etcd_client::{GetOptions, GetResponse, PutOptions, WatchOptions};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;
use tracing::debug;
use waypost_core::backoff::Backoff;
use waypost_core::registry::RegistryError;

use super::{unavailable, Shared, BACKEND};

/// gRPC codes that say "try again": Unknown, DeadlineExceeded, Aborted, Unavailable.
const TRANSIENT_GRPC_CODES: [i32; 4] = [2, 4, 10, 14];

fn is_transient(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => TRANSIENT_GRPC_CODES.contains(&i32::from(status.code())),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// Runs `attempt`, and another one every `every` until one of them finishes; returns the
/// first to finish. `suspect` runs when the first attempt is overdue.
async fn hedged<T, F, Fut>(attempt: &mut F, every: Duration, suspect: impl FnOnce()) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let mut pending = FuturesUnordered::new();
    pending.push(attempt());
    let mut suspect = Some(suspect);
    loop {
        tokio::select! {
            Some(done) = pending.next() => return done,
            () = tokio::time::sleep(every) => {
                if let Some(suspect) = suspect.take() {
                    debug!("etcd request unanswered; hedging it and probing the members");
                    suspect();
                }
                pending.push(attempt());
            }
        }
    }
}

impl Shared {
    /// Runs `attempt` until it succeeds, fails for good, or the timeout passes.
    async fn retrying<T, F, Fut>(&self, operation: &'static str, mut attempt: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.options.timeout;
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
        loop {
            let attempts = hedged(&mut attempt, self.options.timeout / 4, || self.suspect_members());
            match tokio::time::timeout_at(deadline, attempts).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => {
                    let delay = backoff.next_delay();
                    if !is_transient(&e) || Instant::now() + delay >= deadline {
                        return Err(unavailable(&self.options.endpoints, operation, e));
                    }
                    debug!(operation, error = %e, "transient etcd error; retrying");
                    // The member that answered may be leaderless or leaving: have the members
                    // probed, so that the retries go to one that works.
                    self.suspect_members();
                    tokio::time::sleep(delay).await;
                }
                Err(_) => {
                    return Err(RegistryError::timed_out(
                        BACKEND,
                        &self.options.endpoints,
                        operation,
                        self.options.timeout,
                    ))
                }
            }
        }
    }

    pub(crate) async fn get(&self, key: &str, options: Option<GetOptions>) -> Result<GetResponse, RegistryError> {
        self.retrying("get", || {
            let mut kv = self.client.kv_client();
            let options = options.clone();
            async move { kv.get(key, options).await }
        })
        .await
    }

    pub(crate) async fn put(&self, key: &str, value: &str, lease: i64) -> Result<(), RegistryError> {
        self.retrying("put", || {
            let mut kv = self.client.kv_client();
            async move { kv.put(key, value, Some(PutOptions::new().with_lease(lease))).await }
        })
        .await
        .map(drop)
    }

    /// Puts a key without a lease.
    pub(crate) async fn put_plain(&self, key: &str, value: &str) -> Result<(), RegistryError> {
        self.retrying("put", || {
            let mut kv = self.client.kv_client();
            async move { kv.put(key, value, None).await }
        })
        .await
        .map(drop)
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), RegistryError> {
        self.retrying("delete", || {
            let mut kv = self.client.kv_client();
            async move { kv.delete(key, None).await }
        })
        .await
        .map(drop)
    }

    /// Grants a lease; returns its id.
    pub(crate) async fn grant(&self, ttl_secs: i64) -> Result<i64, RegistryError> {
        self.retrying("lease grant", || {
            let mut lease = self.client.lease_client();
            async move { lease.grant(ttl_secs, None).await }
        })
        .await
        .map(|r| r.id())
    }

    pub(crate) async fn revoke(&self, id: i64) -> Result<(), RegistryError> {
        self.retrying("lease revoke", || {
            let mut lease = self.client.lease_client();
            async move { lease.revoke(id).await }
        })
        .await
        .map(drop)
    }

    /// The remaining TTL of a lease; `-1` when etcd does not know it.
    pub(crate) async fn time_to_live(&self, id: i64) -> Result<i64, RegistryError> {
        self.retrying("lease time-to-live", || {
            let mut lease = self.client.lease_client();
            async move { lease.time_to_live(id, None).await }
        })
        .await
        .map(|r| r.ttl())
    }

    pub(crate) async fn watch(
        &self,
        prefix: &str,
        options: WatchOptions,
    ) -> Result<etcd_client::WatchStream, RegistryError> {
        self.retrying("watch", || {
            let mut watch = self.client.watch_client();
            let options = options.clone();
            async move { watch.watch(prefix, Some(options)).await }
        })
        .await
    }
}
