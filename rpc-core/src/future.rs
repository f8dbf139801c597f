//! The boxed future every trait object of the crate hands out (services, invokers, registries):
//! `futures`' own [`BoxFuture`](futures_util::future::BoxFuture), so that a future from any
//! futures-based library fits without conversion.
//!
//! A leaf module: it imports nothing from the crate, so any module can use it without reaching
//! up to the module that happens to define a trait.

pub use futures_util::future::BoxFuture;
