//! Which instances of a route serve which method, from the schemas they name.
//!
//! During a rollout a service's instances run different versions: a method added by the new
//! version exists only on the upgraded ones. Each instance names its schema's fingerprint and
//! the discovery cache fetches the schemas, so a route knows, per method, the instances known
//! to lack it; calls never go to those. An instance without a schema (an older provider, a
//! schema not fetched yet) is taken to have every method, as before schemas existed.

use std::collections::{BTreeSet, HashMap};

use crate::registry::{SchemaMap, ServiceInstance};
use crate::schema::ServiceSchema;

/// Per method, the instances (indices match the route's targets) known to lack it.
pub(crate) struct MethodMap {
    /// Each method some known schema names: the instances that lack it, `None` when none does.
    by_method: HashMap<String, Option<Box<[bool]>>>,
    /// The instances whose schema is known: they lack any method no schema names.
    known: Box<[bool]>,
}

impl MethodMap {
    /// The map for `instances` under `schemas`; `None` when no instance's schema is known
    /// (every instance may take every method).
    pub(crate) fn of(instances: &[ServiceInstance], schemas: &SchemaMap) -> Option<Self> {
        let each: Vec<Option<&ServiceSchema>> = instances
            .iter()
            .map(|i| i.schema.as_deref().and_then(|f| schemas.get(f)).map(|s| &**s))
            .collect();
        if each.iter().all(Option::is_none) {
            return None;
        }
        let names: BTreeSet<&str> = each
            .iter()
            .flatten()
            .flat_map(|s| s.methods.iter().map(|m| m.name.as_str()))
            .collect();
        let by_method = names
            .into_iter()
            .map(|name| {
                let lacking: Box<[bool]> = each
                    .iter()
                    .map(|s| s.is_some_and(|s| s.method(name).is_none()))
                    .collect();
                (name.to_owned(), lacking.contains(&true).then_some(lacking))
            })
            .collect();
        Some(Self {
            by_method,
            known: each.iter().map(Option::is_some).collect(),
        })
    }

    /// The instances known to lack `method`; `None` when every instance may have it.
    pub(crate) fn lacking(&self, method: &str) -> Option<&[bool]> {
        match self.by_method.get(method) {
            Some(lacking) => lacking.as_deref(),
            None => Some(&self.known),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::schema::SchemaBuilder;

    fn instance(port: u16, schema: Option<&str>) -> ServiceInstance {
        let mut i = ServiceInstance::new("S", "1", "h", port);
        i.schema = schema.map(str::to_owned);
        i
    }

    #[test]
    fn instances_known_to_lack_a_method_are_marked_and_unknown_ones_may_take_any() {
        let v1 = SchemaBuilder::new("S", "1").method::<(u32,), u32>("get", &["id"], false);
        let v2 = SchemaBuilder::new("S", "1")
            .method::<(u32,), u32>("get", &["id"], false)
            .method::<(), u32>("count", &[], false);
        let schemas: SchemaMap = [
            ("000000000000000a".to_owned(), Arc::new(v1.build())),
            ("000000000000000b".to_owned(), Arc::new(v2.build())),
        ]
        .into();
        let old = instance(1, Some("000000000000000a"));
        let new = instance(2, Some("000000000000000b"));
        let unknown = instance(3, Some("000000000000000c"));
        let bare = instance(4, None);
        let map = MethodMap::of(&[old, new, unknown.clone(), bare.clone()], &schemas).unwrap();
        assert_eq!(map.lacking("get"), None);
        assert_eq!(map.lacking("count"), Some(&[true, false, false, false][..]));
        assert_eq!(map.lacking("absent"), Some(&[true, true, false, false][..]));
        assert!(MethodMap::of(&[unknown, bare], &schemas).is_none());
    }
}
