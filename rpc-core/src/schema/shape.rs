//! The schema's data: shapes of values, definitions of named types, methods and services.
//! Serialized as JSON into the registry, so field names here are part of the registry layout.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The shape of a value's type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Shape {
    /// `bool`.
    Bool,
    /// `i8`.
    I8,
    /// `i16`.
    I16,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `i128`.
    I128,
    /// `u8`.
    U8,
    /// `u16`.
    U16,
    /// `u32`.
    U32,
    /// `u64`.
    U64,
    /// `u128`.
    U128,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
    /// `char`.
    Char,
    /// A string.
    String,
    /// A byte string (`serde_bytes`, `Bytes`).
    Bytes,
    /// `()`.
    Unit,
    /// `Option<T>`.
    Option(Box<Shape>),
    /// A sequence: `Vec<T>`, sets, slices.
    Seq(Box<Shape>),
    /// A tuple or a fixed-size array.
    Tuple(Vec<Shape>),
    /// A map.
    Map {
        /// The keys' shape.
        key: Box<Shape>,
        /// The values' shape.
        value: Box<Shape>,
    },
    /// A struct or an enum, defined in the schema's `types` under this name.
    Named(String),
    /// Any value: a type that describes itself as it is read (`serde_json::Value`, untagged
    /// enums), or one the schema could not learn.
    Any,
}

/// A named type: a struct or an enum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TypeDef {
    /// A struct with named fields.
    Struct(Vec<Field>),
    /// A tuple struct.
    TupleStruct(Vec<Shape>),
    /// A newtype struct (`struct Id(u64)`).
    Newtype(Shape),
    /// A unit struct.
    UnitStruct,
    /// An enum.
    Enum(Vec<Variant>),
}

/// A named field, or a method's argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// Its name.
    pub name: String,
    /// Its type's shape.
    pub shape: Shape,
    /// Whether a reader does without it: an `Option`, or a struct field with a serde
    /// default (`#[serde(default)]`), so a message that lacks it still reads.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

/// An enum's variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    /// Its name.
    pub name: String,
    /// What it holds.
    pub data: VariantData,
}

/// What a variant holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum VariantData {
    /// Nothing.
    Unit,
    /// One value.
    Newtype(Shape),
    /// Several values.
    Tuple(Vec<Shape>),
    /// Named fields.
    Struct(Vec<Field>),
    /// Not learned (a variant that could only be reached through itself).
    Unknown,
}

impl Shape {
    /// Whether this shape names the type `name` (directly, not through other named types).
    pub fn mentions(&self, name: &str) -> bool {
        match self {
            Self::Named(n) => n == name,
            Self::Option(s) | Self::Seq(s) => s.mentions(name),
            Self::Tuple(items) => items.iter().any(|s| s.mentions(name)),
            Self::Map { key, value } => key.mentions(name) || value.mentions(name),
            _ => false,
        }
    }
}

/// A shape as Rust would spell it: `u64`, `Option<String>`, `Vec<User>`, `Map<String, u32>`.
impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool => f.write_str("bool"),
            Self::I8 => f.write_str("i8"),
            Self::I16 => f.write_str("i16"),
            Self::I32 => f.write_str("i32"),
            Self::I64 => f.write_str("i64"),
            Self::I128 => f.write_str("i128"),
            Self::U8 => f.write_str("u8"),
            Self::U16 => f.write_str("u16"),
            Self::U32 => f.write_str("u32"),
            Self::U64 => f.write_str("u64"),
            Self::U128 => f.write_str("u128"),
            Self::F32 => f.write_str("f32"),
            Self::F64 => f.write_str("f64"),
            Self::Char => f.write_str("char"),
            Self::String => f.write_str("String"),
            Self::Bytes => f.write_str("bytes"),
            Self::Unit => f.write_str("()"),
            Self::Option(s) => write!(f, "Option<{s}>"),
            Self::Seq(s) => write!(f, "Vec<{s}>"),
            Self::Tuple(items) => {
                f.write_str("(")?;
                for (i, s) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{s}")?;
                }
                f.write_str(")")
            }
            Self::Map { key, value } => write!(f, "Map<{key}, {value}>"),
            Self::Named(name) => f.write_str(name),
            Self::Any => f.write_str("any"),
        }
    }
}

impl VariantData {
    /// Whether this variant's data names the type `name` (directly).
    pub fn mentions(&self, name: &str) -> bool {
        match self {
            Self::Newtype(s) => s.mentions(name),
            Self::Tuple(items) => items.iter().any(|s| s.mentions(name)),
            Self::Struct(fields) => fields.iter().any(|f| f.shape.mentions(name)),
            Self::Unit | Self::Unknown => false,
        }
    }
}

/// One method of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodSchema {
    /// Its name.
    pub name: String,
    /// Its arguments, in order.
    pub args: Vec<Field>,
    /// What it returns (the `T` of `Result<T, E>`).
    pub result: Shape,
    /// Its typed error (the `E` of `Result<T, E>`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Shape>,
    /// Whether it is `#[idempotent]`.
    #[serde(default)]
    pub idempotent: bool,
    /// Which way it streams, if it does: `server` (its result is the items' type), `client`
    /// (its last argument is, by its items' type) or `bidi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming: Option<crate::stream::StreamShape>,
}

/// A service's methods and the named types they use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSchema {
    /// The service's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its methods, by name.
    pub methods: Vec<MethodSchema>,
    /// The structs and enums the methods use, by name.
    pub types: BTreeMap<String, TypeDef>,
}

impl ServiceSchema {
    /// The method called `name`.
    pub fn method(&self, name: &str) -> Option<&MethodSchema> {
        self.methods.iter().find(|m| m.name == name)
    }

    /// A name for this exact schema: 16 hex digits of a 64-bit FNV-1a hash of its JSON (the
    /// methods sorted by name, the types by name), the same on every build and platform.
    pub fn fingerprint(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{:016x}", crate::fnv::fnv1a(&json))
    }
}
