//! The registrations this process made, by registry path: the bookkeeping every network
//! backend needs to register (and roll back a failed put), deregister, put everything again
//! after losing its lease or session, and delete everything at close.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tracing::info;
use waypost_core::registry::{RegistryError, ServiceInstance};

/// This process's instances, by path.
#[derive(Default)]
pub(crate) struct LocalRegistrations {
    by_path: Mutex<BTreeMap<String, ServiceInstance>>,
}

impl LocalRegistrations {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, ServiceInstance>> {
        self.by_path.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `instance` under `path`, then runs `put`; a failed put forgets it again, so a
    /// re-registration never resurrects an instance whose registration failed. The record
    /// comes first so that a lease or session replaced while `put` runs puts it too.
    pub(crate) async fn register(
        &self,
        path: &str,
        instance: &ServiceInstance,
        put: impl Future<Output = Result<(), RegistryError>>,
    ) -> Result<(), RegistryError> {
        self.lock().insert(path.to_owned(), instance.clone());
        if let Err(e) = put.await {
            self.lock().remove(path);
            return Err(e);
        }
        info!(%path, "registered");
        Ok(())
    }

    /// Forgets `path` (before deleting it from the registry, so nothing puts it back).
    pub(crate) fn forget(&self, path: &str) {
        self.lock().remove(path);
    }

    /// Whether `path` is still registered by this process (the etcd reconciler asks).
    #[cfg(any(feature = "etcd", test))]
    pub(crate) fn contains(&self, path: &str) -> bool {
        self.lock().contains_key(path)
    }

    /// Whether nothing is registered (the etcd reconciler asks).
    #[cfg(any(feature = "etcd", test))]
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Every registration, copied out of the lock.
    pub(crate) fn snapshot(&self) -> Vec<(String, ServiceInstance)> {
        self.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Runs `put` for every registration (after a new lease or session); returns how many.
    pub(crate) async fn put_all<F, Fut>(&self, mut put: F) -> Result<usize, RegistryError>
    where
        F: FnMut(String, ServiceInstance) -> Fut,
        Fut: Future<Output = Result<(), RegistryError>>,
    {
        let all = self.snapshot();
        let n = all.len();
        for (path, instance) in all {
            put(path, instance).await?;
        }
        Ok(n)
    }

    /// Forgets every registration, returning their paths (to delete them at close).
    pub(crate) fn take_all(&self) -> Vec<String> {
        std::mem::take(&mut *self.lock()).into_keys().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(port: u16) -> ServiceInstance {
        ServiceInstance::new("S", "1", "h", port)
    }

    #[tokio::test]
    async fn a_failed_put_rolls_the_record_back() {
        let local = LocalRegistrations::default();
        local.register("/a", &instance(1), async { Ok(()) }).await.unwrap();
        let failed = local
            .register("/b", &instance(2), async { Err(RegistryError::Closed) })
            .await;
        assert!(failed.is_err());
        assert!(local.contains("/a") && !local.contains("/b"));
        let mut seen = Vec::new();
        let n = local
            .put_all(|path, _| {
                seen.push(path);
                async { Ok(()) }
            })
            .await
            .unwrap();
        assert_eq!((n, seen), (1, vec!["/a".to_owned()]));
        local.forget("/a");
        assert!(local.is_empty());
        local.register("/c", &instance(3), async { Ok(()) }).await.unwrap();
        assert_eq!(local.take_all(), vec!["/c".to_owned()]);
        assert!(local.is_empty());
    }
}
