//! A service's rules on ZooKeeper: a persistent node `{root}/config/{name}:{version}` holding
//! the JSON text. Watching arms a data watch (or, while the node does not exist, an existence
//! watch) in the same request that reads it, and arms again before every re-read, so no change
//! is lost between two arms.
//!
//! Schemas are persistent text nodes too, at their own paths; `get` and `put` serve them.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{debug, Instrument};
use waypost_core::registry::{RegistryError, RulesStream};
use zookeeper_client as zk;

use super::Shared;

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

pub(crate) async fn get(shared: &Shared, path: &str) -> Result<Option<String>, RegistryError> {
    let client = shared.client()?;
    match tokio::time::timeout(shared.options.timeout, client.get_data(path)).await {
        Ok(Ok((data, _))) => Ok(Some(text(&data))),
        Ok(Err(zk::Error::NoNode)) => Ok(None),
        Ok(Err(e)) => Err(shared.unavailable("get", e)),
        Err(_) => Err(shared.timeout_error("get")),
    }
}

pub(crate) async fn put(shared: &Shared, path: &str, rules: &str) -> Result<(), RegistryError> {
    let client = shared.live_client().await?;
    let persistent = zk::CreateMode::Persistent.with_acls(shared.options.acls());
    if let Some((parent, _)) = path.rsplit_once('/') {
        shared.timed("mkdir", client.mkdir(parent, &persistent)).await?;
    }
    match tokio::time::timeout(
        shared.options.timeout,
        client.create(path, rules.as_bytes(), &persistent),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(zk::Error::NodeExists)) => shared
            .timed("set", client.set_data(path, rules.as_bytes(), None))
            .await
            .map(drop),
        Ok(Err(e)) => Err(shared.unavailable("create", e)),
        Err(_) => Err(shared.timeout_error("create")),
    }
}

pub(crate) async fn delete(shared: &Shared, path: &str) -> Result<(), RegistryError> {
    let client = shared.live_client().await?;
    shared.delete_node(&client, path).await
}

pub(crate) async fn watch(shared: Arc<Shared>, path: String) -> Result<RulesStream, RegistryError> {
    let (current, fired) = arm_and_read(&shared, &path).await?;
    let (tx, rx) = mpsc::channel(16);
    // The queue is empty, so the current value fits.
    let _ = tx.try_send(current.clone());
    let span = tracing::debug_span!("zookeeper_rules_watch", %path);
    let task = tokio::spawn(run(shared, path, tx, current, fired).instrument(span));
    Ok(RulesStream::new(rx, Some(task)))
}

async fn run(
    shared: Arc<Shared>,
    path: String,
    tx: mpsc::Sender<Option<String>>,
    mut last: Option<String>,
    mut fired: zk::OneshotWatcher,
) {
    loop {
        let event = fired.changed().await;
        if event.event_type == zk::EventType::Session {
            return debug!(state = ?event.session_state, "session event; ending the rules watch");
        }
        match arm_and_read(&shared, &path).await {
            Ok((current, armed)) => {
                fired = armed;
                if current != last {
                    last = current.clone();
                    if tx.send(current).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => return debug!(error = %e, "re-arming the rules watch failed; ending it"),
        }
    }
}

/// Arms a watch on the node (its data, or its creation) and reads it, in one request.
async fn arm_and_read(shared: &Shared, path: &str) -> Result<(Option<String>, zk::OneshotWatcher), RegistryError> {
    let client = shared.client()?;
    loop {
        match tokio::time::timeout(shared.options.timeout, client.get_and_watch_data(path)).await {
            Ok(Ok((data, _, watch))) => return Ok((Some(text(&data)), watch)),
            Ok(Err(zk::Error::NoNode)) => {}
            Ok(Err(e)) => return Err(shared.unavailable("get", e)),
            Err(_) => return Err(shared.timeout_error("get")),
        }
        let (stat, watch) = shared.timed("exists", client.check_and_watch_stat(path)).await?;
        if stat.is_none() {
            return Ok((None, watch));
        }
        // Created between the two requests: read it again.
    }
}
