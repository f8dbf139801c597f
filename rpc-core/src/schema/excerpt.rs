//! One method's part of a service's schema, and the fingerprint of the types its calls carry.
//!
//! Fixed-schema serializers (bincode, postcard) write values by position, without names or
//! tags: a reader whose types differ from the writer's in any way can read the bytes as
//! something else and give a wrong value. So a caller using one sends the fingerprint of the
//! method's types with each call, the provider compares it with its own, and a call whose two
//! sides differ fails before its handler runs (see the server's admission).
//!
//! The fingerprint covers what the bytes of a call depend on: the arguments' types in order,
//! the result's, the error's, the streaming shape, and every named type they reach (fields in
//! order with their names and types, variants in order). It leaves out what they do not: the
//! service's version, the arguments' names, `#[idempotent]`, the service's other methods, and
//! whether a byte string is a `Vec<u8>` or a byte string type (`serde_bytes`, `Bytes`): both
//! serializers write the two alike, and peers of the two kinds call each other.

use std::collections::{BTreeMap, BTreeSet};

use super::shape::{MethodSchema, ServiceSchema, Shape, TypeDef, VariantData};

impl ServiceSchema {
    /// The schema of `method` alone: the method and the named types it reaches.
    pub fn method_excerpt(&self, method: &str) -> Option<ServiceSchema> {
        let found = self.method(method)?;
        let mut reached = BTreeSet::new();
        let mut pending: Vec<&Shape> = found.args.iter().map(|a| &a.shape).collect();
        pending.push(&found.result);
        pending.extend(found.error.as_ref());
        while let Some(shape) = pending.pop() {
            named_in(shape, &mut |name| {
                if reached.insert(name.to_owned()) {
                    if let Some(def) = self.types.get(name) {
                        shapes_of(def, &mut |s| pending.push(s));
                    }
                }
            });
        }
        let types: BTreeMap<String, TypeDef> = reached
            .into_iter()
            .filter_map(|name| Some((name.clone(), self.types.get(&name)?.clone())))
            .collect();
        Some(ServiceSchema {
            name: self.name.clone(),
            version: self.version.clone(),
            methods: vec![found.clone()],
            types,
        })
    }

    /// The fingerprint of the types a call of `method` carries (see the module docs): 16 hex
    /// digits, equal on two builds exactly when a fixed-schema serializer reads one's bytes as
    /// the other wrote them.
    pub fn method_fingerprint(&self, method: &str) -> Option<String> {
        let mut excerpt = self.method_excerpt(method)?;
        excerpt.version = String::new();
        for m in &mut excerpt.methods {
            let MethodSchema {
                args,
                idempotent,
                result,
                error,
                ..
            } = m;
            for arg in args.iter_mut() {
                arg.name = String::new();
                bytes_as_one(&mut arg.shape);
            }
            *idempotent = false;
            bytes_as_one(result);
            error.iter_mut().for_each(bytes_as_one);
        }
        for def in excerpt.types.values_mut() {
            shapes_of_mut(def, &mut bytes_as_one);
        }
        Some(excerpt.fingerprint())
    }
}

/// `shape` with every sequence of `u8` written as the byte string it is on the wire.
fn bytes_as_one(shape: &mut Shape) {
    match shape {
        Shape::Seq(inner) if **inner == Shape::U8 => *shape = Shape::Bytes,
        Shape::Option(inner) | Shape::Seq(inner) => bytes_as_one(inner),
        Shape::Tuple(items) => items.iter_mut().for_each(bytes_as_one),
        Shape::Map { key, value } => {
            bytes_as_one(key);
            bytes_as_one(value);
        }
        _ => {}
    }
}

/// Calls `each` with every shape a named type holds directly, to change it.
fn shapes_of_mut(def: &mut TypeDef, each: &mut impl FnMut(&mut Shape)) {
    match def {
        TypeDef::Struct(fields) => fields.iter_mut().for_each(|f| each(&mut f.shape)),
        TypeDef::TupleStruct(items) => items.iter_mut().for_each(&mut *each),
        TypeDef::Newtype(shape) => each(shape),
        TypeDef::UnitStruct => {}
        TypeDef::Enum(variants) => {
            for variant in variants {
                match &mut variant.data {
                    VariantData::Newtype(shape) => each(shape),
                    VariantData::Tuple(items) => items.iter_mut().for_each(&mut *each),
                    VariantData::Struct(fields) => fields.iter_mut().for_each(|f| each(&mut f.shape)),
                    VariantData::Unit | VariantData::Unknown => {}
                }
            }
        }
    }
}

/// Calls `found` with each type name `shape` mentions directly.
fn named_in<'a>(shape: &'a Shape, found: &mut impl FnMut(&'a str)) {
    match shape {
        Shape::Named(name) => found(name),
        Shape::Option(inner) | Shape::Seq(inner) => named_in(inner, found),
        Shape::Tuple(items) => items.iter().for_each(|s| named_in(s, found)),
        Shape::Map { key, value } => {
            named_in(key, found);
            named_in(value, found);
        }
        _ => {}
    }
}

/// Calls `each` with every shape a named type holds directly.
fn shapes_of<'a>(def: &'a TypeDef, each: &mut impl FnMut(&'a Shape)) {
    match def {
        TypeDef::Struct(fields) => fields.iter().for_each(|f| each(&f.shape)),
        TypeDef::TupleStruct(items) => items.iter().for_each(&mut *each),
        TypeDef::Newtype(shape) => each(shape),
        TypeDef::UnitStruct => {}
        TypeDef::Enum(variants) => {
            for variant in variants {
                match &variant.data {
                    VariantData::Newtype(shape) => each(shape),
                    VariantData::Tuple(items) => items.iter().for_each(&mut *each),
                    VariantData::Struct(fields) => fields.iter().for_each(|f| each(&f.shape)),
                    VariantData::Unit | VariantData::Unknown => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::shape::{Field, Variant};
    use super::*;

    fn field(name: &str, shape: Shape) -> Field {
        Field {
            name: name.into(),
            shape,
            optional: false,
        }
    }

    fn schema(user_fields: Vec<Field>, tiers: &[&str]) -> ServiceSchema {
        let method = |name: &str, args: Vec<Field>, result: Shape| MethodSchema {
            name: name.into(),
            args,
            result,
            error: None,
            idempotent: false,
            streaming: None,
        };
        let mut types = BTreeMap::new();
        types.insert("User".to_owned(), TypeDef::Struct(user_fields));
        types.insert(
            "Tier".to_owned(),
            TypeDef::Enum(
                tiers
                    .iter()
                    .map(|t| Variant {
                        name: (*t).into(),
                        data: VariantData::Unit,
                    })
                    .collect(),
            ),
        );
        types.insert("Unrelated".to_owned(), TypeDef::UnitStruct);
        ServiceSchema {
            name: "Users".into(),
            version: "1.0".into(),
            methods: vec![
                method(
                    "put",
                    vec![field("user", Shape::Named("User".into())), field("n", Shape::U32)],
                    Shape::U32,
                ),
                method("ping", vec![field("n", Shape::U64)], Shape::U64),
            ],
            types,
        }
    }

    fn user_v1() -> Vec<Field> {
        vec![field("id", Shape::U64), field("tier", Shape::Named("Tier".into()))]
    }

    #[test]
    fn an_excerpt_holds_the_method_and_the_types_it_reaches() {
        let excerpt = schema(user_v1(), &["Free"]).method_excerpt("put").unwrap();
        assert_eq!(excerpt.methods.len(), 1);
        assert_eq!(excerpt.types.keys().collect::<Vec<_>>(), ["Tier", "User"]);
        assert!(schema(user_v1(), &["Free"]).method_excerpt("nope").is_none());
    }

    #[test]
    fn the_fingerprint_changes_with_the_types_a_call_carries_and_only_with_them() {
        let v1 = schema(user_v1(), &["Free"]);
        let print = |s: &ServiceSchema, m: &str| s.method_fingerprint(m).unwrap();
        // A field added, a variant added: `put` differs, `ping` does not.
        let mut fields = user_v1();
        fields.push(field("email", Shape::Option(Box::new(Shape::String))));
        let v2 = schema(fields, &["Free", "Gold"]);
        assert_ne!(print(&v1, "put"), print(&v2, "put"));
        assert_eq!(print(&v1, "ping"), print(&v2, "ping"));
        let only_variant = schema(user_v1(), &["Free", "Gold"]);
        assert_ne!(print(&v1, "put"), print(&only_variant, "put"));
        // What the bytes do not depend on: the version, the arguments' names, idempotence.
        let mut renamed = v1.clone();
        renamed.version = "1.1".into();
        renamed.methods[0].args[0].name = "who".into();
        renamed.methods[0].idempotent = true;
        renamed.types.remove("Unrelated");
        assert_eq!(print(&v1, "put"), print(&renamed, "put"));
        // A `Vec<u8>` and a byte string are written alike.
        let mut as_vec = v1.clone();
        as_vec.methods[1].result = Shape::Seq(Box::new(Shape::U8));
        let mut as_bytes = v1.clone();
        as_bytes.methods[1].result = Shape::Bytes;
        assert_eq!(print(&as_vec, "ping"), print(&as_bytes, "ping"));
        assert_ne!(print(&v1, "ping"), print(&as_bytes, "ping"));
    }
}
