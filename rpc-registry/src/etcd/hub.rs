//! One watch stream per registry client, carrying every watch it makes.
//!
//! etcd serves each gRPC watch stream with its own goroutines and buffers: a consumer that
//! opened a stream per watched key (two per service: instances and rules) cost etcd about
//! 65 KiB per key; 200 consumers watching 20 services each took etcd from 41 MiB to 560 MiB
//! (BENCHMARKS.md, Scale). Here a hub task owns a single stream, opened with the first watch
//! and again after it breaks, and adds every watch to it under an id of its own choosing;
//! responses are routed to each watch by id.
//!
//! A watch ends (its [`HubWatch`] yields `None`) when the stream breaks, when etcd cancels it
//! (after forwarding the cancelling response), or when its consumer falls more than a queue
//! behind; the discovery cache then lists and watches again. Dropping a [`HubWatch`] cancels
//! it on etcd.
//!
//! When the member health task takes a member out of the balancer (see [`super::members`]),
//! the stream might be on that member and silent for good: the hub asks etcd for a progress
//! report and, if nothing arrives within the probe deadline, drops the stream, ending every
//! watch on it.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use etcd_client::{WatchOptions, WatchResponse};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, warn, Instrument};
use waypost_core::registry::RegistryError;

use super::Shared;

/// Responses buffered for one watch before it counts as fallen behind.
const QUEUE: usize = 1024;

/// The hub of one registry client.
pub(crate) struct WatchHub {
    commands: mpsc::UnboundedSender<Command>,
    _task: AbortOnDropHandle<()>,
}

enum Command {
    Add {
        key: String,
        options: WatchOptions,
        reply: oneshot::Sender<Result<HubWatch, RegistryError>>,
    },
    Cancel(i64),
}

/// One watch on the hub's stream.
pub(crate) struct HubWatch {
    id: i64,
    responses: mpsc::Receiver<WatchResponse>,
    commands: mpsc::UnboundedSender<Command>,
}

impl HubWatch {
    /// The next response; `None` once the watch has ended.
    pub(crate) async fn message(&mut self) -> Option<WatchResponse> {
        self.responses.recv().await
    }
}

impl Drop for HubWatch {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Cancel(self.id));
    }
}

impl WatchHub {
    /// Starts the hub task of `shared`; `removals` changes when a member leaves the balancer.
    pub(crate) fn start(
        shared: Weak<Shared>,
        endpoints: Vec<String>,
        removals: Option<watch::Receiver<u64>>,
        deadline: Duration,
    ) -> Self {
        let (commands, received) = mpsc::unbounded_channel();
        let hub = Hub {
            shared,
            endpoints,
            commands: commands.clone(),
            stream: None,
            routes: HashMap::new(),
            pending: HashMap::new(),
            next_id: 1,
            deadline,
            check_until: None,
        };
        let task = tokio::spawn(
            hub.run(received, removals)
                .instrument(tracing::debug_span!("etcd_watch_hub")),
        );
        Self {
            commands,
            _task: AbortOnDropHandle::new(task),
        }
    }

    /// Adds a watch of `key` with `options` to the stream (opening it if needed).
    pub(crate) async fn add(&self, key: &str, options: WatchOptions) -> Result<HubWatch, RegistryError> {
        let (reply, answer) = oneshot::channel();
        let add = Command::Add {
            key: key.to_owned(),
            options,
            reply,
        };
        self.commands.send(add).map_err(|_| RegistryError::Closed)?;
        answer.await.map_err(|_| RegistryError::Closed)?
    }
}

/// The hub task's state.
struct Hub {
    shared: Weak<Shared>,
    endpoints: Vec<String>,
    commands: mpsc::UnboundedSender<Command>,
    stream: Option<etcd_client::WatchStream>,
    /// Created watches, by id.
    routes: HashMap<i64, mpsc::Sender<WatchResponse>>,
    /// Watches asked for and not yet confirmed by etcd, by id.
    pending: HashMap<i64, oneshot::Sender<Result<HubWatch, RegistryError>>>,
    next_id: i64,
    deadline: Duration,
    /// While set, the stream must say something by then.
    check_until: Option<Instant>,
}

impl Hub {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>, mut removals: Option<watch::Receiver<u64>>) {
        if let Some(removals) = removals.as_mut() {
            removals.mark_unchanged();
        }
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Add { key, options, reply }) => self.add(key, options, reply).await,
                    Some(Command::Cancel(id)) => self.cancel(id).await,
                    None => return,
                },
                message = next_message(&mut self.stream) => {
                    self.check_until = None;
                    match message {
                        Ok(Some(response)) => self.route(response).await,
                        Ok(None) => self.drop_stream("the watch stream was closed by etcd"),
                        Err(e) => {
                            warn!(error = %e, "the watch stream broke");
                            self.drop_stream("the watch stream broke");
                        }
                    }
                }
                changed = changed(&mut removals) => {
                    if !changed {
                        removals = None;
                    } else if let Some(stream) = self.stream.as_mut().filter(|_| !self.routes.is_empty()) {
                        // The stream may be on the member that left: it must prove it is alive.
                        if stream.request_progress().await.is_ok() {
                            self.check_until = Some(Instant::now() + self.deadline);
                        }
                    }
                }
                () = until(self.check_until) => {
                    warn!(deadline = ?self.deadline, "no progress report after an etcd member left; dropping the watch stream");
                    self.check_until = None;
                    self.drop_stream("no progress report");
                }
            }
        }
    }

    async fn add(
        &mut self,
        key: String,
        options: WatchOptions,
        reply: oneshot::Sender<Result<HubWatch, RegistryError>>,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        let options = options.with_watch_id(id);
        let Some(stream) = self.stream.as_mut() else {
            let Some(shared) = self.shared.upgrade() else {
                let _ = reply.send(Err(RegistryError::Closed));
                return;
            };
            // Opening the stream sends the first watch.
            match shared.watch(&key, options).await {
                Ok(stream) => {
                    self.stream = Some(stream);
                    self.pending.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
            return;
        };
        match stream.watch(key.as_str(), Some(options)).await {
            Ok(()) => {
                self.pending.insert(id, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(self.unavailable(e)));
                self.drop_stream("cannot add a watch");
            }
        }
    }

    fn unavailable(&self, e: etcd_client::Error) -> RegistryError {
        super::unavailable(&self.endpoints, "watch", e)
    }

    async fn cancel(&mut self, id: i64) {
        if self.routes.remove(&id).is_some() {
            if let Some(stream) = self.stream.as_mut() {
                let _ = stream.cancel(id).await;
            }
        }
    }

    async fn route(&mut self, response: WatchResponse) {
        let id = response.watch_id();
        if response.created() {
            let Some(reply) = self.pending.remove(&id) else { return };
            if response.canceled() {
                let reason = response.cancel_reason().to_owned();
                let _ = reply.send(Err(self.unavailable(etcd_client::Error::WatchError(reason))));
                return;
            }
            let (tx, responses) = mpsc::channel(QUEUE);
            let watch = HubWatch {
                id,
                responses,
                commands: self.commands.clone(),
            };
            self.routes.insert(id, tx);
            // A caller that gave up meanwhile drops the watch, which cancels it.
            let _ = reply.send(Ok(watch));
            return;
        }
        let Some(route) = self.routes.get(&id) else {
            // A progress report for the whole stream, or a watch cancelled meanwhile.
            return;
        };
        let cancelled = response.canceled();
        match route.try_send(response) {
            Ok(()) if !cancelled => {}
            Ok(()) => {
                self.routes.remove(&id);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(watch = id, "a watch fell {QUEUE} responses behind; ending it");
                self.cancel(id).await;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.cancel(id).await,
        }
    }

    /// Forgets the stream: every watch on it ends, every watch asked for fails.
    fn drop_stream(&mut self, why: &'static str) {
        debug!(why, watches = self.routes.len(), "dropping the watch stream");
        self.stream = None;
        self.check_until = None;
        self.routes.clear();
        for (_, reply) in std::mem::take(&mut self.pending) {
            let _ = reply.send(Err(self.unavailable(etcd_client::Error::WatchError(why.to_owned()))));
        }
    }
}

async fn next_message(
    stream: &mut Option<etcd_client::WatchStream>,
) -> Result<Option<WatchResponse>, etcd_client::Error> {
    match stream {
        Some(stream) => stream.message().await,
        None => std::future::pending().await,
    }
}

/// Whether `removals` changed (`false` once its sender is gone); never, without one.
async fn changed(removals: &mut Option<watch::Receiver<u64>>) -> bool {
    match removals {
        Some(removals) => removals.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
