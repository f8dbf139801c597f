//! Opening sessions and keeping one alive: when the current session ends for good, open a new
//! one and create every local ephemeral node again, after a random pause of up to half the
//! session timeout (at most 2 s), so that a fleet whose sessions all ended in one outage does
//! not create its nodes in one burst when ZooKeeper is back.

use std::sync::Weak;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};
use waypost_core::backoff::{self, Backoff};
use waypost_core::metrics;
use waypost_core::registry::RegistryError;
use zookeeper_client as zk;

use super::{unavailable, Shared, ZookeeperOptions, BACKEND};

/// Opens a session with the ensemble, failing when no server opens one within the timeout.
///
/// Each pass tries every server once; while the timeout allows, a pass in which none opened a
/// session (every server down, or the ensemble electing a leader, when servers close new
/// connections) is followed by another after a short jittered pause.
pub(super) async fn open(options: &ZookeeperOptions) -> Result<zk::Client, RegistryError> {
    let servers = options.servers.join(",");
    let deadline = Instant::now() + options.timeout;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
    loop {
        let mut connector = zk::Client::connector()
            .with_session_timeout(options.session_timeout)
            .with_connection_timeout(options.timeout)
            .with_fail_eagerly();
        if let Some((user, password)) = &options.credentials {
            connector = connector.with_auth("digest", format!("{user}:{}", password.expose()).as_bytes());
        }
        match tokio::time::timeout_at(deadline, connector.connect(&servers)).await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(e)) => {
                let pause = backoff.next_delay();
                if e != zk::Error::NoHosts || Instant::now() + pause >= deadline {
                    return Err(unavailable(&options.servers, "connect", e));
                }
                debug!("no ZooKeeper server opened a session; trying them again");
                tokio::time::sleep(pause).await;
            }
            Err(_) => {
                return Err(RegistryError::timed_out(
                    BACKEND,
                    &options.servers,
                    "connect",
                    options.timeout,
                ))
            }
        }
    }
}

/// The longest random pause between a new session and creating the nodes in it.
const MAX_REREGISTER_PAUSE: Duration = Duration::from_secs(2);

/// Runs for the registry's lifetime: waits for the session to end, then replaces it.
pub(super) async fn supervise(weak: Weak<Shared>) {
    loop {
        let Some(mut states) = weak
            .upgrade()
            .and_then(|shared| shared.client().ok())
            .map(|client| client.state_watcher())
        else {
            return;
        };
        let mut state = states.state();
        while !is_terminal(state) {
            match state {
                zk::SessionState::Disconnected => {
                    warn!("connection to ZooKeeper lost; reconnecting within the session")
                }
                zk::SessionState::SyncConnected => info!("connected to ZooKeeper"),
                _ => {}
            }
            metrics::registry_session_up(BACKEND, state == zk::SessionState::SyncConnected);
            state = states.changed().await;
        }
        metrics::registry_session_up(BACKEND, false);
        drop(states);
        let Some(shared) = weak.upgrade() else { return };
        if shared.client().is_err() {
            return; // closed on purpose
        }
        warn!(?state, "ZooKeeper session ended; opening a new one");
        drop(shared);
        if !reopen(&weak).await {
            return;
        }
    }
}

/// Whether a session in this state is over for good.
pub(super) fn is_terminal(state: zk::SessionState) -> bool {
    matches!(
        state,
        zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed
    )
}

/// Opens sessions until one works and holds every local node again; `false` once the
/// registry is gone or closed.
async fn reopen(weak: &Weak<Shared>) -> bool {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let Some(shared) = weak.upgrade() else { return false };
        match open(&shared.options).await {
            Ok(client) => {
                let session = client.session_id();
                let states = client.state_watcher();
                if !shared.replace_client(client) {
                    return false;
                }
                // Every process whose session ended in an outage gets its new one the moment
                // ZooKeeper is back: a random pause spreads their node creations.
                let pause = backoff::spread((shared.options.session_timeout / 2).min(MAX_REREGISTER_PAUSE));
                debug!(?pause, "pausing before creating the nodes again");
                tokio::time::sleep(pause).await;
                // Create the nodes in this session, retrying while the session lives.
                loop {
                    match shared.put_all().await {
                        Ok(n) => {
                            info!(%session, instances = n, "new session holds every local instance again");
                            metrics::registry_reregistered(BACKEND, n);
                            return true;
                        }
                        Err(e) => warn!(error = %e, "could not create every node in the new session; retrying"),
                    }
                    if is_terminal(states.peek_state()) {
                        break;
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
            Err(e) => warn!(error = %e, "cannot open a new session yet"),
        }
        drop(shared);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
