//! Watching one service's prefix without missing a change.
//!
//! The watch lists the prefix and starts watching at the listing's revision + 1: every change
//! after the listing is delivered, and none before it is delivered twice. The listing becomes the
//! stream's first event (a snapshot). A put becomes an upsert (or a removal, when the new value
//! is not a valid instance), a delete a removal. When etcd cancels the watch (its start
//! revision was compacted) or the stream breaks, the stream ends; the discovery cache then
//! lists and watches again.
//!
//! Every watch of a registry client shares one stream (see [`super::hub`]).

use std::sync::Arc;

use etcd_client::{EventType, GetOptions, WatchOptions};
use tokio::sync::mpsc;
use tracing::{debug, warn, Instrument};
use waypost_core::registry::{RegistryError, WatchEvent, WatchStream};

use super::hub::HubWatch;
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
    let stream = shared.watches.add(&prefix, options).await?;
    let (tx, rx) = mpsc::channel(QUEUE);
    // The queue is empty, so the snapshot fits.
    let _ = tx.try_send(WatchEvent::Snapshot(snapshot));
    let span = tracing::debug_span!("etcd_watch", service = %service_key, revision);
    let task = tokio::spawn(forward(stream, tx, service_key, prefix).instrument(span));
    Ok(WatchStream::new(rx, Some(task)))
}

async fn forward(mut stream: HubWatch, tx: mpsc::Sender<WatchEvent>, service_key: String, prefix: String) {
    loop {
        let Some(resp) = stream.message().await else {
            debug!("watch ended");
            return;
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
