//! Per-instance health: calls in flight, and ejection of failing instances.
//!
//! An instance that fails to connect is ejected at once; one that fails
//! `consecutive_failures` calls in a row is ejected too. An ejected instance is skipped by the
//! balancers until its ejection period ends; the period starts at `base_ejection` and doubles
//! with every further ejection in a row, up to `max_ejection`. One successful call resets it.
//! When an ejection period ends the instance is on probation: the next call to it is a probe,
//! and the others keep skipping it until the probe's outcome is known (success clears it,
//! failure ejects it again for longer), so a dead instance costs one call per period rather
//! than one per concurrent caller. When every instance is ejected, the least recently ejected
//! one is still tried: calls never fail blind.
//!
//! Each instance also has a [circuit breaker](super::breaker) (adaptive throttling from its
//! recent accepts, for instances that fail often but not in a row) and, when configured, a
//! limit on this consumer's calls in flight to it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;
use tracing::{info, warn};

use super::breaker::{Breaker, BreakerOptions, Decision};
use crate::backoff;
use crate::config::{ConsumerConfig, OutlierConfig};
use crate::error::RpcError;
use crate::metrics;

/// Ejection settings.
#[derive(Debug, Clone)]
pub struct OutlierOptions {
    /// Failures in a row that eject.
    pub consecutive_failures: u32,
    /// First ejection period.
    pub base_ejection: Duration,
    /// Longest ejection period.
    pub max_ejection: Duration,
}

impl Default for OutlierOptions {
    fn default() -> Self {
        Self::from(&OutlierConfig::default())
    }
}

impl From<&OutlierConfig> for OutlierOptions {
    fn from(c: &OutlierConfig) -> Self {
        Self {
            consecutive_failures: c.consecutive_failures.max(1),
            base_ejection: Duration::from_millis(c.base_ejection_ms),
            max_ejection: Duration::from_millis(c.max_ejection_ms.max(c.base_ejection_ms)),
        }
    }
}

/// Everything an instance's health record is built with.
#[derive(Debug, Clone, Default)]
pub struct HealthOptions {
    /// Ejection after failures in a row.
    pub outlier: OutlierOptions,
    /// The circuit breaker.
    pub breaker: BreakerOptions,
    /// This consumer's calls in flight to one instance at most; 0: no limit.
    pub max_in_flight: usize,
}

impl From<&ConsumerConfig> for HealthOptions {
    fn from(c: &ConsumerConfig) -> Self {
        Self {
            outlier: OutlierOptions::from(&c.outlier),
            breaker: BreakerOptions::from(&c.breaker),
            max_in_flight: c.max_in_flight_per_instance,
        }
    }
}

/// Health of every instance this consumer has called, by address.
#[derive(Debug, Default)]
pub struct InstanceHealth {
    instances: DashMap<String, Arc<InstanceStat>>,
    options: HealthOptions,
}

/// The health of one instance: calls in flight and ejection state. Hold on to it to skip the
/// lookup by address on every call.
#[derive(Debug)]
pub struct InstanceStat {
    addr: String,
    in_flight: AtomicUsize,
    /// Set while the instance has failed since its last success: only then is the mutex taken.
    suspect: AtomicBool,
    outlier: Mutex<Outlier>,
    options: OutlierOptions,
    breaker: Breaker,
    /// Calls in flight at most (`usize::MAX`: no limit).
    max_in_flight: usize,
}

#[derive(Debug, Default)]
struct Outlier {
    consecutive_failures: u32,
    /// Ejections in a row (without a success in between).
    ejections: u32,
    ejected_until: Option<Instant>,
    ejected_at: Option<Instant>,
    /// A probe call is in flight after an ejection ended.
    probing: bool,
}

/// Counts a call as in flight on an instance until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<InstanceStat>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether a failure says something about the instance (rather than about the request).
pub fn counts_against_instance<E>(error: &RpcError<E>) -> bool {
    error.blames_instance()
}

impl InstanceStat {
    fn outlier(&self) -> std::sync::MutexGuard<'_, Outlier> {
        self.outlier.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks a call in flight until the guard drops, unless the instance already has its
    /// limit of calls in flight (`None`). A call to an instance whose ejection has ended
    /// becomes its probe.
    pub fn begin(self: &Arc<Self>) -> Option<InFlight> {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= self.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        if self.suspect.load(Ordering::Acquire) {
            let mut outlier = self.outlier();
            if outlier.ejected_until.is_some_and(|until| Instant::now() >= until) {
                outlier.ejected_until = None;
                outlier.probing = true;
            }
        }
        Some(InFlight(self.clone()))
    }

    /// Asks the circuit breaker whether an attempt may be sent; a refusal is counted.
    pub fn breaker_allows(&self) -> bool {
        let Decision::Refuse { tripped } = self.breaker.decide() else {
            return true;
        };
        if tripped {
            warn!(instance = %self.addr, refusal_chance = self.breaker.refusal_chance(), "circuit breaker open: refusing calls to the instance locally");
            metrics::client_breaker_trip(&self.addr);
        }
        metrics::client_breaker_refusal(&self.addr);
        false
    }

    /// The chance that the circuit breaker refuses the next attempt.
    pub fn breaker_refusal_chance(&self) -> f64 {
        self.breaker.refusal_chance()
    }

    /// Calls in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether the instance may be picked now: below its limit of calls in flight, not
    /// ejected, and not on probation with its probe in flight.
    pub fn is_available(&self) -> bool {
        if self.in_flight() >= self.max_in_flight {
            return false;
        }
        if !self.suspect.load(Ordering::Acquire) {
            return true;
        }
        let outlier = self.outlier();
        !outlier.probing && outlier.ejected_until.is_none_or(|until| Instant::now() >= until)
    }

    /// When the instance was last ejected, if it is ejected (or on probation) now.
    pub fn ejected_at(&self) -> Option<Instant> {
        if !self.suspect.load(Ordering::Acquire) {
            return None;
        }
        let outlier = self.outlier();
        match outlier.ejected_until {
            Some(until) if Instant::now() < until => outlier.ejected_at,
            _ if outlier.probing => outlier.ejected_at,
            _ => None,
        }
    }

    /// Records a successful call: the instance is healthy again.
    pub fn success(&self) {
        if self.breaker.record(true) {
            info!(instance = %self.addr, "circuit breaker closed");
        }
        if !self.suspect.load(Ordering::Acquire) {
            return;
        }
        let mut outlier = self.outlier();
        if outlier.ejections > 0 {
            info!(instance = %self.addr, "instance recovered");
        }
        *outlier = Outlier::default();
        self.suspect.store(false, Ordering::Release);
    }

    /// Records a failed call; ejects the instance when the failure calls for it.
    pub fn failure<E>(&self, error: &RpcError<E>) {
        let blamed = counts_against_instance(error);
        self.breaker.record(!blamed);
        if !blamed {
            return;
        }
        let mut outlier = self.outlier();
        self.suspect.store(true, Ordering::Release);
        outlier.consecutive_failures += 1;
        let connect_failed = matches!(error, RpcError::Connect { .. });
        let probe_failed = std::mem::take(&mut outlier.probing);
        if !connect_failed && !probe_failed && outlier.consecutive_failures < self.options.consecutive_failures {
            return;
        }
        outlier.ejections = outlier.ejections.saturating_add(1);
        let period = backoff::exponential(self.options.base_ejection, self.options.max_ejection, outlier.ejections);
        let now = Instant::now();
        outlier.consecutive_failures = 0;
        outlier.ejected_until = Some(now + period);
        outlier.ejected_at = Some(now);
        warn!(instance = %self.addr, ?period, ejections = outlier.ejections, "instance ejected");
        metrics::client_ejection(&self.addr);
    }
}

impl InstanceHealth {
    /// Empty, with these settings.
    pub fn new(options: HealthOptions) -> Self {
        Self {
            instances: DashMap::new(),
            options,
        }
    }

    /// The addresses with a health record.
    pub fn addresses(&self) -> Vec<String> {
        self.instances.iter().map(|e| e.key().clone()).collect()
    }

    /// Forgets `addr` (an instance that left discovery).
    pub fn remove(&self, addr: &str) {
        self.instances.remove(addr);
    }

    /// Number of instances with a health record.
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    /// Whether no instance has a health record.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// The health of `addr`, created on first use.
    pub fn stat(&self, addr: &str) -> Arc<InstanceStat> {
        if let Some(s) = self.instances.get(addr) {
            return s.clone();
        }
        self.instances
            .entry(addr.to_owned())
            .or_insert_with(|| {
                Arc::new(InstanceStat {
                    addr: addr.to_owned(),
                    in_flight: AtomicUsize::new(0),
                    suspect: AtomicBool::new(false),
                    outlier: Mutex::new(Outlier::default()),
                    options: self.options.outlier.clone(),
                    breaker: Breaker::new(self.options.breaker),
                    max_in_flight: match self.options.max_in_flight {
                        0 => usize::MAX,
                        n => n,
                    },
                })
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> HealthOptions {
        HealthOptions {
            outlier: OutlierOptions {
                consecutive_failures: 3,
                base_ejection: Duration::from_millis(100),
                max_ejection: Duration::from_millis(250),
            },
            ..HealthOptions::default()
        }
    }

    fn connect_error() -> RpcError {
        RpcError::Connect {
            addr: "a".into(),
            source: std::io::Error::other("refused"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_connect_ejects_at_once_and_the_period_grows_then_resets() {
        let health = InstanceHealth::new(options());
        health.stat("a").failure(&connect_error());
        assert!(!health.stat("a").is_available());
        tokio::time::advance(Duration::from_millis(101)).await;
        assert!(health.stat("a").is_available(), "first ejection lasts the base period");
        health.stat("a").failure(&connect_error());
        tokio::time::advance(Duration::from_millis(150)).await;
        assert!(!health.stat("a").is_available(), "second ejection lasts twice as long");
        tokio::time::advance(Duration::from_millis(60)).await;
        assert!(health.stat("a").is_available());
        health.stat("a").failure(&connect_error());
        tokio::time::advance(Duration::from_millis(249)).await;
        assert!(!health.stat("a").is_available(), "capped at the maximum, not 400 ms");
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(health.stat("a").is_available());
        health.stat("a").success();
        health.stat("a").failure(&connect_error());
        tokio::time::advance(Duration::from_millis(101)).await;
        assert!(health.stat("a").is_available(), "a success resets the period");
    }

    #[tokio::test(start_paused = true)]
    async fn after_an_ejection_one_probe_goes_first() {
        let health = InstanceHealth::new(options());
        health.stat("a").failure(&connect_error());
        tokio::time::advance(Duration::from_millis(101)).await;
        assert!(health.stat("a").is_available());
        let probe = health.stat("a").begin().unwrap();
        assert!(!health.stat("a").is_available(), "others wait for the probe");
        let timeout: RpcError = RpcError::Timeout(Duration::ZERO);
        health.stat("a").failure(&timeout);
        drop(probe);
        tokio::time::advance(Duration::from_millis(150)).await;
        assert!(
            !health.stat("a").is_available(),
            "a failed probe ejects again, for longer"
        );
        tokio::time::advance(Duration::from_millis(60)).await;
        let probe = health.stat("a").begin().unwrap();
        health.stat("a").success();
        drop(probe);
        assert!(health.stat("a").is_available());
        let _busy = health.stat("a").begin().unwrap();
        assert!(
            health.stat("a").is_available(),
            "a healthy instance takes calls concurrently"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn calls_must_fail_several_times_in_a_row() {
        let health = InstanceHealth::new(options());
        let timeout: RpcError = RpcError::Timeout(Duration::ZERO);
        health.stat("a").failure(&timeout);
        health.stat("a").failure(&timeout);
        assert!(health.stat("a").is_available());
        health.stat("a").success();
        health.stat("a").failure(&timeout);
        health.stat("a").failure(&timeout);
        assert!(health.stat("a").is_available(), "the success reset the count");
        health.stat("a").failure(&timeout);
        assert!(!health.stat("a").is_available());
        // Errors about the request, not the instance, never eject.
        for _ in 0..10 {
            health.stat("b").failure(&RpcError::<()>::Decode("bad".into()));
            health.stat("b").failure(&RpcError::Application(7u8));
        }
        assert!(health.stat("b").is_available());
    }

    #[test]
    fn in_flight_counts_follow_the_guards() {
        let health = InstanceHealth::default();
        let a = health.stat("a").begin().unwrap();
        let b = health.stat("a").begin().unwrap();
        assert_eq!(health.stat("a").in_flight(), 2);
        drop(a);
        assert_eq!(health.stat("a").in_flight(), 1);
        drop(b);
        assert_eq!(health.stat("a").in_flight(), 0);
        assert_eq!(health.stat("never-called").in_flight(), 0);
    }

    #[test]
    fn an_instance_at_its_in_flight_limit_takes_no_more() {
        let health = InstanceHealth::new(HealthOptions {
            max_in_flight: 2,
            ..HealthOptions::default()
        });
        let a = health.stat("a").begin().unwrap();
        let _b = health.stat("a").begin().unwrap();
        assert!(!health.stat("a").is_available());
        assert!(health.stat("a").begin().is_none(), "a third call is refused");
        assert_eq!(health.stat("a").in_flight(), 2);
        drop(a);
        assert!(health.stat("a").is_available());
        assert!(health.stat("a").begin().is_some());
    }
}
