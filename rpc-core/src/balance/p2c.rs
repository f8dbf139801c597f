//! Power of two choices: the less busy of two random instances.

use std::sync::Arc;

use super::{LoadBalancer, PickContext, Random};
use crate::registry::ServiceInstance;

/// Draws two distinct available instances at random and picks the one with fewer calls in
/// flight (either, at random, on a tie). Nearly as good as least-loaded, at the cost of two
/// loads per pick.
#[derive(Debug, Default, Clone, Copy)]
pub struct PowerOfTwoChoices;

impl LoadBalancer for PowerOfTwoChoices {
    fn pick(&self, instances: &Arc<[ServiceInstance]>, ctx: &PickContext<'_>) -> Option<usize> {
        let a = Random.pick(instances, ctx)?;
        let others = |i: usize| i != a && (ctx.available)(i);
        let narrowed = PickContext {
            available: &others,
            ..*ctx
        };
        let Some(b) = Random.pick(instances, &narrowed) else {
            return Some(a);
        };
        let (la, lb) = ((ctx.load)(a), (ctx.load)(b));
        Some(match la.cmp(&lb) {
            std::cmp::Ordering::Less => a,
            std::cmp::Ordering::Greater => b,
            std::cmp::Ordering::Equal => {
                if fastrand::bool() {
                    a
                } else {
                    b
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{histogram, list};
    use super::*;

    #[test]
    fn prefers_idle_instances() {
        let l = list(4);
        // Instance 0 is very busy, 1 a little, 2 and 3 idle.
        let load = |i: usize| [100, 5, 0, 0][i];
        let ctx = PickContext {
            load: &load,
            ..PickContext::default()
        };
        let counts = histogram(&PowerOfTwoChoices, &l, &ctx, 12_000);
        // Instance 0 wins only when drawn twice, which distinct draws never do.
        assert_eq!(counts[0], 0, "{counts:?}");
        // Instance 1 wins only against 0 (2 of 12 ordered pairs): ~2,000.
        assert!((1_600..=2_400).contains(&counts[1]), "{counts:?}");
        // Idle ones share the rest evenly: ~5,000 each.
        assert!((4_500..=5_500).contains(&counts[2]), "{counts:?}");
        assert!((4_500..=5_500).contains(&counts[3]), "{counts:?}");
        // Equal loads spread evenly.
        let even = histogram(&PowerOfTwoChoices, &l, &PickContext::default(), 40_000);
        assert!(even.iter().all(|&c| (9_400..=10_600).contains(&c)), "{even:?}");
        // One instance: it is the pick.
        assert_eq!(PowerOfTwoChoices.pick(&list(1), &PickContext::default()), Some(0));
    }
}
