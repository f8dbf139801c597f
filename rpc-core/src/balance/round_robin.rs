//! Round robin: each instance in turn.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{first_available_from, LoadBalancer, PickContext};
use crate::registry::ServiceInstance;

/// Cycles through the instances with one shared atomic counter, skipping unavailable ones.
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
    fn pick(&self, instances: &Arc<[ServiceInstance]>, ctx: &PickContext<'_>) -> Option<usize> {
        if instances.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let start = (n % instances.len() as u64) as usize;
        first_available_from(instances.len(), start, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{histogram, list};
    use super::*;

    #[test]
    fn cycles_evenly_and_skips_unavailable() {
        let rr = RoundRobin::default();
        let l = list(3);
        let picks: Vec<usize> = (0..6).map(|_| rr.pick(&l, &PickContext::default()).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(rr.pick(&list(0), &PickContext::default()), None);
        let not_one = |i: usize| i != 1;
        let ctx = PickContext {
            available: &not_one,
            ..PickContext::default()
        };
        assert_eq!(histogram(&rr, &l, &ctx, 300)[1], 0);
        let none = |_: usize| false;
        let ctx = PickContext {
            available: &none,
            ..PickContext::default()
        };
        assert_eq!(rr.pick(&l, &ctx), None);
    }

    #[test]
    fn survives_the_counter_wrap() {
        let rr = RoundRobin::starting_at(u64::MAX - 2);
        let l = list(3);
        // 2^64 is not a multiple of 3: the sequence jumps once at the wrap, and never panics.
        let picks: Vec<usize> = (0..6).map(|_| rr.pick(&l, &PickContext::default()).unwrap()).collect();
        assert_eq!(
            picks,
            vec![
                (u64::MAX - 2) as usize % 3,
                (u64::MAX - 1) as usize % 3,
                (u64::MAX % 3) as usize,
                0,
                1,
                2
            ]
        );
        assert!(histogram(&rr, &l, &PickContext::default(), 3000)
            .iter()
            .all(|&c| c == 1000));
    }
}
