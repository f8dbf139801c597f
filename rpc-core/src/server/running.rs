//! The calls of one connection that run in tasks of their own, by request id, so a Cancel
//! frame (or the connection's end) can drop them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::task::{AbortHandle, JoinHandle};

/// Running calls of one connection.
#[derive(Default)]
pub(crate) struct RunningCalls {
    calls: Mutex<HashMap<u64, AbortHandle>>,
}

/// Forgets a call's entry when its task ends, however it ends.
pub(crate) struct Registered {
    calls: Arc<RunningCalls>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.calls.lock().remove(&self.id);
    }
}

impl RunningCalls {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, AbortHandle>> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Spawns the call's task with `spawn` (handing it the guard that forgets its entry) and
    /// records it under `id`. The entry is recorded before the task can end, so it never
    /// outlives the task.
    pub(crate) fn spawn(self: &Arc<Self>, id: u64, spawn: impl FnOnce(Registered) -> JoinHandle<()>) {
        let mut calls = self.lock();
        let handle = spawn(Registered {
            calls: self.clone(),
            id,
        });
        calls.insert(id, handle.abort_handle());
    }

    /// Drops the call `id` (its caller left); `false` when it is not running.
    pub(crate) fn cancel(&self, id: u64) -> bool {
        let handle = self.lock().remove(&id);
        handle.map(|h| h.abort()).is_some()
    }

    /// Drops every running call (the connection is gone); returns how many there were.
    pub(crate) fn cancel_all(&self) -> usize {
        let calls = std::mem::take(&mut *self.lock());
        let n = calls.len();
        for handle in calls.into_values() {
            handle.abort();
        }
        n
    }

    /// Number of running calls.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn cancel_drops_the_task_and_a_finished_task_forgets_itself() {
        let calls = Arc::new(RunningCalls::default());
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        calls.spawn(1, |registered| {
            tokio::spawn(async move {
                let _registered = registered;
                let _tell = dropped_tx; // dropped with the task
                tokio::time::sleep(Duration::from_secs(60)).await;
            })
        });
        calls.spawn(2, |registered| {
            tokio::spawn(async move {
                drop(registered);
            })
        });
        assert!(calls.cancel(1));
        assert!(!calls.cancel(1));
        tokio::time::timeout(Duration::from_secs(5), dropped_rx)
            .await
            .expect("the task was dropped")
            .unwrap_err();
        // Task 2 ended on its own and forgot itself.
        tokio::time::timeout(Duration::from_secs(5), async {
            while calls.len() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        assert_eq!(calls.cancel_all(), 0);
    }
}
