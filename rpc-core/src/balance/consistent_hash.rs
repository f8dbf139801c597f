//! Consistent hashing on a ring of virtual nodes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use super::{hash64, LoadBalancer, PickContext};
use crate::registry::ServiceInstance;

/// Virtual nodes per instance on the ring.
pub const VIRTUAL_NODES: usize = 160;

/// Maps each call's hash key to the first virtual node clockwise on a ring where every instance
/// has [`VIRTUAL_NODES`] points hashed from its own address (`host:port#i`), so the ring does not
/// depend on list order, and adding or removing one of N instances moves about 1/N of the keys.
/// A call without a key gets a random ring position; an unavailable instance is passed over for
/// the next one clockwise.
///
/// The ring is rebuilt only when the instance list changes (the discovery cache publishes a
/// new `Arc` per change; the balancer keeps the one it built from).
#[derive(Debug, Default)]
pub struct ConsistentHash {
    ring: RwLock<Option<BuiltRing>>,
    builds: AtomicU64,
}

/// A ring and the instance list it was built from (kept so its address cannot be reused).
type BuiltRing = (Arc<[ServiceInstance]>, Arc<Ring>);

#[derive(Debug)]
struct Ring {
    /// (position, instance index), sorted by position.
    points: Vec<(u64, usize)>,
}

impl Ring {
    fn build(instances: &[ServiceInstance]) -> Self {
        let mut points = Vec::with_capacity(instances.len() * VIRTUAL_NODES);
        for (index, instance) in instances.iter().enumerate() {
            let address = instance.address();
            for v in 0..VIRTUAL_NODES {
                points.push((hash64(format!("{address}#{v}").as_bytes()), index));
            }
        }
        points.sort_unstable();
        Self { points }
    }
}

impl ConsistentHash {
    /// How many times a ring was built (tests check it is once per instance list).
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }

    fn ring_for(&self, instances: &Arc<[ServiceInstance]>) -> Arc<Ring> {
        if let Some((list, ring)) = &*self.ring.read().unwrap_or_else(PoisonError::into_inner) {
            if Arc::ptr_eq(list, instances) {
                return ring.clone();
            }
        }
        let mut slot = self.ring.write().unwrap_or_else(PoisonError::into_inner);
        if let Some((list, ring)) = &*slot {
            if Arc::ptr_eq(list, instances) {
                return ring.clone();
            }
        }
        let ring = Arc::new(Ring::build(instances));
        self.builds.fetch_add(1, Ordering::Relaxed);
        *slot = Some((instances.clone(), ring.clone()));
        ring
    }
}

impl LoadBalancer for ConsistentHash {
    fn pick(&self, instances: &Arc<[ServiceInstance]>, ctx: &PickContext<'_>) -> Option<usize> {
        if instances.is_empty() {
            return None;
        }
        let ring = self.ring_for(instances);
        let key = ctx.hash_key.unwrap_or_else(|| fastrand::u64(..));
        let start = ring.points.partition_point(|(pos, _)| *pos < key);
        let n = ring.points.len();
        (0..n)
            .map(|k| ring.points[(start + k) % n].1)
            .find(|&i| (ctx.available)(i))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::list;
    use super::*;
    use crate::balance::hash_serialized;

    fn owner(b: &ConsistentHash, l: &Arc<[ServiceInstance]>, key: u64) -> String {
        let ctx = PickContext {
            hash_key: Some(hash_serialized(&key)),
            ..PickContext::default()
        };
        l[b.pick(l, &ctx).unwrap()].address()
    }

    #[test]
    fn the_same_key_goes_to_the_same_instance_and_keys_spread() {
        let b = ConsistentHash::default();
        let l = list(10);
        let mut per_instance = std::collections::HashMap::new();
        for key in 0..20_000u64 {
            assert_eq!(owner(&b, &l, key), owner(&b, &l, key));
            *per_instance.entry(owner(&b, &l, key)).or_insert(0) += 1;
        }
        // 2,000 each on average; 160 virtual nodes keep every share within +-30%.
        assert_eq!(per_instance.len(), 10);
        assert!(
            per_instance.values().all(|&c| (1_400..=2_600).contains(&c)),
            "{per_instance:?}"
        );
        assert_eq!(b.builds(), 1, "one ring for one list");
    }

    #[test]
    fn removing_or_adding_one_of_n_moves_about_one_nth_of_the_keys() {
        let keys = 20_000u64;
        let b = ConsistentHash::default();
        let ten = list(10);
        let before: Vec<String> = (0..keys).map(|k| owner(&b, &ten, k)).collect();

        // Remove instance 3: only its keys move, and they are about 1/10 of all.
        let removed = ten[3].address();
        let nine: Arc<[ServiceInstance]> = ten.iter().filter(|i| i.address() != removed).cloned().collect();
        let after: Vec<String> = (0..keys).map(|k| owner(&b, &nine, k)).collect();
        let moved: Vec<usize> = (0..keys as usize).filter(|&k| before[k] != after[k]).collect();
        assert!(
            moved.iter().all(|&k| before[k] == removed),
            "a key of a surviving instance moved"
        );
        let share = moved.len() as f64 / keys as f64;
        assert!((0.07..=0.13).contains(&share), "{share}");

        // Add an eleventh: keys move only to it, about 1/11 of all.
        let mut eleven: Vec<ServiceInstance> = ten.to_vec();
        eleven.push(ServiceInstance::new("S", "1", "10.0.0.2", 7777));
        let eleven: Arc<[ServiceInstance]> = eleven.into();
        let grown: Vec<String> = (0..keys).map(|k| owner(&b, &eleven, k)).collect();
        let moved: Vec<usize> = (0..keys as usize).filter(|&k| before[k] != grown[k]).collect();
        assert!(
            moved.iter().all(|&k| grown[k] == "10.0.0.2:7777"),
            "keys moved between old instances"
        );
        let share = moved.len() as f64 / keys as f64;
        assert!((0.06..=0.12).contains(&share), "{share}");
        assert_eq!(b.builds(), 3, "one build per distinct list");
    }

    #[test]
    fn an_unavailable_owner_hands_its_keys_to_the_next_instance_clockwise() {
        let b = ConsistentHash::default();
        let l = list(5);
        let ctx = PickContext {
            hash_key: Some(12345),
            ..PickContext::default()
        };
        let first = b.pick(&l, &ctx).unwrap();
        let not_first = |i: usize| i != first;
        let without = PickContext {
            available: &not_first,
            ..ctx
        };
        let second = b.pick(&l, &without).unwrap();
        assert_ne!(first, second);
        assert_eq!(b.pick(&l, &without), Some(second), "the fallback is stable too");
    }
}
