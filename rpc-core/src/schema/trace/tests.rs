use std::collections::BTreeMap;

use serde::Deserialize;

use super::*;
use crate::schema::shape::{Field, Variant};

#[allow(dead_code)]
#[derive(Deserialize)]
struct User {
    id: u64,
    name: String,
    email: Option<String>,
    tier: Tier,
    tags: Vec<String>,
    attrs: BTreeMap<String, i32>,
    manager: Option<Box<User>>,
    point: (f32, f64),
    id2: Id,
    raw: serde_json::Value,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct Id(u64);

#[allow(dead_code)]
#[derive(Deserialize)]
enum Tier {
    Free,
    Pro { seats: u32 },
    Gold(u8, char),
    Team(Vec<User>),
}

#[allow(dead_code)]
#[derive(Deserialize)]
enum Expr {
    Neg(Box<Expr>),
    Add(Box<Expr>, Box<Expr>),
    Lit(i64),
}

fn field(name: &str, shape: Shape) -> Field {
    Field {
        name: name.to_owned(),
        optional: matches!(shape, Shape::Option(_)),
        shape,
    }
}

fn named(name: &str) -> Shape {
    Shape::Named(name.to_owned())
}

#[test]
fn structs_enums_and_recursion_are_traced() {
    let mut tracer = Tracer::default();
    assert_eq!(tracer.trace::<Vec<User>>(), Shape::Seq(Box::new(named("User"))));
    assert_eq!(
        tracer.types["User"],
        TypeDef::Struct(vec![
            field("id", Shape::U64),
            field("name", Shape::String),
            field("email", Shape::Option(Box::new(Shape::String))),
            field("tier", named("Tier")),
            field("tags", Shape::Seq(Box::new(Shape::String))),
            field(
                "attrs",
                Shape::Map {
                    key: Box::new(Shape::String),
                    value: Box::new(Shape::I32)
                }
            ),
            field("manager", Shape::Option(Box::new(named("User")))),
            field("point", Shape::Tuple(vec![Shape::F32, Shape::F64])),
            field("id2", named("Id")),
            field("raw", Shape::Any),
        ])
    );
    assert_eq!(tracer.types["Id"], TypeDef::Newtype(Shape::U64));
    let variant = |name: &str, data| Variant {
        name: name.to_owned(),
        data,
    };
    assert_eq!(
        tracer.types["Tier"],
        TypeDef::Enum(vec![
            variant("Free", VariantData::Unit),
            variant("Pro", VariantData::Struct(vec![field("seats", Shape::U32)])),
            variant("Gold", VariantData::Tuple(vec![Shape::U8, Shape::Char])),
            variant("Team", VariantData::Newtype(Shape::Seq(Box::new(named("User"))))),
        ])
    );
}

#[test]
fn an_enum_that_holds_itself_is_traced_through_its_other_variants() {
    let mut tracer = Tracer::default();
    assert_eq!(tracer.trace::<Expr>(), named("Expr"));
    let TypeDef::Enum(variants) = &tracer.types["Expr"] else {
        panic!("an enum: {:?}", tracer.types["Expr"]);
    };
    let data: Vec<&VariantData> = variants.iter().map(|v| &v.data).collect();
    assert_eq!(
        data,
        [
            &VariantData::Newtype(named("Expr")),
            &VariantData::Tuple(vec![named("Expr"), named("Expr")]),
            &VariantData::Newtype(Shape::I64),
        ]
    );
}

#[test]
fn a_type_that_refuses_placeholders_is_kept_as_far_as_traced() {
    #[allow(dead_code)]
    #[derive(Deserialize)]
    struct Picky {
        first: u8,
        count: std::num::NonZeroU32,
        last: String,
    }
    let mut tracer = Tracer::default();
    assert_eq!(tracer.trace_shape::<Picky>(), named("Picky"));
    assert_eq!(
        tracer.types["Picky"],
        TypeDef::Struct(vec![
            field("first", Shape::U8),
            field("count", Shape::U32),
            field("last", Shape::Any),
        ])
    );
    // The probe pass that leaves `count` out gets past the refusal and learns the rest.
    assert_eq!(tracer.trace::<Picky>(), named("Picky"));
    let TypeDef::Struct(fields) = &tracer.types["Picky"] else {
        panic!()
    };
    assert_eq!(fields[2], field("last", Shape::String));
}

#[test]
fn a_service_schema_names_its_arguments_and_has_a_stable_fingerprint() {
    let build = || {
        SchemaBuilder::new("Users", "1.0")
            .method::<(u64,), Option<User>>("get", &["id"], true)
            .fallible_method::<(String, Vec<u8>), (), String>("put", &["name", "photo"], false)
            .build()
    };
    let schema = build();
    assert_eq!(
        schema.methods.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["get", "put"]
    );
    let put = schema.method("put").unwrap();
    assert_eq!(
        put.args,
        [
            field("name", Shape::String),
            field("photo", Shape::Seq(Box::new(Shape::U8)))
        ]
    );
    assert_eq!((&put.result, &put.error), (&Shape::Unit, &Some(Shape::String)));
    assert!(schema.types.contains_key("User") && schema.types.contains_key("Tier"));
    assert_eq!(schema.fingerprint(), build().fingerprint());
    assert_eq!(schema.fingerprint().len(), 16);
    let other = SchemaBuilder::new("Users", "1.0")
        .method::<(u32,), Option<User>>("get", &["id"], true)
        .build();
    assert_ne!(schema.fingerprint(), other.fingerprint());
    // Through JSON and back, as it travels through the registry.
    let json = serde_json::to_string(&schema).unwrap();
    assert_eq!(serde_json::from_str::<ServiceSchema>(&json).unwrap(), schema);
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct Account {
    id: u64,
    #[serde(default)]
    score: u32,
    email: Option<String>,
    #[serde(default = "default_plan")]
    plan: Plan,
    tags: Vec<String>,
}

#[allow(dead_code)]
#[derive(Deserialize, Default)]
enum Plan {
    #[default]
    Basic,
    Team(Box<Account>),
}

fn default_plan() -> Plan {
    Plan::Basic
}

#[test]
fn fields_with_a_serde_default_or_an_option_type_are_optional() {
    let mut tracer = Tracer::default();
    tracer.trace::<Account>();
    let TypeDef::Struct(fields) = &tracer.types["Account"] else {
        panic!("{:?}", tracer.types["Account"]);
    };
    let optional: Vec<(&str, bool)> = fields.iter().map(|f| (f.name.as_str(), f.optional)).collect();
    assert_eq!(
        optional,
        [
            ("id", false),
            ("score", true),
            ("email", true),
            ("plan", true),
            ("tags", false)
        ]
    );
}
