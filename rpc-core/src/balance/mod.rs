//! Load balancers: pick one instance from the discovery cache's list for each call.
//!
//! A balancer sees the current instance list (sorted by address, shared as an `Arc`) and a
//! [`PickContext`]; it returns an index into the list. Balancers keep their own small state
//! (a counter, in-flight counts) and never allocate per pick.

mod round_robin;

pub use round_robin::RoundRobin;

use crate::registry::ServiceInstance;

/// What a balancer may look at besides the instance list.
#[derive(Debug, Clone, Copy, Default)]
pub struct PickContext<'a> {
    /// The call's affinity key (for hashing balancers), if it has one.
    pub hash_key: Option<&'a [u8]>,
}

/// Picks an instance for a call.
pub trait LoadBalancer: Send + Sync + 'static {
    /// The index of the chosen instance in `instances`, or `None` when the list is empty.
    fn pick(&self, instances: &[ServiceInstance], ctx: &PickContext<'_>) -> Option<usize>;
}
