//! Load balancers: pick one instance from the discovery cache's list for each call.
//!
//! A balancer sees the current instance list (sorted by address, shared as an `Arc`) and a
//! [`PickContext`] that tells which instances may be picked (fail-over excludes the ones that
//! just failed; ejected outliers are skipped), how busy each is, and the call's hash key. It
//! returns an index into the list. Balancers keep small state of their own (a counter, a hash
//! ring) and do not allocate per pick.
//!
//! | config name | type | picks |
//! |---|---|---|
//! | `round_robin` | [`RoundRobin`] | each instance in turn |
//! | `random` | [`Random`] | uniformly at random |
//! | `weighted_random` | [`WeightedRandom`] | at random, in proportion to `weight` |
//! | `consistent_hash` | [`ConsistentHash`] | the ring position of the call's key |
//! | `p2c` | [`PowerOfTwoChoices`] | the less busy of two random instances |

mod consistent_hash;
mod hash;
mod p2c;
mod random;
mod round_robin;
mod weighted_random;

pub use consistent_hash::{ConsistentHash, VIRTUAL_NODES};
pub use hash::{hash64, hash_serialized};
pub use p2c::PowerOfTwoChoices;
pub use random::Random;
pub use round_robin::RoundRobin;
pub use weighted_random::WeightedRandom;

use std::sync::Arc;

pub use crate::config::LoadBalancerKind;
use crate::registry::ServiceInstance;

/// What a balancer may look at besides the instance list.
#[derive(Clone, Copy)]
pub struct PickContext<'a> {
    /// The call's affinity key (for hashing balancers), if it has one.
    pub hash_key: Option<u64>,
    /// Whether the instance at an index may be picked.
    pub available: &'a dyn Fn(usize) -> bool,
    /// Calls in flight on the instance at an index.
    pub load: &'a dyn Fn(usize) -> usize,
}

fn always(_: usize) -> bool {
    true
}

fn idle(_: usize) -> usize {
    0
}

impl Default for PickContext<'_> {
    fn default() -> Self {
        Self {
            hash_key: None,
            available: &always,
            load: &idle,
        }
    }
}

impl std::fmt::Debug for PickContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PickContext")
            .field("hash_key", &self.hash_key)
            .finish_non_exhaustive()
    }
}

/// Picks an instance for a call.
pub trait LoadBalancer: Send + Sync + 'static {
    /// The index of the chosen instance in `instances`, or `None` when no instance is available.
    fn pick(&self, instances: &Arc<[ServiceInstance]>, ctx: &PickContext<'_>) -> Option<usize>;
}

/// A new balancer of the configured kind.
pub fn for_kind(kind: LoadBalancerKind) -> Arc<dyn LoadBalancer> {
    match kind {
        LoadBalancerKind::RoundRobin => Arc::new(RoundRobin::default()),
        LoadBalancerKind::Random => Arc::new(Random),
        LoadBalancerKind::WeightedRandom => Arc::new(WeightedRandom::default()),
        LoadBalancerKind::ConsistentHash => Arc::new(ConsistentHash::default()),
        LoadBalancerKind::P2c => Arc::new(PowerOfTwoChoices),
    }
}

/// The first available index at or after `start`, wrapping around.
fn first_available_from(len: usize, start: usize, ctx: &PickContext<'_>) -> Option<usize> {
    (0..len).map(|k| (start + k) % len).find(|&i| (ctx.available)(i))
}

/// The `(n mod k)`-th of the `k` available indices, in order; `None` when none is available.
fn nth_available(len: usize, n: u64, ctx: &PickContext<'_>) -> Option<usize> {
    let available = (0..len).filter(|&i| (ctx.available)(i)).count() as u64;
    if available == 0 {
        return None;
    }
    (0..len).filter(|&i| (ctx.available)(i)).nth((n % available) as usize)
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub fn list(n: u16) -> Arc<[ServiceInstance]> {
        (0..n)
            .map(|p| ServiceInstance::new("S", "1", "10.0.0.1", 1000 + p))
            .collect()
    }

    /// Picks `n` times and counts the picks per index.
    pub fn histogram(
        b: &dyn LoadBalancer,
        instances: &Arc<[ServiceInstance]>,
        ctx: &PickContext<'_>,
        n: usize,
    ) -> Vec<usize> {
        let mut counts = vec![0; instances.len()];
        for _ in 0..n {
            counts[b.pick(instances, ctx).expect("a pick")] += 1;
        }
        counts
    }
}
