//! Watching one service on ZooKeeper, where every watch fires once.
//!
//! Each round arms a child watch on the service node (or, while it does not exist, an
//! existence watch) and a data watch on every instance node, reading them in the same requests.
//! The first watch to fire starts the next round, which arms everything again *before* it
//! reads, so a change between two rounds is always caught by the new arms. Each round's result
//! goes out as a snapshot when it differs from the last one. A failed round (connection lost,
//! session ended) ends the stream; the discovery cache watches again with backoff.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::future::select_all;
use rpc_core::registry::{service_path, RegistryError, ServiceInstance, WatchEvent, WatchStream};
use tokio::sync::mpsc;
use tracing::{debug, Instrument};
use zookeeper_client as zk;

use super::{parse_instance, Shared};

type Fired = Pin<Box<dyn Future<Output = zk::WatchedEvent> + Send>>;

pub(crate) async fn start(shared: Arc<Shared>, service_key: String) -> Result<WatchStream, RegistryError> {
    let parent = service_path(&shared.options.root, &service_key);
    let (instances, watches) = arm_and_read(&shared, &service_key, &parent).await?;
    let (tx, rx) = mpsc::channel(16);
    // The queue is empty, so the first snapshot fits.
    let _ = tx.try_send(WatchEvent::Snapshot(instances.clone()));
    let span = tracing::debug_span!("zookeeper_watch", service = %service_key);
    let task = tokio::spawn(run(shared, service_key, parent, tx, instances, watches).instrument(span));
    Ok(WatchStream::new(rx, Some(task)))
}

async fn run(
    shared: Arc<Shared>,
    service_key: String,
    parent: String,
    tx: mpsc::Sender<WatchEvent>,
    mut last: Vec<ServiceInstance>,
    mut watches: Vec<Fired>,
) {
    loop {
        let (event, _, _) = select_all(watches).await;
        if event.event_type == zk::EventType::Session {
            debug!(state = ?event.session_state, "session event; ending the watch");
            return;
        }
        match arm_and_read(&shared, &service_key, &parent).await {
            Ok((instances, armed)) => {
                watches = armed;
                if instances != last {
                    last = instances.clone();
                    if tx.send(WatchEvent::Snapshot(instances)).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                debug!(error = %e, "re-arming failed; ending the watch");
                return;
            }
        }
    }
}

/// Arms the watches of one round and reads the instances they cover.
async fn arm_and_read(
    shared: &Shared,
    service_key: &str,
    parent: &str,
) -> Result<(Vec<ServiceInstance>, Vec<Fired>), RegistryError> {
    let client = shared.client()?;
    let children = shared.timed("list", client.get_and_watch_children(parent)).await;
    let (children, child_watch) = match children {
        Ok((children, _, watch)) => (children, watch),
        Err(RegistryError::Unavailable { .. }) if !node_exists(shared, &client, parent).await? => {
            // No service node yet: watch for its creation.
            let (_, created) = shared.timed("exists", client.check_and_watch_stat(parent)).await?;
            return Ok((Vec::new(), vec![Box::pin(created.changed())]));
        }
        Err(e) => return Err(e),
    };
    let mut watches: Vec<Fired> = vec![Box::pin(child_watch.changed())];
    let mut instances = Vec::with_capacity(children.len());
    for child in children {
        let path = format!("{parent}/{child}");
        match tokio::time::timeout(shared.options.timeout, client.get_and_watch_data(&path)).await {
            Ok(Ok((data, _, watch))) => {
                watches.push(Box::pin(watch.changed()));
                if let Some(instance) = parse_instance(service_key, &path, &child, &data) {
                    instances.push(instance);
                }
            }
            // Deleted since the listing: the child watch has fired already.
            Ok(Err(zk::Error::NoNode)) => {}
            Ok(Err(e)) => return Err(shared.unavailable("get", e)),
            Err(_) => return Err(shared.timeout_error("get")),
        }
    }
    instances.sort_by_key(ServiceInstance::address);
    Ok((instances, watches))
}

async fn node_exists(shared: &Shared, client: &zk::Client, path: &str) -> Result<bool, RegistryError> {
    Ok(shared.timed("exists", client.check_stat(path)).await?.is_some())
}
