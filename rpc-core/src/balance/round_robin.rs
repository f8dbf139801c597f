//! Round robin: each instance in turn.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{nth_available, LoadBalancer, PickContext};
use crate::registry::ServiceInstance;

/// Cycles through the instances with one shared atomic counter.
///
/// The turn of an unavailable instance (ejected, or already tried by the call) goes to the
/// available ones in rotation, one per cycle of the counter, so they share it evenly: with one
/// of three instances ejected, the other two get half of the calls each, not two thirds and
/// one third as they would if the next one in line took every skipped turn.
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
        let len = instances.len() as u64;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let turn = (n % len) as usize;
        if (ctx.available)(turn) {
            return Some(turn);
        }
        let cycle = n / len;
        nth_available(instances.len(), cycle, ctx)
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
        assert_eq!(
            histogram(&rr, &l, &ctx, 300),
            vec![150, 0, 150],
            "skipped turns are shared"
        );
        let none = |_: usize| false;
        let ctx = PickContext {
            available: &none,
            ..PickContext::default()
        };
        assert_eq!(rr.pick(&l, &ctx), None);
    }

    #[test]
    fn skipped_turns_are_shared_evenly_whichever_instance_is_out() {
        let l = list(5);
        for out in 0..5 {
            let available = |i: usize| i != out;
            let ctx = PickContext {
                available: &available,
                ..PickContext::default()
            };
            let counts = histogram(&RoundRobin::default(), &l, &ctx, 20_000);
            for (i, &c) in counts.iter().enumerate() {
                let expected = if i == out { 0 } else { 5_000 };
                assert_eq!(c, expected, "instance {out} out: {counts:?}");
            }
        }
        // Two out of five: three share everything.
        let available = |i: usize| i != 1 && i != 3;
        let ctx = PickContext {
            available: &available,
            ..PickContext::default()
        };
        let counts = histogram(&RoundRobin::default(), &l, &ctx, 30_000);
        assert_eq!(counts, vec![10_000, 0, 10_000, 0, 10_000]);
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
