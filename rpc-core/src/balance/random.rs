//! Uniform random choice.

use std::sync::Arc;

use super::{first_available_from, LoadBalancer, PickContext};
use crate::registry::ServiceInstance;

/// Picks uniformly among the available instances.
#[derive(Debug, Default, Clone, Copy)]
pub struct Random;

impl LoadBalancer for Random {
    fn pick(&self, instances: &Arc<[ServiceInstance]>, ctx: &PickContext<'_>) -> Option<usize> {
        let len = instances.len();
        if len == 0 {
            return None;
        }
        // Rejection sampling keeps the choice uniform while few instances are unavailable;
        // the scan settles the rare case where most are.
        for _ in 0..4 {
            let i = fastrand::usize(..len);
            if (ctx.available)(i) {
                return Some(i);
            }
        }
        first_available_from(len, fastrand::usize(..len), ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{histogram, list};
    use super::*;

    #[test]
    fn spreads_uniformly_within_statistical_bounds() {
        let l = list(4);
        let counts = histogram(&Random, &l, &PickContext::default(), 40_000);
        // Expected 10,000 each; sd = sqrt(40000 * 0.25 * 0.75) ~ 87: allow 6 sd.
        for c in counts {
            assert!((9_480..=10_520).contains(&c), "{c}");
        }
        let only_two = |i: usize| i == 2;
        let ctx = PickContext {
            available: &only_two,
            ..PickContext::default()
        };
        assert_eq!(histogram(&Random, &l, &ctx, 100)[2], 100);
    }
}
