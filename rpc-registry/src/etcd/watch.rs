//! Watching one service's prefix without missing a change.
//!
//! The watch lists the prefix and starts watching at the listing's revision + 1: every change
//! after the listing is delivered, and none before it is delivered twice. The listing becomes the
//! stream's first event (a snapshot). A put becomes an upsert (or a removal, when the new value
//! is not a valid instance), a delete a removal. When etcd cancels the watch (its start
//! revision was compacted) or the stream breaks, the stream ends; the discovery cache then
//! lists and watches again.
//!
//! A watch on a member that froze would wait forever in silence. When the member health task
//! takes a member out of the balancer, every watch ([`CheckedWatch`], rules watches too)
//! asks etcd for a progress report on its stream; one that hears nothing within the probe
//! deadline ends, as a broken one does.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, WatchOptions, WatchResponse};
use rpc_core::registry::{RegistryError, WatchEvent, WatchStream};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn, Instrument};

use super::{parse_instance, parse_instances, Shared};

/// Events buffered between etcd and the consumer of the stream.
const QUEUE: usize = 1024;

pub(crate) async fn start(
    shared: Arc<Shared>,
    service_key: String,
    prefix: String,
) -> Result<WatchStream, RegistryError> {
    let listed = shared.get(&prefix, Some(GetOptions::new().with_prefix())).await?;
    let revision = listed.header().map(|h| h.revision()).unwrap_or(0);
    let snapshot = parse_instances(&service_key, &prefix, listed.kvs());
    let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
    let stream = CheckedWatch::new(shared.watch(&prefix, options).await?, &shared);
    let (tx, rx) = mpsc::channel(QUEUE);
    // The queue is empty, so the snapshot fits.
    let _ = tx.try_send(WatchEvent::Snapshot(snapshot));
    let span = tracing::debug_span!("etcd_watch", service = %service_key, revision);
    let task = tokio::spawn(forward(stream, tx, service_key, prefix).instrument(span));
    Ok(WatchStream::new(rx, Some(task)))
}

async fn forward(mut stream: CheckedWatch, tx: mpsc::Sender<WatchEvent>, service_key: String, prefix: String) {
    loop {
        let resp = match stream.message().await {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                debug!("watch stream closed by etcd");
                return;
            }
            Err(e) => {
                warn!(error = %e, "watch stream broke");
                return;
            }
        };
        if resp.canceled() {
            warn!(
                compact_revision = resp.compact_revision(),
                reason = resp.cancel_reason(),
                "watch cancelled by etcd"
            );
            return;
        }
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key());
            let Some(address) = key.strip_prefix(prefix.as_str()) else {
                continue;
            };
            let change = match event.event_type() {
                EventType::Put => match parse_instance(&service_key, &prefix, kv) {
                    Some(instance) => WatchEvent::Upsert(instance),
                    None => WatchEvent::Remove {
                        address: address.to_owned(),
                    },
                },
                EventType::Delete => WatchEvent::Remove {
                    address: address.to_owned(),
                },
            };
            if tx.send(change).await.is_err() {
                return;
            }
        }
    }
}

/// Why a [`CheckedWatch`] ended other than by etcd closing it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WatchBroken {
    /// The stream failed.
    #[error(transparent)]
    Etcd(#[from] etcd_client::Error),
    /// Asked for progress after a member was taken out of the balancer, it said nothing.
    #[error("no progress report within {0:?} after an etcd member was found unresponsive")]
    Silent(Duration),
}

/// A watch stream that proves it is alive whenever a member is taken out of the balancer.
pub(crate) struct CheckedWatch {
    stream: etcd_client::WatchStream,
    /// Member removals; `None` with a single member.
    removals: Option<watch::Receiver<u64>>,
    deadline: Duration,
}

impl CheckedWatch {
    pub(crate) fn new(stream: etcd_client::WatchStream, shared: &Shared) -> Self {
        let removals = shared.members.as_ref().map(|m| {
            let mut removals = m.removals();
            removals.mark_unchanged();
            removals
        });
        Self {
            stream,
            removals,
            deadline: shared.options.timeout / 4,
        }
    }

    /// The next response: `None` when etcd closed the stream.
    pub(crate) async fn message(&mut self) -> Result<Option<WatchResponse>, WatchBroken> {
        loop {
            let Some(removals) = self.removals.as_mut() else {
                return Ok(self.stream.message().await?);
            };
            tokio::select! {
                message = self.stream.message() => return Ok(message?),
                changed = removals.changed() => {
                    if changed.is_err() {
                        // The health task is gone (the registry is closing).
                        self.removals = None;
                        continue;
                    }
                }
            }
            self.stream.request_progress().await?;
            return match tokio::time::timeout(self.deadline, self.stream.message()).await {
                Ok(message) => Ok(message?),
                Err(_) => Err(WatchBroken::Silent(self.deadline)),
            };
        }
    }
}
