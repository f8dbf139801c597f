//! Round robin: each instance in turn.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{LoadBalancer, PickContext};
use crate::registry::ServiceInstance;

/// Cycles through the instances with one shared atomic counter.
///
/// The counter wraps at 2^64 (`fetch_add` wraps, and the index is taken modulo the list's
/// length), so it never overflows or goes negative.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicU64,
}

impl RoundRobin {
    /// A balancer whose counter starts at `start` (tests use a value near the wrap).
    pub fn starting_at(start: u64) -> Self {
        Self {
            next: AtomicU64::new(start),
        }
    }
}

impl LoadBalancer for RoundRobin {
    fn pick(&self, instances: &[ServiceInstance], _ctx: &PickContext<'_>) -> Option<usize> {
        if instances.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Some((n % instances.len() as u64) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(n: u16) -> Vec<ServiceInstance> {
        (0..n).map(|p| ServiceInstance::new("S", "1", "h", p)).collect()
    }

    #[test]
    fn cycles_evenly() {
        let rr = RoundRobin::default();
        let l = list(3);
        let picks: Vec<usize> = (0..6).map(|_| rr.pick(&l, &PickContext::default()).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(rr.pick(&[], &PickContext::default()), None);
    }

    #[test]
    fn survives_the_counter_wrap() {
        let rr = RoundRobin::starting_at(u64::MAX - 2);
        let l = list(3);
        for _ in 0..10 {
            let i = rr.pick(&l, &PickContext::default()).unwrap();
            assert!(i < 3);
        }
    }
}
