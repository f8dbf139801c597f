//! A service schema as JSON Schema (draft 2020-12, the dialect of OpenAPI 3.1), describing
//! values as the JSON serializer writes them: structs as objects, enums as serde's externally
//! tagged form (a unit variant is its name, others `{"Variant": data}`), `Option` as the value
//! or `null`, byte strings as arrays of bytes, maps as objects.
//!
//! Named types become entries of `$defs`, referred to by `{"$ref": "#/$defs/Name"}`, so
//! recursive types stay finite. A method's arguments are one object keyed by parameter name
//! (the optional ones not required), which is also how a JSON caller may pass them.

use serde_json::{json, Map, Value};

use super::shape::{Field, MethodSchema, ServiceSchema, Shape, TypeDef, VariantData};

impl ServiceSchema {
    /// The JSON Schema of every method's arguments, result and error, and of the named types
    /// under `$defs`:
    /// `{"service", "fingerprint", "methods": [{"name", "idempotent", "arguments", "result", "error"?}], "$defs"}`.
    pub fn to_json_schema(&self) -> Value {
        let refs = Refs("#/$defs/");
        let methods: Vec<Value> = self.methods.iter().map(|m| refs.method(m)).collect();
        json!({
            "service": format!("{}:{}", self.name, self.version),
            "fingerprint": self.fingerprint(),
            "methods": methods,
            "$defs": refs.types(self),
        })
    }
}

/// Where references to named types point: `{prefix}{Name}`.
#[derive(Clone, Copy)]
pub(super) struct Refs<'a>(pub(super) &'a str);

impl Refs<'_> {
    /// A method's arguments (an object by parameter name), result and error.
    pub(super) fn method(self, m: &MethodSchema) -> Value {
        let mut out = json!({
            "name": m.name,
            "idempotent": m.idempotent,
            "arguments": self.object(&m.args),
            "result": self.shape(&m.result),
        });
        if let Some(error) = &m.error {
            out["error"] = self.shape(error);
        }
        if let Some(shape) = m.streaming {
            out["streaming"] = json!(shape);
        }
        out
    }

    /// The schema of each named type of `schema`, by name.
    pub(super) fn types(self, schema: &ServiceSchema) -> Map<String, Value> {
        schema
            .types
            .iter()
            .map(|(name, def)| (name.clone(), self.type_def(def)))
            .collect()
    }

    /// An object with `fields` as its properties; the optional ones are not required.
    pub(super) fn object(self, fields: &[Field]) -> Value {
        let properties: Map<String, Value> = fields.iter().map(|f| (f.name.clone(), self.shape(&f.shape))).collect();
        let required: Vec<&str> = fields.iter().filter(|f| !f.optional).map(|f| f.name.as_str()).collect();
        json!({"type": "object", "properties": properties, "required": required})
    }

    /// The JSON Schema of one shape (named types by reference).
    pub(super) fn shape(self, s: &Shape) -> Value {
        match s {
            Shape::Bool => json!({"type": "boolean"}),
            Shape::I8 => integer(i8::MIN.into(), i8::MAX as u128),
            Shape::I16 => integer(i16::MIN.into(), i16::MAX as u128),
            Shape::I32 => integer(i32::MIN.into(), i32::MAX as u128),
            Shape::I64 => integer(i64::MIN.into(), i64::MAX as u128),
            Shape::U8 => integer(0, u8::MAX.into()),
            Shape::U16 => integer(0, u16::MAX.into()),
            Shape::U32 => integer(0, u32::MAX.into()),
            Shape::U64 => integer(0, u64::MAX.into()),
            Shape::I128 | Shape::U128 => json!({"type": "integer"}),
            Shape::F32 | Shape::F64 => json!({"type": "number"}),
            Shape::Char => json!({"type": "string", "minLength": 1, "maxLength": 1}),
            Shape::String => json!({"type": "string"}),
            Shape::Bytes => json!({"type": "array", "items": integer(0, 255)}),
            Shape::Unit => json!({"type": "null"}),
            Shape::Option(inner) => json!({"anyOf": [self.shape(inner), {"type": "null"}]}),
            Shape::Seq(item) => json!({"type": "array", "items": self.shape(item)}),
            Shape::Tuple(items) => self.tuple(items),
            Shape::Map { value, .. } => json!({"type": "object", "additionalProperties": self.shape(value)}),
            Shape::Named(name) => json!({"$ref": format!("{}{name}", self.0)}),
            Shape::Any => json!({}),
        }
    }

    fn tuple(self, items: &[Shape]) -> Value {
        let prefix: Vec<Value> = items.iter().map(|s| self.shape(s)).collect();
        json!({"type": "array", "prefixItems": prefix, "minItems": items.len(), "maxItems": items.len()})
    }

    fn type_def(self, def: &TypeDef) -> Value {
        match def {
            TypeDef::Struct(fields) => self.object(fields),
            TypeDef::TupleStruct(items) => self.tuple(items),
            TypeDef::Newtype(inner) => self.shape(inner),
            TypeDef::UnitStruct => json!({"type": "null"}),
            TypeDef::Enum(variants) => {
                let one_of: Vec<Value> = variants
                    .iter()
                    .map(|v| {
                        let data = match &v.data {
                            VariantData::Unit => return json!({"const": v.name}),
                            VariantData::Newtype(inner) => self.shape(inner),
                            VariantData::Tuple(items) => self.tuple(items),
                            VariantData::Struct(fields) => self.object(fields),
                            VariantData::Unknown => json!({}),
                        };
                        json!({
                            "type": "object",
                            "properties": {v.name.clone(): data},
                            "required": [v.name],
                            "additionalProperties": false,
                        })
                    })
                    .collect();
                json!({"oneOf": one_of})
            }
        }
    }
}

fn integer(min: i128, max: u128) -> Value {
    json!({"type": "integer", "minimum": min, "maximum": max})
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::schema::SchemaBuilder;

    #[allow(dead_code)]
    #[derive(Deserialize)]
    struct User {
        id: u64,
        email: Option<String>,
        tier: Tier,
    }

    #[allow(dead_code)]
    #[derive(Deserialize)]
    enum Tier {
        Free,
        Pro { seats: u32 },
    }

    #[test]
    fn methods_and_types_become_json_schema_with_references() {
        let schema = SchemaBuilder::new("Users", "1.0")
            .fallible_method::<(u64, Option<String>), User, String>("get", &["id", "hint"], true)
            .build();
        let doc = schema.to_json_schema();
        assert_eq!(doc["service"], "Users:1.0");
        assert_eq!(doc["fingerprint"], schema.fingerprint());
        let get = &doc["methods"][0];
        assert_eq!(get["name"], "get");
        assert_eq!(get["arguments"]["required"], json!(["id"]));
        assert_eq!(get["arguments"]["properties"]["id"]["minimum"], 0);
        assert_eq!(get["result"], json!({"$ref": "#/$defs/User"}));
        assert_eq!(get["error"], json!({"type": "string"}));
        assert_eq!(doc["$defs"]["User"]["required"], json!(["id", "tier"]));
        assert_eq!(
            doc["$defs"]["Tier"]["oneOf"][0],
            json!({"const": "Free"}),
            "{:#}",
            doc["$defs"]["Tier"]
        );
        assert_eq!(
            doc["$defs"]["Tier"]["oneOf"][1]["properties"]["Pro"]["properties"]["seats"]["type"],
            "integer"
        );
    }
}
