//! Random choice in proportion to instance weights.

use std::sync::{Arc, PoisonError, RwLock};

use super::{LoadBalancer, PickContext, Random};
use crate::registry::ServiceInstance;

/// Picks an available instance with probability `weight / total weight`. Instances of weight 0
/// are picked only when every available instance has weight 0 (then uniformly).
///
/// The cumulative weights of the current instance list are cached (rebuilt only when the list
/// changes), so a pick is one draw and a binary search; only when the drawn instance is
/// unavailable does it fall back to a draw over the available ones.
#[derive(Debug, Default)]
pub struct WeightedRandom {
    cumulative: RwLock<Option<CumulativeWeights>>,
}

/// Running totals of the weights of an instance list, and the list (kept so its address cannot
/// be reused).
type CumulativeWeights = (Arc<[ServiceInstance]>, Arc<Vec<u64>>);

impl WeightedRandom {
    fn cumulative(&self, instances: &Arc<[ServiceInstance]>) -> Arc<Vec<u64>> {
        if let Some((list, sums)) = &*self.cumulative.read().unwrap_or_else(PoisonError::into_inner) {
            if Arc::ptr_eq(list, instances) {
                return sums.clone();
            }
        }
        let mut total = 0u64;
        let sums: Arc<Vec<u64>> = Arc::new(
            instances
                .iter()
                .map(|i| {
                    total += u64::from(i.weight);
                    total
                })
                .collect(),
        );
        *self.cumulative.write().unwrap_or_else(PoisonError::into_inner) = Some((instances.clone(), sums.clone()));
        sums
    }

    /// A draw among the available instances only (linear).
    fn pick_available(instances: &Arc<[ServiceInstance]>, ctx: &PickContext<'_>) -> Option<usize> {
        let total: u64 = instances
            .iter()
            .enumerate()
            .filter(|(i, _)| (ctx.available)(*i))
            .map(|(_, inst)| u64::from(inst.weight))
            .sum();
        if total == 0 {
            return Random.pick(instances, ctx);
        }
        let mut target = fastrand::u64(..total);
        for (i, inst) in instances.iter().enumerate() {
            if !(ctx.available)(i) {
                continue;
            }
            let w = u64::from(inst.weight);
            if target < w {
                return Some(i);
            }
            target -= w;
        }
        None
    }
}

impl LoadBalancer for WeightedRandom {
    fn pick(&self, instances: &Arc<[ServiceInstance]>, ctx: &PickContext<'_>) -> Option<usize> {
        let sums = self.cumulative(instances);
        let total = sums.last().copied().unwrap_or(0);
        if total > 0 {
            let target = fastrand::u64(..total);
            let i = sums.partition_point(|&sum| sum <= target);
            if (ctx.available)(i) {
                return Some(i);
            }
        }
        Self::pick_available(instances, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::histogram;
    use super::*;

    #[test]
    fn follows_the_weights_within_statistical_bounds() {
        let l: Arc<[ServiceInstance]> = [1u32, 3, 6, 0]
            .iter()
            .enumerate()
            .map(|(p, &w)| {
                let mut i = ServiceInstance::new("S", "1", "h", p as u16);
                i.weight = w;
                i
            })
            .collect();
        let counts = histogram(&WeightedRandom::default(), &l, &PickContext::default(), 50_000);
        // Expected 5,000 / 15,000 / 30,000 / 0.
        assert!((4_500..=5_500).contains(&counts[0]), "{counts:?}");
        assert!((14_200..=15_800).contains(&counts[1]), "{counts:?}");
        assert!((29_000..=31_000).contains(&counts[2]), "{counts:?}");
        assert_eq!(counts[3], 0);
        let not_heaviest = |i: usize| i != 2;
        let ctx = PickContext {
            available: &not_heaviest,
            ..PickContext::default()
        };
        let counts = histogram(&WeightedRandom::default(), &l, &ctx, 20_000);
        assert_eq!(counts[2], 0);
        assert!((4_500..=5_500).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn with_one_of_three_ejected_the_other_two_split_evenly() {
        let l = super::super::test_support::list(3);
        let not_middle = |i: usize| i != 1;
        let ctx = PickContext {
            available: &not_middle,
            ..PickContext::default()
        };
        let counts = histogram(&WeightedRandom::default(), &l, &ctx, 30_000);
        assert_eq!(counts[1], 0);
        for c in [counts[0], counts[2]] {
            assert!((14_250..=15_750).contains(&c), "within 5% of an even split: {counts:?}");
        }
    }
}
