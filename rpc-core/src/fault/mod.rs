//! Fault tolerance: what to do when a call fails.
//!
//! * [`policy`]: the [`MethodPolicy`] each call runs under, resolved from the configuration
//!   (per method, then per service, then global) once per client; the `tolerant` and `mock`
//!   settings are shortcuts for its fail-over and fallback fields.
//! * [`retry`]: retry delays (none, fixed interval, exponential backoff with jitter and a cap)
//!   and which errors may be retried at all.
//! * the retry budget ([`RetryBudget`]): retries and fail-overs together add at most a share of
//!   the calls.
//! * [`outlier`]: per-instance health: calls in flight (for p2c, and a limit of them) and
//!   ejection of instances that fail to connect or fail several calls in a row.
//! * [`breaker`]: per-instance circuit breaker, adaptive throttling from recent requests and
//!   accepts, for instances that fail often but not always.
//!
//! The client's call path (see [`crate::client`]) runs these as separate steps: the fallback
//! step (fail-safe, fail-back, mock) around the retry step, around the fail-over step, around
//! one attempt on one instance, whose outcome feeds the instance's health.

pub mod breaker;
mod budget;
pub mod outlier;
pub mod policy;
pub mod retry;

use crate::config::{RetryStrategy, TolerantKind};
pub use breaker::BreakerOptions;
pub use budget::{BudgetOptions, RetryBudget};
pub use outlier::{HealthOptions, InstanceHealth, InstanceStat, OutlierOptions};
pub use policy::{Fallback, HedgePolicy, MethodPolicy, PolicySet};
pub use retry::{is_retryable, RetryPolicy};
