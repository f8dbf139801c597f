//! `describe` and `schemas`: what a service's providers take and return, from the schemas they
//! published, and whether the versions in use read each other.

use std::sync::Arc;

use serde_json::{json, Value};
use waypost::registry::{read_published_schema, PublishedSchemaError, Registry, ServiceInstance};
use waypost::schema::{compare, Difference, MethodSchema, ServiceSchema, TypeDef, VariantData};
use waypost::StreamShape;

use crate::error::CtlError;
use crate::listing::registered;

/// The instances that name one schema, and the schema (`None`: not published, or not
/// readable, or not the schema the fingerprint names).
struct InUse {
    fingerprint: String,
    schema: Option<ServiceSchema>,
    /// Why the text published under the fingerprint was not taken, when one was found.
    refused: Option<PublishedSchemaError>,
    instances: Vec<String>,
    /// When the newest of them registered (ms since the epoch).
    newest_ms: u64,
}

/// The schemas `key`'s instances name, the most used first (ties: the most recently
/// registered), and the addresses of the instances that name none.
async fn in_use(registry: &Arc<dyn Registry>, key: &str) -> Result<(Vec<InUse>, Vec<String>), CtlError> {
    let instances = registered(registry, key).await?;
    let mut groups: Vec<InUse> = Vec::new();
    let mut bare = Vec::new();
    for instance in &instances {
        let Some(fingerprint) = instance.schema.as_deref() else {
            bare.push(instance.address());
            continue;
        };
        match groups.iter_mut().find(|g| g.fingerprint == fingerprint) {
            Some(group) => add(group, instance),
            None => {
                let text = registry.get_schema(key, fingerprint).await?;
                let read = text.map(|text| read_published_schema(fingerprint, &text));
                let (schema, refused) = match read {
                    None => (None, None),
                    Some(Ok(schema)) => (Some(schema), None),
                    Some(Err(e)) => (None, Some(e)),
                };
                let mut group = InUse {
                    fingerprint: fingerprint.to_owned(),
                    schema,
                    refused,
                    instances: Vec::new(),
                    newest_ms: 0,
                };
                add(&mut group, instance);
                groups.push(group);
            }
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse((g.instances.len(), g.newest_ms)));
    Ok((groups, bare))
}

fn add(group: &mut InUse, instance: &ServiceInstance) {
    group.instances.push(instance.address());
    group.newest_ms = group.newest_ms.max(instance.registered_at_ms);
}

/// Prints the methods and types of `key`, from the schema most of its instances use
/// (`--json`: JSON Schema of each method's arguments, result and error).
pub async fn describe(registry: &Arc<dyn Registry>, key: &str, json: bool) -> Result<(), CtlError> {
    let (groups, _) = in_use(registry, key).await?;
    let Some((group, schema)) = groups.iter().find_map(|g| Some((g, g.schema.as_ref()?))) else {
        return Err(CtlError::NoSchema(key.to_owned()));
    };
    if json {
        println!("{}", schema.to_json_schema());
        return Ok(());
    }
    let others = groups.len() - 1;
    println!(
        "{key}  schema {} on {} of the instances{}",
        group.fingerprint,
        group.instances.len(),
        match others {
            0 => String::new(),
            n => format!(
                " ({n} other schema{} in use: waypost schemas {key})",
                if n == 1 { "" } else { "s" }
            ),
        }
    );
    println!("methods:");
    for method in &schema.methods {
        println!("  {}", signature(method));
    }
    if !schema.types.is_empty() {
        println!("types:");
        for (name, def) in &schema.types {
            println!("  {}", type_line(name, def));
        }
    }
    Ok(())
}

/// Whether `key`'s `method` streams, and which way, by the schema most of its instances use
/// (`None` also when they published none).
pub async fn stream_shape(
    registry: &Arc<dyn Registry>,
    key: &str,
    method: &str,
) -> Result<Option<StreamShape>, CtlError> {
    let (groups, _) = in_use(registry, key).await?;
    let schema = groups.iter().find_map(|g| g.schema.as_ref());
    Ok(schema.and_then(|s| s.method(method)).and_then(|m| m.streaming))
}

/// Lists the schemas `key`'s instances use and, for each pair in each direction (clients of
/// one calling providers of the other), whether calls survive their differences; fails when
/// some do not.
pub async fn schemas(registry: &Arc<dyn Registry>, key: &str, json: bool) -> Result<(), CtlError> {
    let (groups, bare) = in_use(registry, key).await?;
    let known: Vec<(&InUse, &ServiceSchema)> = groups.iter().filter_map(|g| Some((g, g.schema.as_ref()?))).collect();
    // Every direction: clients built from one schema calling providers of another.
    let mut pairs = Vec::new();
    for (consumer, ours) in &known {
        for (provider, theirs) in &known {
            if consumer.fingerprint != provider.fingerprint {
                let differences = compare(ours, theirs);
                pairs.push((
                    consumer.fingerprint.as_str(),
                    provider.fingerprint.as_str(),
                    differences,
                ));
            }
        }
    }
    let broken = pairs.iter().filter(|(_, _, d)| d.iter().any(|d| !d.safe)).count();
    if json {
        print_json(&groups, &bare, &pairs);
    } else {
        print_text(&groups, &bare, &pairs);
    }
    let untrusted = groups.iter().filter(|g| g.refused.is_some()).count();
    if untrusted > 0 {
        return Err(CtlError::UntrustedSchemas {
            key: key.to_owned(),
            count: untrusted,
        });
    }
    match broken {
        0 => Ok(()),
        broken => Err(CtlError::IncompatibleSchemas {
            key: key.to_owned(),
            pairs: broken,
        }),
    }
}

/// The consumer's and the provider's fingerprints, and their differences.
type Pair<'a> = (&'a str, &'a str, Vec<Difference>);

fn print_text(groups: &[InUse], bare: &[String], pairs: &[Pair<'_>]) {
    for group in groups {
        let methods = match &group.schema {
            Some(schema) => schema
                .methods
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            None => match &group.refused {
                Some(refused) => format!("(NOT TRUSTED: {refused})"),
                None => "(not published)".to_owned(),
            },
        };
        println!(
            "schema {}  {} instance(s): {}",
            group.fingerprint,
            group.instances.len(),
            group.instances.join(", ")
        );
        println!("  methods: {methods}");
    }
    if !bare.is_empty() {
        println!("no schema  {} instance(s): {}", bare.len(), bare.join(", "));
    }
    for (a, b, differences) in pairs {
        let verdict = if differences.iter().all(|d| d.safe) {
            "compatible"
        } else {
            "INCOMPATIBLE"
        };
        println!("clients of {a} calling providers of {b}: {verdict}");
        for difference in differences {
            println!("  {difference}");
        }
    }
}

fn print_json(groups: &[InUse], bare: &[String], pairs: &[Pair<'_>]) {
    let schemas: Vec<Value> = groups
        .iter()
        .map(|g| {
            json!({
                "fingerprint": g.fingerprint,
                "instances": g.instances,
                "published": g.schema.is_some(),
                "refused": g.refused.as_ref().map(ToString::to_string),
                "methods": g.schema.as_ref().map(|s| s.methods.iter().map(|m| m.name.clone()).collect::<Vec<_>>()),
            })
        })
        .collect();
    let pairs: Vec<Value> = pairs
        .iter()
        .map(|(a, b, differences)| {
            let list: Vec<Value> = differences
                .iter()
                .map(|d| json!({"at": d.at, "what": d.what, "compatible": d.safe}))
                .collect();
            json!({"consumer": a, "provider": b, "compatible": differences.iter().all(|d| d.safe), "differences": list})
        })
        .collect();
    println!(
        "{}",
        json!({"schemas": schemas, "without_schema": bare, "pairs": pairs})
    );
}

/// `name(arg: T, ...) -> R` (with `Result<R, E>` for a typed error, and `[idempotent]`).
fn signature(m: &MethodSchema) -> String {
    let mut args: Vec<String> = m.args.iter().map(|a| format!("{}: {}", a.name, a.shape)).collect();
    let streams = |sends: fn(StreamShape) -> bool| m.streaming.is_some_and(sends);
    if let Some(last) = args.last_mut().filter(|_| streams(StreamShape::client_sends)) {
        let (name, item) = last.split_once(": ").unwrap_or(("", last.as_str()));
        *last = format!("{name}: Streaming<{item}>");
    }
    let result = match &m.error {
        Some(error) => format!("Result<{}, {error}>", m.result),
        None => m.result.to_string(),
    };
    let result = match streams(StreamShape::server_sends) {
        true => format!("Streaming<{result}>"),
        false => result,
    };
    let idempotent = if m.idempotent { "  [idempotent]" } else { "" };
    format!("{}({}) -> {result}{idempotent}", m.name, args.join(", "))
}

/// A type as one line: `struct User { id: u64, email?: Option<String> }` (`?`: optional).
fn type_line(name: &str, def: &TypeDef) -> String {
    let fields = |fields: &[waypost::schema::Field]| {
        fields
            .iter()
            .map(|f| format!("{}{}: {}", f.name, if f.optional { "?" } else { "" }, f.shape))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let list = |items: &[waypost::schema::Shape]| items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    match def {
        TypeDef::Struct(f) => format!("struct {name} {{ {} }}", fields(f)),
        TypeDef::TupleStruct(items) => format!("struct {name}({})", list(items)),
        TypeDef::Newtype(inner) => format!("struct {name}({inner})"),
        TypeDef::UnitStruct => format!("struct {name}"),
        TypeDef::Enum(variants) => {
            let variants: Vec<String> = variants
                .iter()
                .map(|v| match &v.data {
                    VariantData::Unit => v.name.clone(),
                    VariantData::Newtype(inner) => format!("{}({inner})", v.name),
                    VariantData::Tuple(items) => format!("{}({})", v.name, list(items)),
                    VariantData::Struct(f) => format!("{} {{ {} }}", v.name, fields(f)),
                    _ => format!("{}(?)", v.name),
                })
                .collect();
            format!("enum {name} {{ {} }}", variants.join(", "))
        }
        _ => format!("{name}: {def:?}"),
    }
}
