//! What a service's methods take and return, as both ends can compare it.
//!
//! `#[service]` records each method's argument, result and error types as a [`ServiceSchema`]:
//! their shape (struct fields, enum variants, element types) learned from their `Deserialize`
//! implementations alone (see [`SchemaBuilder`]), so plain serde types need no extra
//! derive. A provider publishes its schema, named by its [`fingerprint`](ServiceSchema::fingerprint),
//! so that consumers and operators can tell which instances have a method and whether two
//! versions of a type can read each other.

mod shape;
mod trace;

pub use shape::{Field, MethodSchema, ServiceSchema, Shape, TypeDef, Variant, VariantData};
pub use trace::SchemaBuilder;
