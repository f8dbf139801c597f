//! What a service's methods take and return, as both ends can compare it.
//!
//! `#[service]` records each method's argument, result and error types as a [`ServiceSchema`]:
//! their shape (struct fields, enum variants, element types) learned from their `Deserialize`
//! implementations alone (see [`SchemaBuilder`]), so plain serde types need no extra
//! derive. A schema is named by its [`fingerprint`](ServiceSchema::fingerprint), so that a
//! provider can publish it once and its instances name it: consumers and operators can then
//! tell which instances have a method and whether two versions of a type read each other
//! ([`compare`]).

mod compat;
mod excerpt;
mod json_schema;
mod openapi;
mod prints;
mod shape;
mod trace;

pub use compat::{compare, compare_method, incompatible_methods, Difference};
pub use openapi::openapi;
pub(crate) use prints::MethodPrints;
pub use prints::SCHEMA_METADATA;
pub use shape::{Field, MethodSchema, ServiceSchema, Shape, TypeDef, Variant, VariantData};
pub use trace::SchemaBuilder;
