//! Accepting connections: the listener with a deep backlog ([`listen`]), and the loop that hands
//! each connection to its own task under the connection limit, backs off on accept errors (out
//! of file descriptors) with a throttled log, and stops when shutdown begins.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, ToSocketAddrs};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::metrics;

use super::connection;
use super::shared::Shared;

/// Backlog of the listen queue: connections that wait while the server is at its connection
/// limit or busy accepting (the kernel caps it at `net.core.somaxconn`).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a TCP listener on `addr` with a listen backlog of [`LISTEN_BACKLOG`] (the default
/// of 128 makes a connect storm wait for SYN retries) and `SO_REUSEADDR`.
pub async fn listen(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the address resolved to nothing")))
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
    connections: TaskTracker,
) {
    info!(services = ?shared.services.keys().collect::<Vec<_>>(), "serving");
    // Renewed certificate files are picked up while the server accepts connections.
    #[cfg(feature = "tls")]
    let _tls_files = shared
        .tls
        .clone()
        .map(|tls| tokio_util::task::AbortOnDropHandle::new(tokio::spawn(tls.watch_files(stop.clone()))));
    let mut errors = AcceptErrors::default();
    let mut at_limit = Throttle::default();
    loop {
        // A connection slot first: at the limit, new connections wait in the backlog.
        let slot = match shared.connection_slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                metrics::server_connection_limit_reached();
                if let Some(times) = at_limit.tick() {
                    warn!(
                        limit = shared.max_connections,
                        times, "connection limit reached; new connections wait until one closes"
                    );
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    slot = shared.connection_slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                }
            }
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                errors.succeeded();
                debug!(%peer, "connection accepted");
                if let Err(e) = stream.set_nodelay(true) {
                    debug!(%peer, error = %e, "set_nodelay failed");
                }
                connections.spawn(
                    connection::serve(stream, peer, shared.clone(), slot)
                        .instrument(tracing::debug_span!("rpc_conn", %peer)),
                );
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning, and say so once in a while.
                let pause = errors.failed(&e);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
    debug!("stopped accepting");
}

/// Lets an event through to the log at most every five seconds, counting the ones between.
#[derive(Default)]
struct Throttle {
    since_logged: u64,
    logged_at: Option<tokio::time::Instant>,
}

impl Throttle {
    const EVERY: Duration = Duration::from_secs(5);

    /// Counts an event; `Some(count)` (the events since the last log line) when it is time to
    /// log one.
    fn tick(&mut self) -> Option<u64> {
        self.since_logged += 1;
        let now = tokio::time::Instant::now();
        if self.logged_at.is_some_and(|at| now.duration_since(at) < Self::EVERY) {
            return None;
        }
        self.logged_at = Some(now);
        Some(std::mem::take(&mut self.since_logged))
    }
}

/// Accept failures in a row: a growing pause, and a throttled log line.
#[derive(Default)]
struct AcceptErrors {
    in_a_row: u32,
    log: Throttle,
}

impl AcceptErrors {
    fn failed(&mut self, error: &io::Error) -> Duration {
        self.in_a_row = self.in_a_row.saturating_add(1);
        if let Some(failures) = self.log.tick() {
            warn!(error = %error, failures, "accept failed; backing off");
        }
        crate::backoff::exponential(Duration::from_millis(10), Duration::from_secs(1), self.in_a_row)
    }

    fn succeeded(&mut self) {
        self.in_a_row = 0;
    }
}
