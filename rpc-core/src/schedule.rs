//! Periodic background jobs on tokio-cron-scheduler.
//!
//! The registry side runs its safety nets as scheduled jobs: the discovery cache's resync of
//! every watched key, and a backend's reconciler that re-puts registrations that went missing.
//!
//! Runs never overlap: a run that is due while the previous one is still going (a registry
//! that answers slowly, or not at all until the request timeout) is skipped. Overlapping runs
//! would pile up against a struggling registry exactly when it can least afford them, and
//! after an outage would all repair the same keys at once.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_cron_scheduler::{Job, JobScheduler};
use tracing::{debug, warn};

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
    /// Runs `run` every `every`; a run due while the previous one is still going is skipped.
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
        let running = Arc::new(AtomicBool::new(false));
        let job = Job::new_repeated_async(every, move |_id, _scheduler| {
            let next = (!running.swap(true, Ordering::AcqRel)).then(|| (run(), RunningFlag(running.clone())));
            Box::pin(async move {
                match next {
                    // The flag clears when the run ends, or is dropped with the scheduler.
                    Some((run, _flag)) => run.await,
                    None => debug!(job = name, "the previous run is still going; skipping this one"),
                }
            })
        })
        .map_err(error)?;
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

/// Clears a job's "running" flag when dropped.
struct RunningFlag(Arc<AtomicBool>);

impl Drop for RunningFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A run that lasts longer than the period makes the runs due meanwhile skipped: two
    /// runs never go at once (the scheduler's granularity is whole seconds).
    #[tokio::test]
    async fn a_run_due_while_the_previous_one_goes_is_skipped() {
        let started = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let most_at_once = Arc::new(AtomicUsize::new(0));
        let (s, r, m) = (started.clone(), running.clone(), most_at_once.clone());
        let job = PeriodicJob::start("slow job", Duration::from_secs(1), move || {
            let (s, r, m) = (s.clone(), r.clone(), m.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                m.fetch_max(r.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2500)).await;
                r.fetch_sub(1, Ordering::SeqCst);
            }
        })
        .await
        .expect("the scheduler starts");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while started.load(Ordering::SeqCst) < 2 {
            assert!(tokio::time::Instant::now() < deadline, "the job ran a second time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        job.stop().await;
        assert_eq!(most_at_once.load(Ordering::SeqCst), 1, "runs overlapped");
    }
}
