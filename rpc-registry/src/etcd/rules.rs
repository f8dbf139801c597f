//! A service's rules on etcd: one key, `{root}/config/{name}:{version}`, holding the JSON text.
//! It hangs on no lease (rules outlive the processes that set them). Watching reads the key,
//! then watches it from that read's revision + 1, so no change is missed.
//!
//! Schemas are texts on no lease too, at their own keys; they are read and written with the
//! same `get` (and the shared plain put).

use std::sync::Arc;

use etcd_client::{EventType, WatchOptions};
use tokio::sync::mpsc;
use tracing::{debug, warn, Instrument};
use waypost_core::registry::{RegistryError, RulesStream};

use super::hub::HubWatch;
use super::Shared;

/// Rule changes buffered between etcd and the consumer of the stream.
const QUEUE: usize = 16;

fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

pub(crate) async fn get(shared: &Shared, key: &str) -> Result<Option<String>, RegistryError> {
    let resp = shared.get(key, None).await?;
    Ok(resp.kvs().first().map(|kv| text(kv.value())))
}

pub(crate) async fn watch(shared: Arc<Shared>, key: String) -> Result<RulesStream, RegistryError> {
    let resp = shared.get(&key, None).await?;
    let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
    let current = resp.kvs().first().map(|kv| text(kv.value()));
    let options = WatchOptions::new().with_start_revision(revision + 1);
    let stream = shared.watches.add(&key, options).await?;
    let (tx, rx) = mpsc::channel(QUEUE);
    // The queue is empty, so the current value fits.
    let _ = tx.try_send(current);
    let span = tracing::debug_span!("etcd_rules_watch", %key, revision);
    let task = tokio::spawn(forward(stream, tx).instrument(span));
    Ok(RulesStream::new(rx, Some(task)))
}

async fn forward(mut stream: HubWatch, tx: mpsc::Sender<Option<String>>) {
    loop {
        let Some(resp) = stream.message().await else {
            return debug!("rules watch ended");
        };
        if resp.canceled() {
            return warn!(reason = resp.cancel_reason(), "rules watch cancelled by etcd");
        }
        for event in resp.events() {
            let value = match (event.event_type(), event.kv()) {
                (EventType::Put, Some(kv)) => Some(text(kv.value())),
                (EventType::Put, None) => continue,
                (EventType::Delete, _) => None,
            };
            if tx.send(value).await.is_err() {
                return;
            }
        }
    }
}
