//! The boxed future every trait object of the crate hands out (services, invokers, registries).
//!
//! A leaf module: it imports nothing from the crate, so any module can use it without reaching
//! up to the module that happens to define a trait.

use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
