//! Periodic background jobs on tokio-cron-scheduler.
//!
//! The registry side runs its safety nets as scheduled jobs: the discovery cache's resync of
//! every watched key, and a backend's reconciler that re-puts registrations that went missing.

use std::future::Future;
use std::time::Duration;

use tokio_cron_scheduler::{Job, JobScheduler};
use tracing::warn;

/// A job that runs every interval until [`PeriodicJob::stop`] (or drop).
pub struct PeriodicJob {
    scheduler: Option<JobScheduler>,
}

/// The scheduler could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot schedule {name}: {message}")]
pub struct ScheduleError {
    name: &'static str,
    message: String,
}

impl PeriodicJob {
    /// Runs `run` every `every`. A run that is still going when the next is due overlaps it,
    /// so `run` should bound its own duration.
    pub async fn start<F, Fut>(name: &'static str, every: Duration, run: F) -> Result<Self, ScheduleError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let error = |e: tokio_cron_scheduler::JobSchedulerError| ScheduleError {
            name,
            message: e.to_string(),
        };
        let scheduler = JobScheduler::new().await.map_err(error)?;
        let job = Job::new_repeated_async(every, move |_id, _scheduler| Box::pin(run())).map_err(error)?;
        scheduler.add(job).await.map_err(error)?;
        scheduler.start().await.map_err(error)?;
        Ok(Self {
            scheduler: Some(scheduler),
        })
    }

    /// Stops the job; no run starts afterwards.
    pub async fn stop(mut self) {
        if let Some(mut scheduler) = self.scheduler.take() {
            if let Err(e) = scheduler.shutdown().await {
                warn!(error = %e, "scheduler shutdown failed");
            }
        }
    }
}

impl Drop for PeriodicJob {
    fn drop(&mut self) {
        if let Some(mut scheduler) = self.scheduler.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = scheduler.shutdown().await;
                });
            }
        }
    }
}
