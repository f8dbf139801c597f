//! Watching one service on ZooKeeper with one persistent recursive watch.
//!
//! The watch is added on the service node (which need not exist yet) *before* the instances are
//! listed, so every change after the listing arrives as an event; the listing goes out as the
//! opening snapshot. Then each event costs one read: an instance node created or changed is
//! read and sent as an upsert (or a removal, when it is gone again or not a valid instance),
//! a deleted one is sent as a removal. A change made between adding the watch and listing may
//! arrive both ways; reading the node again gives its current value, so applying it twice is
//! harmless.
//!
//! One-shot watches would need re-arming after every change, a child watch and a data watch
//! per instance, and a re-read of the whole service each time: with eight consumers watching a
//! service of ten instances, 88 reads per change instead of eight (BENCHMARKS.md, Scale).
//!
//! ZooKeeper can lose a persistent watch's events while a connection is re-established
//! (ZOOKEEPER-4698), so any session event (a lost connection, an expired session) ends the
//! stream; the discovery cache then watches again, which lists again.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{debug, Instrument};
use waypost_core::registry::{service_path, RegistryError, ServiceInstance, WatchEvent, WatchStream};
use zookeeper_client as zk;

use super::{parse_instance, Shared};

/// Events buffered between ZooKeeper and the consumer of the stream.
const QUEUE: usize = 1024;

pub(crate) async fn start(shared: Arc<Shared>, service_key: String) -> Result<WatchStream, RegistryError> {
    let parent = service_path(&shared.options.root, &service_key);
    let client = shared.client()?;
    let watcher = shared
        .timed("watch", client.watch(&parent, zk::AddWatchMode::PersistentRecursive))
        .await?;
    let snapshot = list(&shared, &client, &service_key, &parent).await?;
    let (tx, rx) = mpsc::channel(QUEUE);
    // The queue is empty, so the snapshot fits.
    let _ = tx.try_send(WatchEvent::Snapshot(snapshot));
    let span = tracing::debug_span!("zookeeper_watch", service = %service_key);
    let task = tokio::spawn(forward(shared, client, watcher, service_key, parent, tx).instrument(span));
    Ok(WatchStream::new(rx, Some(task)))
}

/// Every instance of the service, read now (none while the service node does not exist).
async fn list(
    shared: &Shared,
    client: &zk::Client,
    service_key: &str,
    parent: &str,
) -> Result<Vec<ServiceInstance>, RegistryError> {
    let children = match tokio::time::timeout(shared.options.timeout, client.list_children(parent)).await {
        Ok(Ok(children)) => children,
        Ok(Err(zk::Error::NoNode)) => return Ok(Vec::new()),
        Ok(Err(e)) => return Err(shared.unavailable("list", e)),
        Err(_) => return Err(shared.timeout_error("list")),
    };
    let mut instances = Vec::with_capacity(children.len());
    for child in children {
        if let Some(instance) = read(shared, client, service_key, parent, &child).await? {
            instances.push(instance);
        }
    }
    instances.sort_by_key(ServiceInstance::address);
    Ok(instances)
}

/// The instance at `parent/child`; `None` when the node is gone or not a valid instance.
async fn read(
    shared: &Shared,
    client: &zk::Client,
    service_key: &str,
    parent: &str,
    child: &str,
) -> Result<Option<ServiceInstance>, RegistryError> {
    let path = format!("{parent}/{child}");
    match tokio::time::timeout(shared.options.timeout, client.get_data(&path)).await {
        Ok(Ok((data, _))) => Ok(parse_instance(service_key, &path, child, &data)),
        Ok(Err(zk::Error::NoNode)) => Ok(None),
        Ok(Err(e)) => Err(shared.unavailable("get", e)),
        Err(_) => Err(shared.timeout_error("get")),
    }
}

async fn forward(
    shared: Arc<Shared>,
    client: zk::Client,
    mut watcher: zk::PersistentWatcher,
    service_key: String,
    parent: String,
    tx: mpsc::Sender<WatchEvent>,
) {
    let prefix = format!("{parent}/");
    loop {
        let event = watcher.changed().await;
        if event.event_type == zk::EventType::Session {
            debug!(state = ?event.session_state, "session event; ending the watch");
            return;
        }
        // Only the service's direct children are instances.
        let Some(child) = event.path.strip_prefix(&prefix).filter(|c| !c.contains('/')) else {
            continue;
        };
        let change = match event.event_type {
            zk::EventType::NodeDeleted => None,
            zk::EventType::NodeCreated | zk::EventType::NodeDataChanged => {
                match read(&shared, &client, &service_key, &parent, child).await {
                    Ok(instance) => instance,
                    Err(e) => {
                        debug!(error = %e, "cannot read a changed instance; ending the watch");
                        return;
                    }
                }
            }
            _ => continue,
        };
        let change = match change {
            Some(instance) => WatchEvent::Upsert(instance),
            None => WatchEvent::Remove {
                address: child.to_owned(),
            },
        };
        if tx.send(change).await.is_err() {
            return;
        }
    }
}
