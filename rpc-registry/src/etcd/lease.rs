//! The process's lease: granted on demand, kept alive by etcd's keep-alive stream, replaced
//! (with every local key put again) when it is lost.
//!
//! A keeper task per granted lease sends a keep-alive every TTL/3 on the keep-alive stream.
//! A broken stream is reopened with backoff. The lease counts as lost when etcd answers a
//! keep-alive with TTL 0 (it no longer knows the lease: wiped or expired), or when no
//! keep-alive has succeeded for a whole TTL (etcd will have expired it). Then the keeper turns
//! into the recovery task: it runs the registry's repair pass (the reconciler's, one at a
//! time), retrying with capped backoff, until a new lease is granted and every local instance
//! is on it.
//!
//! A lease that replaces a lost one is put to use after a random pause of up to half the TTL
//! (at most 2 s), whoever asked for it (the recovery task, the reconciler, a registration): an
//! etcd that lost its data, or was away for longer than the TTL, loses every process's lease at
//! once and answers their grants together when it is back, and the pause spreads their
//! re-registrations instead of sending them in one burst.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn, Instrument};
use waypost_core::backoff::{self, Backoff};
use waypost_core::metrics;
use waypost_core::registry::RegistryError;
use waypost_core::BoxFuture;

use super::{Shared, BACKEND};

/// The longest random pause before a lost lease is replaced.
const MAX_REPLACEMENT_PAUSE: Duration = Duration::from_secs(2);

#[derive(Default)]
pub(crate) struct LeaseManager {
    current: Mutex<Option<i64>>,
    /// Set when the current lease was lost: the next grant replaces it, after a pause.
    replacing: AtomicBool,
    /// Serializes grants so concurrent registrations share one lease.
    granting: tokio::sync::Mutex<()>,
    /// Keeper (and recovery) tasks; aborted on revoke or drop.
    tasks: Mutex<Vec<AbortOnDropHandle<()>>>,
}

impl LeaseManager {
    fn slot(&self) -> MutexGuard<'_, Option<i64>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn tasks(&self) -> MutexGuard<'_, Vec<AbortOnDropHandle<()>>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn current(&self) -> Option<i64> {
        *self.slot()
    }

    /// Forgets `lease` if it is still the current one.
    pub(crate) fn invalidate(&self, lease: i64) {
        let mut slot = self.slot();
        if *slot == Some(lease) {
            *slot = None;
            self.replacing.store(true, Ordering::Relaxed);
        }
    }

    /// The current lease, granting one (and starting its keeper) if there is none.
    ///
    /// Returns a boxed `Send` future: a keeper that loses its lease recovers through this very
    /// function, and the declared type breaks that cycle for the compiler.
    pub(crate) fn ensure<'a>(&'a self, shared: &'a Arc<Shared>) -> BoxFuture<'a, Result<i64, RegistryError>> {
        Box::pin(async move {
            if let Some(id) = self.current() {
                return Ok(id);
            }
            let _granting = self.granting.lock().await;
            if let Some(id) = self.current() {
                return Ok(id);
            }
            let replacing = self.replacing.swap(false, Ordering::Relaxed);
            let ttl = shared.options.ttl.as_secs().max(1) as i64;
            let id = match shared.grant(ttl).await {
                Ok(id) => id,
                Err(e) => {
                    // Still a replacement when etcd grants one later.
                    self.replacing.fetch_or(replacing, Ordering::Relaxed);
                    return Err(e);
                }
            };
            info!(lease = id, ttl_secs = ttl, "lease granted");
            if replacing {
                // The grant answered the moment etcd could (requests wait for a connection),
                // so every process gets here together: the pause before anyone puts a key on
                // the new lease is what spreads the re-registrations. It is at most half the
                // TTL, so the lease outlives it before its keeper starts; if this future is
                // dropped meanwhile, the unused lease just expires.
                let pause = backoff::spread((shared.options.ttl / 2).min(MAX_REPLACEMENT_PAUSE));
                debug!(?pause, "pausing before registering again on the new lease");
                tokio::time::sleep(pause).await;
            }
            let task = tokio::spawn(
                keep_alive(Arc::downgrade(shared), id).instrument(tracing::info_span!("etcd_lease", lease = id)),
            );
            let mut tasks = self.tasks();
            tasks.retain(|t| !t.is_finished());
            tasks.push(AbortOnDropHandle::new(task));
            *self.slot() = Some(id);
            Ok(id)
        })
    }

    /// Replaces the current lease if etcd no longer knows it.
    pub(crate) async fn check_alive(&self, shared: &Arc<Shared>) -> Result<(), RegistryError> {
        let Some(id) = self.current() else { return Ok(()) };
        if shared.time_to_live(id).await? <= 0 {
            warn!(lease = id, "lease is gone from etcd");
            self.invalidate(id);
        }
        Ok(())
    }

    /// Stops keeping the lease alive and revokes it, which deletes every key on it.
    pub(crate) async fn revoke(&self, shared: &Shared) -> Result<(), RegistryError> {
        self.tasks().clear();
        let Some(id) = self.slot().take() else { return Ok(()) };
        shared.revoke(id).await?;
        info!(lease = id, "lease revoked");
        metrics::registry_session_up(BACKEND, false);
        Ok(())
    }
}

/// Keeps `lease` alive until it is lost, then recovers.
async fn keep_alive(weak: Weak<Shared>, lease: i64) {
    let Some((mut client, ttl, timeout)) = weak
        .upgrade()
        .map(|s| (s.client.lease_client(), s.options.ttl, s.options.timeout))
    else {
        return;
    };
    let interval = (ttl / 3).max(Duration::from_millis(100));
    // A keep-alive unanswered for a third of the TTL is given up and the stream reopened (on
    // another member, once the member health probes took an unresponsive one out), leaving two
    // more tries before etcd would expire the lease.
    let timeout = timeout.min(interval);
    let mut backoff = Backoff::new(Duration::from_millis(100), interval);
    let mut last_ok = Instant::now();
    let reason = 'lost: loop {
        match tokio::time::timeout(timeout, client.keep_alive(lease)).await {
            Ok(Ok((mut keeper, mut stream))) => loop {
                let sent = tokio::time::timeout(timeout, keeper.keep_alive()).await;
                if !matches!(sent, Ok(Ok(()))) {
                    debug!("keep-alive send failed; reopening the stream");
                    break;
                }
                match tokio::time::timeout(timeout, stream.message()).await {
                    Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                        metrics::registry_session_up(BACKEND, true);
                        last_ok = Instant::now();
                        backoff.reset();
                    }
                    Ok(Ok(Some(_))) => break 'lost "etcd no longer knows the lease",
                    Ok(Ok(None)) => {
                        debug!("keep-alive stream ended; reopening");
                        break;
                    }
                    Ok(Err(e)) => {
                        debug!(error = %e, "keep-alive failed; reopening the stream");
                        break;
                    }
                    Err(_) => {
                        debug!("keep-alive answer timed out; reopening the stream");
                        if let Some(shared) = weak.upgrade() {
                            shared.suspect_members();
                        }
                        break;
                    }
                }
                tokio::time::sleep(interval).await;
            },
            // Opening the stream reads etcd's first answer, and etcd-client turns an answer
            // with TTL 0 (etcd no longer knows the lease) into this error; its other cause, the
            // stream's own request channel closing before its first request, cannot happen.
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(_))) => break 'lost "etcd no longer knows the lease",
            Ok(Err(e)) => debug!(error = %e, "cannot open the keep-alive stream"),
            Err(_) => {
                debug!("opening the keep-alive stream timed out");
                if let Some(shared) = weak.upgrade() {
                    shared.suspect_members();
                }
            }
        }
        if last_ok.elapsed() >= ttl {
            break 'lost "no keep-alive succeeded for longer than the TTL";
        }
        tokio::time::sleep(backoff.next_delay()).await;
    };
    warn!(reason, "lease lost; granting a new one and registering again");
    metrics::registry_session_up(BACKEND, false);
    recover(weak, lease).await;
}

/// Grants a new lease and puts every local instance on it (the repair pass, which the
/// reconciler may have run first), retrying until it works.
async fn recover(weak: Weak<Shared>, lost: i64) {
    // The backoff between attempts is capped as the pause after a grant (see `ensure`), so a
    // process is back within about twice that once etcd answers.
    let mut backoff = Backoff::new(Duration::from_millis(100), MAX_REPLACEMENT_PAUSE);
    loop {
        let Some(shared) = weak.upgrade() else { return };
        shared.lease.invalidate(lost);
        if !shared.has_local() {
            // Nothing to keep registered; the next registration grants a lease.
            return;
        }
        match shared.reconcile().await {
            Ok(n) => {
                info!(
                    instances = n,
                    lease = shared.lease.current(),
                    "registered again on a new lease"
                );
                return;
            }
            Err(e) => warn!(error = %e, "cannot register again yet; retrying"),
        }
        drop(shared);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
