//! Which instances of a route serve which method, from the schemas they name.
//!
//! During a rollout a service's instances run different versions: a method added by the new
//! version exists only on the upgraded ones. Each instance names its schema's fingerprint and
//! the discovery cache fetches the schemas, so a route knows, per method, the instances known
//! to lack it; calls never go to those. An instance without a schema (an older provider, a
//! schema not fetched yet) is taken to have every method, as before schemas existed.
//!
//! With `schema_check: strict`, an instance whose schema is incompatible with the consumer's
//! for a method (see [`crate::schema::compare`]) counts as lacking that method too.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::registry::{SchemaMap, ServiceInstance};
use crate::schema::ServiceSchema;

/// Method names.
pub(crate) type MethodSet = BTreeSet<String>;

/// Per schema fingerprint, the methods whose calls its providers must not get (strict schema
/// check).
pub(crate) type Refused = HashMap<String, Arc<MethodSet>>;

/// An instance's known schema, and the methods refused to it.
struct Known<'a> {
    schema: &'a ServiceSchema,
    refused: Option<&'a MethodSet>,
}

impl Known<'_> {
    fn lacks(&self, method: &str) -> bool {
        self.schema.method(method).is_none() || self.refused.is_some_and(|r| r.contains(method))
    }
}

/// Per method, the instances (indices match the route's targets) known to lack it.
pub(crate) struct MethodMap {
    /// Each method some known schema names: the instances that lack it, `None` when none does.
    by_method: HashMap<String, Option<Box<[bool]>>>,
    /// The instances whose schema is known: they lack any method no schema names.
    known: Box<[bool]>,
    /// Methods some instance has but is refused (strict schema check).
    refused: BTreeSet<String>,
}

impl MethodMap {
    /// The map for `instances` under `schemas`, the methods of `refused` counting as lacking;
    /// `None` when no instance's schema is known (every instance may take every method).
    pub(crate) fn of(instances: &[ServiceInstance], schemas: &SchemaMap, refused: &Refused) -> Option<Self> {
        let each: Vec<Option<Known<'_>>> = instances
            .iter()
            .map(|i| {
                let fingerprint = i.schema.as_deref()?;
                Some(Known {
                    schema: schemas.get(fingerprint)?,
                    refused: refused.get(fingerprint).map(|r| &**r),
                })
            })
            .collect();
        if each.iter().all(Option::is_none) {
            return None;
        }
        let names: BTreeSet<&str> = each
            .iter()
            .flatten()
            .flat_map(|k| k.schema.methods.iter().map(|m| m.name.as_str()))
            .collect();
        let by_method = names
            .into_iter()
            .map(|name| {
                let lacking: Box<[bool]> = each.iter().map(|k| k.as_ref().is_some_and(|k| k.lacks(name))).collect();
                (name.to_owned(), lacking.contains(&true).then_some(lacking))
            })
            .collect();
        // A method is refused only to schemas that have it (see `incompatible_methods`).
        let refused = each
            .iter()
            .flatten()
            .flat_map(|k| k.refused.into_iter().flatten())
            .cloned()
            .collect();
        Some(Self {
            by_method,
            known: each.iter().map(Option::is_some).collect(),
            refused,
        })
    }

    /// Whether some instance has `method` but is refused it.
    pub(crate) fn refuses(&self, method: &str) -> bool {
        self.refused.contains(method)
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
        let all = [old, new, unknown.clone(), bare.clone()];
        let map = MethodMap::of(&all, &schemas, &Refused::new()).unwrap();
        assert_eq!(map.lacking("get"), None);
        assert_eq!(map.lacking("count"), Some(&[true, false, false, false][..]));
        assert_eq!(map.lacking("absent"), Some(&[true, true, false, false][..]));
        assert!(MethodMap::of(&[unknown, bare], &schemas, &Refused::new()).is_none());
        // A strict check refuses `get` to the providers of the second schema.
        let refused: Refused = [("000000000000000b".to_owned(), Arc::new(["get".to_owned()].into()))].into();
        let map = MethodMap::of(&all, &schemas, &refused).unwrap();
        assert_eq!(map.lacking("get"), Some(&[false, true, false, false][..]));
        assert!(map.refuses("get") && !map.refuses("count"));
    }
}
