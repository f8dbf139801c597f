//! Fault tolerance: what to do when a call fails.
//!
//! * [`policy`]: the [`MethodPolicy`] each call runs under, resolved from the configuration
//!   (per method, then per service, then global) once per client.
//! * [`retry`]: retry delays (none, fixed interval, exponential backoff with jitter and a cap)
//!   and which errors may be retried at all.
//! * [`outlier`]: per-instance health: calls in flight (for p2c) and ejection of instances
//!   that fail to connect or fail several calls in a row.
//!
//! The cluster invoker ([`crate::client::ClusterInvoker`]) applies retry, fail-over and
//! ejection; the [`Channel`](crate::Channel) applies fail-back and mock; the generated client
//! applies fail-safe, which needs the method's typed default value.

pub mod outlier;
pub mod policy;
pub mod retry;

pub use outlier::{InstanceHealth, InstanceStat, OutlierOptions};
pub use policy::{MethodPolicy, PolicySet};
pub use retry::{is_retryable, RetryPolicy};
