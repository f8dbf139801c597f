//! The keep-alive task: pings when nothing was read for a while, closes the connection when a
//! ping gets nothing back, and probes the server after a call timed out (see the module docs
//! of `connection`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use super::state::{Shared, HEALTHY, UNRESPONSIVE};
use crate::body::Body;
use crate::metrics;
use crate::protocol::{Header, MessageType};
use crate::transport::OutFrame;

/// The keep-alive task's settings.
pub(super) struct Liveness {
    /// A ping goes out when nothing has been read for this long...
    pub(super) interval: Duration,
    /// ...and the connection closes when it gets no answer within this.
    pub(super) timeout: Duration,
    /// A probe (after a call timed out) must be answered within this.
    pub(super) probe_timeout: Duration,
}

/// Pings when nothing has been read for `interval`; closes the connection when a ping gets
/// no frame at all back within `timeout`. Reads are noticed at the ticks (every half of the
/// shorter of the two), by the change of the frame counter. Probes the server when a call
/// asks for it (see the module docs).
pub(super) async fn keepalive(shared: Arc<Shared>, tx: mpsc::Sender<OutFrame>, liveness: Liveness) {
    let Liveness {
        interval,
        timeout,
        probe_timeout,
    } = liveness;
    let period = (interval.min(timeout) / 2).max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut frames_seen = shared.frames_read.load(Ordering::Relaxed);
    let mut last_read = Instant::now();
    let mut ping_sent_at: Option<Instant> = None;
    let mut ping_id = 0u64;
    loop {
        tokio::select! {
            _ = shared.closed.cancelled() => return,
            _ = ticker.tick() => {}
            _ = shared.probe.notified() => {
                if probe(&shared, &tx, &mut ping_id, probe_timeout).await.is_none() {
                    return;
                }
                (frames_seen, last_read, ping_sent_at) = (shared.frames_read.load(Ordering::Relaxed), Instant::now(), None);
                continue;
            }
        }
        let now = Instant::now();
        let frames = shared.frames_read.load(Ordering::Relaxed);
        if frames != frames_seen {
            (frames_seen, last_read) = (frames, now);
        }
        if let Some(sent) = ping_sent_at {
            if last_read > sent {
                ping_sent_at = None;
            } else if now.duration_since(sent) >= timeout {
                shared.close(&format!("no answer to ping within {timeout:?}"));
                return;
            }
        }
        if ping_sent_at.is_none() && now.duration_since(last_read) >= interval {
            ping_id = ping_id.wrapping_add(1);
            if !send_ping(&tx, ping_id, now + timeout).await {
                // The writer stopped, or could not take a ping for the whole timeout.
                shared.close(&format!("no room to send a ping within {timeout:?}"));
                return;
            }
            ping_sent_at = Some(now);
        }
    }
}

/// Queues a ping, waiting for room in the write queue until `until`; false when the writer
/// has stopped or the queue stayed full.
pub(super) async fn send_ping(tx: &mpsc::Sender<OutFrame>, id: u64, until: Instant) -> bool {
    let ping = OutFrame::Frame {
        header: Header::new(MessageType::Ping, id),
        body: Body::default(),
    };
    matches!(tokio::time::timeout_at(until, tx.send(ping)).await, Ok(Ok(())))
}

/// Checks the server after a call timed out: a ping answered within `within` leaves it
/// healthy. Otherwise it is unresponsive: the waiting calls fail now, and pings go on (the
/// wait doubling up to eight times `within`) until any frame arrives. `None` once the
/// connection has closed.
pub(super) async fn probe(
    shared: &Shared,
    tx: &mpsc::Sender<OutFrame>,
    ping_id: &mut u64,
    within: Duration,
) -> Option<()> {
    if ping_answered(shared, tx, ping_id, within).await? {
        shared.liveness.store(HEALTHY, Ordering::Release);
        return Some(());
    }
    shared.liveness.store(UNRESPONSIVE, Ordering::Release);
    let reason = format!("the provider did not answer a ping within {within:?} after a call timed out");
    let waiting = shared.pending().calls.len();
    warn!(addr = %shared.addr, waiting, "{reason}; calls avoid it until it answers");
    metrics::client_ejection(&shared.addr);
    shared.abandon_calls(reason);
    let since = Instant::now();
    let mut wait = within;
    loop {
        if ping_answered(shared, tx, ping_id, wait).await? {
            info!(addr = %shared.addr, after = ?since.elapsed(), "the provider answers again");
            shared.pending().abandoned = None;
            shared.liveness.store(HEALTHY, Ordering::Release);
            return Some(());
        }
        wait = (wait * 2).min(within * 8);
    }
}

/// Sends a ping and waits up to `within` for any frame from the server; `None` once the
/// connection has closed.
pub(super) async fn ping_answered(
    shared: &Shared,
    tx: &mpsc::Sender<OutFrame>,
    ping_id: &mut u64,
    within: Duration,
) -> Option<bool> {
    let before = shared.frames_read.load(Ordering::Acquire);
    let deadline = Instant::now() + within;
    *ping_id = ping_id.wrapping_add(1);
    if !send_ping(tx, *ping_id, deadline).await {
        return match shared.closed.is_cancelled() {
            true => None,
            false => Some(false),
        };
    }
    loop {
        if shared.frames_read.load(Ordering::Acquire) != before {
            return Some(true);
        }
        tokio::select! {
            _ = shared.closed.cancelled() => return None,
            _ = shared.heard.notified() => {}
            _ = tokio::time::sleep_until(deadline) => {
                return Some(shared.frames_read.load(Ordering::Acquire) != before);
            }
        }
    }
}
