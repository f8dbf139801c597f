//! [`Extensions`]: typed values a call carries between its middleware and its handler.
//!
//! A layer or interceptor stores a value by its type (the tenant it resolved, the claims of a
//! token it checked); the handler, or the layer's own response path, reads it back by type.
//! Extensions belong to one call on one side: they never travel over the wire and a call made
//! from inside a handler starts with none. An empty set is one null pointer and costs nothing
//! to clone; values are shared, so cloning a context never clones them.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Typed per-call values, at most one per type; see the module docs.
#[derive(Clone, Default)]
pub struct Extensions {
    // Boxed so that a context without extensions (nearly every one) carries one pointer, not
    // an empty map's 48 bytes.
    #[allow(clippy::box_collection)]
    values: Option<Box<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>>,
}

impl Extensions {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value`, replacing (and returning) the value of the same type stored before.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) -> Option<Arc<T>> {
        self.values
            .get_or_insert_with(Box::default)
            .insert(TypeId::of::<T>(), Arc::new(value))
            .and_then(|old| old.downcast::<T>().ok())
    }

    /// The value of type `T`, if one was stored.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.values.as_ref()?.get(&TypeId::of::<T>())?.downcast_ref::<T>()
    }

    /// Removes and returns the value of type `T`.
    pub fn remove<T: Send + Sync + 'static>(&mut self) -> Option<Arc<T>> {
        self.values
            .as_mut()?
            .remove(&TypeId::of::<T>())
            .and_then(|old| old.downcast::<T>().ok())
    }

    /// Number of values stored.
    pub fn len(&self) -> usize {
        self.values.as_ref().map_or(0, |v| v.len())
    }

    /// Whether no value is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions").field("len", &self.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Tenant(&'static str);

    #[test]
    fn values_are_stored_read_replaced_and_removed_by_type() {
        let mut ext = Extensions::new();
        assert!(ext.is_empty() && ext.get::<Tenant>().is_none());
        assert!(ext.insert(Tenant("acme")).is_none());
        ext.insert(7u32);
        assert_eq!(ext.get::<Tenant>(), Some(&Tenant("acme")));
        assert_eq!(ext.insert(Tenant("other")).as_deref(), Some(&Tenant("acme")));
        let shared = ext.clone();
        assert_eq!(ext.remove::<Tenant>().as_deref(), Some(&Tenant("other")));
        assert_eq!(ext.len(), 1);
        assert_eq!(
            shared.get::<Tenant>(),
            Some(&Tenant("other")),
            "a clone keeps its own set"
        );
        assert_eq!(shared.get::<u32>(), Some(&7));
    }
}
