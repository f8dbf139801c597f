//! Learning a type's shape from its `Deserialize` implementation.
//!
//! A derived `Deserialize` tells its deserializer what it expects: a struct's name and field
//! names, an enum's name and variant names, then a call per value of each primitive. The
//! tracer is a deserializer that answers those calls with placeholder values (zero, the empty
//! string, an empty byte string) and writes down what it was asked, so a type's shape is
//! learned with no derive beyond serde's. It runs once per service, when its schema is built.
//!
//! A value can hold one enum variant at a time and a recursive type cannot be built to its
//! end, so a type is traced in passes:
//!
//! * each pass takes, for every enum met outside itself, the next variant not yet traced,
//!   until all are;
//! * an enum met inside itself takes a variant already traced;
//! * a type met inside itself otherwise ends the pass, and the nearest `Option`, sequence or
//!   map around it is empty in the next passes (its shape kept from this one); with none
//!   around it, the nearest enum tries its next variant first.
//!
//! A type whose `Deserialize` refuses the placeholders, or asks for a self-describing value
//! (`deserialize_any`), is recorded as far as it was traced, the rest as [`Shape::Any`].
//!
//! Whether a struct field may be absent (an `Option`, or a serde default) is learned by probe
//! passes once the shape is known: each leaves one field out of its struct's map, and the
//! field is optional when the value still reads. A field whose struct a probe pass does not
//! reach (a struct only inside a later enum variant) counts as required unless it is an
//! `Option`, which errs on the safe side when two versions are compared.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, Visitor};

use super::shape::{Field, MethodSchema, ServiceSchema, Shape, TypeDef, Variant, VariantData};

/// At most this many passes per traced type.
const MAX_PASSES: usize = 256;

/// Types nested deeper than this are taken to be recursive.
const MAX_DEPTH: usize = 64;

/// Builds a [`ServiceSchema`] from the Rust types of a service's methods; the code
/// `#[service]` generates uses it.
pub struct SchemaBuilder {
    schema: ServiceSchema,
    tracer: Tracer,
}

impl SchemaBuilder {
    /// A schema of the service `name`, version `version`, with no methods yet.
    pub fn new(name: &str, version: &str) -> Self {
        Self {
            schema: ServiceSchema {
                name: name.to_owned(),
                version: version.to_owned(),
                methods: Vec::new(),
                types: BTreeMap::new(),
            },
            tracer: Tracer::default(),
        }
    }

    /// Adds a method taking the tuple `A` (its elements named by `args`) and returning `R`.
    pub fn method<A: DeserializeOwned, R: DeserializeOwned>(self, name: &str, args: &[&str], idempotent: bool) -> Self {
        self.add::<A, R>(name, args, idempotent, None)
    }

    /// Adds a method taking the tuple `A` and returning `Result<R, E>`.
    pub fn fallible_method<A: DeserializeOwned, R: DeserializeOwned, E: DeserializeOwned>(
        mut self,
        name: &str,
        args: &[&str],
        idempotent: bool,
    ) -> Self {
        let error = self.tracer.trace::<E>();
        self.add::<A, R>(name, args, idempotent, Some(error))
    }

    fn add<A: DeserializeOwned, R: DeserializeOwned>(
        mut self,
        name: &str,
        args: &[&str],
        idempotent: bool,
        error: Option<Shape>,
    ) -> Self {
        let shapes = match self.tracer.trace::<A>() {
            Shape::Tuple(items) if items.len() == args.len() => items,
            _ => vec![Shape::Any; args.len()],
        };
        let args = named_fields(args, shapes);
        let result = self.tracer.trace::<R>();
        self.schema.methods.push(MethodSchema {
            name: name.to_owned(),
            args,
            result,
            error,
            idempotent,
            streaming: None,
        });
        self
    }

    /// Marks the method added last as streaming `shape` (its streamed argument or result
    /// recorded by its items' type).
    pub fn streaming(mut self, shape: crate::stream::StreamShape) -> Self {
        if let Some(method) = self.schema.methods.last_mut() {
            method.streaming = Some(shape);
        }
        self
    }

    /// The schema, its methods sorted by name.
    pub fn build(mut self) -> ServiceSchema {
        self.schema.methods.sort_by(|a, b| a.name.cmp(&b.name));
        self.schema.types = self.tracer.types;
        self.schema
    }
}

/// What ends a pass early.
#[derive(Debug)]
enum Stop {
    /// A type was met inside itself.
    Recursion,
    /// The type's `Deserialize` refused what it was given.
    Refused(String),
    /// A struct's `Deserialize` required this field, which the map left out.
    Missing(&'static str),
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Recursion => f.write_str("recursion"),
            Self::Refused(why) => f.write_str(why),
            Self::Missing(field) => write!(f, "missing field `{field}`"),
        }
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::Refused(msg.to_string())
    }

    fn missing_field(field: &'static str) -> Self {
        Self::Missing(field)
    }
}

/// What the next pass does differently after a recursion.
enum Fix {
    /// The container at this site is empty.
    Empty(String),
    /// This enum tries its next variant first.
    Rotate(&'static str),
}

/// Where the tracer is, innermost last.
enum Frame {
    /// A named type being traced.
    Type(&'static str),
    /// An `Option`, sequence or map at this site.
    Container(String),
    /// An enum whose variant this pass chose.
    Choice(&'static str),
}

/// The tracer's state across passes and types.
#[derive(Default)]
struct Tracer {
    types: BTreeMap<String, TypeDef>,
    /// Containers that are empty in the next passes, with their shape.
    empty: HashMap<String, Shape>,
    /// Per enum, the variants (indices) not yet traced, the next one first.
    pending: HashMap<&'static str, VecDeque<usize>>,
    /// How many times each enum rotated without success (bounded by its variant count).
    rotations: HashMap<&'static str, usize>,
    /// Enums whose variant this pass chose from `pending`.
    chosen: Vec<&'static str>,
    frames: Vec<Frame>,
    /// The path of field names and positions from the traced type (`User.manager`).
    path: Vec<String>,
    fix: Option<Fix>,
    /// Structs met while tracing the current type.
    reached: Vec<&'static str>,
    /// Structs whose fields have been probed.
    probed: std::collections::HashSet<&'static str>,
    /// In a probe pass: the struct and the index of the field its map leaves out.
    omit: Option<(&'static str, usize)>,
    /// Whether the probe pass left the field out somewhere.
    omitted: bool,
}

impl Tracer {
    /// The shape of `T`, with the named types it uses added to `types`.
    fn trace<T: DeserializeOwned>(&mut self) -> Shape {
        self.reached.clear();
        let shape = self.trace_shape::<T>();
        self.probe_fields::<T>();
        self.pending.clear();
        self.rotations.clear();
        shape
    }

    /// Clears what one pass leaves behind.
    fn start_pass(&mut self) {
        self.chosen.clear();
        self.frames.clear();
        self.path.clear();
        self.fix = None;
    }

    /// Learns which fields of the structs reached from `T` may be absent: one probe pass per
    /// field that is not an `Option`, leaving it out.
    fn probe_fields<T: DeserializeOwned>(&mut self) {
        let reached = std::mem::take(&mut self.reached);
        for name in reached {
            if !self.probed.insert(name) {
                continue;
            }
            let required: Vec<usize> = match self.types.get(name) {
                Some(TypeDef::Struct(fields)) => (0..fields.len()).filter(|&i| !fields[i].optional).collect(),
                _ => continue,
            };
            for index in required {
                self.start_pass();
                self.omit = Some((name, index));
                self.omitted = false;
                let mut out = Shape::Any;
                let read = T::deserialize(Tracing {
                    tracer: self,
                    out: &mut out,
                });
                if read.is_ok() && self.omitted {
                    if let Some(TypeDef::Struct(fields)) = self.types.get_mut(name) {
                        fields[index].optional = true;
                    }
                }
            }
        }
        self.omit = None;
    }

    /// The shape of `T` from as many passes as its enums need.
    fn trace_shape<T: DeserializeOwned>(&mut self) -> Shape {
        let mut shape = Shape::Any;
        for _ in 0..MAX_PASSES {
            self.start_pass();
            let mut out = Shape::Any;
            let result = T::deserialize(Tracing {
                tracer: self,
                out: &mut out,
            });
            if shape == Shape::Any {
                shape = out;
            }
            match result {
                Ok(_) => {
                    for name in std::mem::take(&mut self.chosen) {
                        if let Some(pending) = self.pending.get_mut(name) {
                            pending.pop_front();
                        }
                    }
                    if self.pending.values().all(VecDeque::is_empty) {
                        break;
                    }
                }
                Err(_) => match self.fix.take() {
                    Some(Fix::Empty(_)) => {}
                    Some(Fix::Rotate(name)) => {
                        let rotations = self.rotations.entry(name).or_default();
                        *rotations += 1;
                        let pending = self.pending.entry(name).or_default();
                        match *rotations > pending.len() {
                            // Every variant left needs itself: they stay unknown.
                            true => pending.clear(),
                            false => pending.rotate_left(1.min(pending.len())),
                        }
                    }
                    // Refused: what was learned stays, the rest is `Any`.
                    None => break,
                },
            }
        }
        shape
    }

    fn site(&self) -> String {
        self.path.join(".")
    }

    /// Whether the pass is inside the type `name` (or so deep that it is taken to be: a
    /// recursion through types of different names still ends).
    fn inside(&self, name: &str) -> bool {
        self.frames.len() > MAX_DEPTH || self.frames.iter().any(|f| matches!(f, Frame::Type(n) if *n == name))
    }

    /// Ends the pass at a type met inside itself, choosing what the next pass changes.
    fn recursion(&mut self) -> Stop {
        self.fix = self.frames.iter().rev().find_map(|frame| match frame {
            Frame::Container(site) => Some(Fix::Empty(site.clone())),
            Frame::Choice(name) => Some(Fix::Rotate(name)),
            Frame::Type(_) => None,
        });
        Stop::Recursion
    }

    /// Runs `trace` inside the named type `name`.
    fn within<R>(&mut self, name: &'static str, trace: impl FnOnce(&mut Self) -> R) -> R {
        self.frames.push(Frame::Type(name));
        let result = trace(self);
        self.frames.pop();
        result
    }

    /// Runs `trace` with `step` added to the path.
    fn at<R>(&mut self, step: impl Into<String>, trace: impl FnOnce(&mut Self) -> R) -> R {
        self.path.push(step.into());
        let result = trace(self);
        self.path.pop();
        result
    }

    /// Records `def` for `name`, keeping what an earlier pass learned where this one did not.
    fn define(&mut self, name: &str, def: TypeDef) {
        match self.types.get_mut(name) {
            None => {
                self.types.insert(name.to_owned(), def);
            }
            Some(known) => merge_def(known, def),
        }
    }

    /// The variant an enum takes in this pass, or `None` when it cannot take one.
    fn choose(&mut self, name: &'static str, variants: &'static [&'static str]) -> Option<usize> {
        if self.inside(name) {
            // Inside itself: a variant already traced that does not hold the enum again.
            return match self.types.get(name) {
                Some(TypeDef::Enum(known)) => known
                    .iter()
                    .position(|v| v.data != VariantData::Unknown && !v.data.mentions(name)),
                _ => None,
            };
        }
        let pending = self.pending.entry(name).or_insert_with(|| match self.types.get(name) {
            Some(TypeDef::Enum(known)) => (0..known.len())
                .filter(|i| known[*i].data == VariantData::Unknown)
                .collect(),
            _ => (0..variants.len()).collect(),
        });
        match pending.front() {
            Some(index) => {
                self.chosen.push(name);
                Some(*index)
            }
            None => (!variants.is_empty()).then_some(0),
        }
    }
}

/// Keeps the more specific of two shapes (an earlier pass may have learned what this one
/// left empty).
fn merge(known: &mut Shape, new: Shape) {
    match (known, new) {
        (_, Shape::Any) => {}
        (known @ Shape::Any, new) => *known = new,
        (Shape::Option(a), Shape::Option(b)) | (Shape::Seq(a), Shape::Seq(b)) => merge(a, *b),
        (Shape::Map { key, value }, Shape::Map { key: k, value: v }) => {
            merge(key, *k);
            merge(value, *v);
        }
        (Shape::Tuple(a), Shape::Tuple(b)) if a.len() == b.len() => a.iter_mut().zip(b).for_each(|(a, b)| merge(a, b)),
        _ => {}
    }
}

fn merge_fields(known: &mut [Field], new: Vec<Field>) {
    for (k, n) in known.iter_mut().zip(new) {
        merge(&mut k.shape, n.shape);
    }
}

fn merge_def(known: &mut TypeDef, new: TypeDef) {
    match (known, new) {
        (TypeDef::Struct(a), TypeDef::Struct(b)) => merge_fields(a, b),
        (TypeDef::TupleStruct(a), TypeDef::TupleStruct(b)) => a.iter_mut().zip(b).for_each(|(a, b)| merge(a, b)),
        (TypeDef::Newtype(a), TypeDef::Newtype(b)) => merge(a, b),
        (TypeDef::Enum(a), TypeDef::Enum(b)) => {
            for (k, n) in a.iter_mut().zip(b) {
                match (&mut k.data, n.data) {
                    (_, VariantData::Unknown) => {}
                    (known @ VariantData::Unknown, new) => *known = new,
                    (VariantData::Newtype(a), VariantData::Newtype(b)) => merge(a, b),
                    (VariantData::Tuple(a), VariantData::Tuple(b)) => {
                        a.iter_mut().zip(b).for_each(|(a, b)| merge(a, b))
                    }
                    (VariantData::Struct(a), VariantData::Struct(b)) => merge_fields(a, b),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// Fields (or arguments) from their names and shapes.
fn named_fields(names: &[&str], shapes: Vec<Shape>) -> Vec<Field> {
    names
        .iter()
        .zip(shapes)
        .map(|(name, shape)| Field {
            name: (*name).to_owned(),
            optional: matches!(shape, Shape::Option(_)),
            shape,
        })
        .collect()
}

/// The tracing deserializer for one value: what it learns goes to `out`.
struct Tracing<'a> {
    tracer: &'a mut Tracer,
    out: &'a mut Shape,
}

impl<'a> Tracing<'a> {
    fn primitive(self, shape: Shape) {
        *self.out = shape;
    }
}

impl Tracer {
    /// Enters an `Option`, sequence or map at the current site: the site, or the shape to
    /// give when it is empty in this pass (a recursion inside it in an earlier pass).
    fn enter_container(&mut self) -> Result<String, Shape> {
        let site = self.site();
        if let Some(shape) = self.empty.get(&site) {
            return Err(shape.clone());
        }
        self.frames.push(Frame::Container(site.clone()));
        Ok(site)
    }

    /// Leaves the container at `site`, whose shape is `shape`; if a recursion inside it ended
    /// the pass, it is empty in the next ones.
    fn leave_container(&mut self, site: String, shape: &Shape) {
        self.frames.pop();
        if matches!(&self.fix, Some(Fix::Empty(s)) if *s == site) {
            self.empty.insert(site, shape.clone());
        }
    }

    /// Records the data of variant `index` of the enum `name`.
    fn define_variant(&mut self, name: &str, index: usize, data: VariantData) {
        if let Some(TypeDef::Enum(variants)) = self.types.get(name) {
            let mut all: Vec<Variant> = variants
                .iter()
                .map(|v| Variant {
                    name: v.name.clone(),
                    data: VariantData::Unknown,
                })
                .collect();
            if let Some(v) = all.get_mut(index) {
                v.data = data;
            }
            self.define(name, TypeDef::Enum(all));
        }
    }
}

impl<'de> Deserializer<'de> for Tracing<'_> {
    type Error = Stop;

    fn is_human_readable(&self) -> bool {
        // Types with two forms are described by the one JSON shows (an address as a string).
        true
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.primitive(Shape::Any);
        visitor.visit_unit()
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.primitive(Shape::Bool);
        visitor.visit_bool(false)
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.primitive(Shape::I8);
        visitor.visit_i8(0)
    }

    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.primitive(Shape::I16);
        visitor.visit_i16(0)
    }

    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.primitive(Shape::I32);
        visitor.visit_i32(0)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.primitive(Shape::I64);
        visitor.visit_i64(0)
    }

    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.primitive(Shape::I128);
        visitor.visit_i128(0)
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.primitive(Shape::U8);
        visitor.visit_u8(0)
    }

    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.primitive(Shape::U16);
        visitor.visit_u16(0)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.primitive(Shape::U32);
        visitor.visit_u32(0)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.primitive(Shape::U64);
        visitor.visit_u64(0)
    }

    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.primitive(Shape::U128);
        visitor.visit_u128(0)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.primitive(Shape::F32);
        visitor.visit_f32(0.0)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.primitive(Shape::F64);
        visitor.visit_f64(0.0)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.primitive(Shape::Char);
        visitor.visit_char('a')
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.primitive(Shape::String);
        visitor.visit_borrowed_str("")
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.primitive(Shape::Bytes);
        visitor.visit_borrowed_bytes(&[])
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        let site = match self.tracer.enter_container() {
            Ok(site) => site,
            Err(shape) => {
                *self.out = shape;
                return visitor.visit_none();
            }
        };
        let mut inner = Shape::Any;
        let result = visitor.visit_some(Tracing {
            tracer: self.tracer,
            out: &mut inner,
        });
        *self.out = Shape::Option(Box::new(inner));
        self.tracer.leave_container(site, self.out);
        result
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.primitive(Shape::Unit);
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, Stop> {
        self.tracer.define(name, TypeDef::UnitStruct);
        self.primitive(Shape::Named(name.to_owned()));
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, Stop> {
        *self.out = Shape::Named(name.to_owned());
        if self.tracer.inside(name) {
            return Err(self.tracer.recursion());
        }
        let mut inner = Shape::Any;
        let result = self.tracer.within(name, |tracer| {
            visitor.visit_newtype_struct(Tracing {
                tracer,
                out: &mut inner,
            })
        });
        self.tracer.define(name, TypeDef::Newtype(inner));
        result
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        let site = match self.tracer.enter_container() {
            Ok(site) => site,
            Err(shape) => {
                *self.out = shape;
                return visitor.visit_seq(Items {
                    tracer: self.tracer,
                    shapes: &mut [],
                    next: 0,
                    step: None,
                });
            }
        };
        let mut element = [Shape::Any];
        let result = visitor.visit_seq(Items {
            tracer: self.tracer,
            shapes: &mut element,
            next: 0,
            step: Some("[]"),
        });
        let [element] = element;
        *self.out = Shape::Seq(Box::new(element));
        self.tracer.leave_container(site, self.out);
        result
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Stop> {
        let mut items = vec![Shape::Any; len];
        let result = visitor.visit_seq(Items {
            tracer: self.tracer,
            shapes: &mut items,
            next: 0,
            step: None,
        });
        *self.out = Shape::Tuple(items);
        result
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        *self.out = Shape::Named(name.to_owned());
        if self.tracer.inside(name) {
            return Err(self.tracer.recursion());
        }
        let mut items = vec![Shape::Any; len];
        let result = self.tracer.within(name, |tracer| {
            visitor.visit_seq(Items {
                tracer,
                shapes: &mut items,
                next: 0,
                step: None,
            })
        });
        self.tracer.define(name, TypeDef::TupleStruct(items));
        result
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        let site = match self.tracer.enter_container() {
            Ok(site) => site,
            Err(shape) => {
                *self.out = shape;
                return visitor.visit_map(Entries {
                    tracer: self.tracer,
                    shapes: &mut [],
                    next: 0,
                });
            }
        };
        let mut entry = [Shape::Any, Shape::Any];
        let result = visitor.visit_map(Entries {
            tracer: self.tracer,
            shapes: &mut entry,
            next: 0,
        });
        let [key, value] = entry;
        *self.out = Shape::Map {
            key: Box::new(key),
            value: Box::new(value),
        };
        self.tracer.leave_container(site, self.out);
        result
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        *self.out = Shape::Named(name.to_owned());
        if self.tracer.inside(name) {
            return Err(self.tracer.recursion());
        }
        if !self.tracer.reached.contains(&name) {
            self.tracer.reached.push(name);
        }
        let mut shapes = vec![Shape::Any; fields.len()];
        let result = self.tracer.within(name, |tracer| {
            visitor.visit_map(Fields {
                tracer,
                owner: Some(name),
                fields,
                shapes: &mut shapes,
                next: 0,
            })
        });
        let fields = named_fields(fields, shapes);
        self.tracer.define(name, TypeDef::Struct(fields));
        result
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        *self.out = Shape::Named(name.to_owned());
        if !self.tracer.types.contains_key(name) {
            let unknown = variants
                .iter()
                .map(|v| Variant {
                    name: (*v).to_owned(),
                    data: VariantData::Unknown,
                })
                .collect();
            self.tracer.types.insert(name.to_owned(), TypeDef::Enum(unknown));
        }
        let reentered = self.tracer.inside(name);
        let Some(index) = self.tracer.choose(name, variants) else {
            return Err(self.tracer.recursion());
        };
        if !reentered {
            self.tracer.frames.push(Frame::Choice(name));
        }
        let variant = variants[index];
        let result = self.tracer.within(name, |tracer| {
            tracer.at(variant, |tracer| {
                visitor.visit_enum(Chosen {
                    tracer,
                    name,
                    index,
                    variant,
                })
            })
        });
        if !reentered {
            self.tracer.frames.pop();
        }
        result
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.deserialize_any(visitor)
    }
}

/// The elements of a tuple (one slot each) or of a sequence (one element, or none).
struct Items<'a> {
    tracer: &'a mut Tracer,
    shapes: &'a mut [Shape],
    next: usize,
    /// The path step of every element (`[]` for a sequence), else its position.
    step: Option<&'static str>,
}

impl<'de> de::SeqAccess<'de> for Items<'_> {
    type Error = Stop;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Stop> {
        let index = self.next;
        let Some(out) = self.shapes.get_mut(index) else {
            return Ok(None);
        };
        self.next += 1;
        let step = self.step.map_or_else(|| index.to_string(), str::to_owned);
        self.tracer
            .at(step, |tracer| seed.deserialize(Tracing { tracer, out }))
            .map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.shapes.len() - self.next)
    }
}

/// The entries of a map: one (a key and a value) or none.
struct Entries<'a> {
    tracer: &'a mut Tracer,
    /// The key's and the value's slots, or nothing.
    shapes: &'a mut [Shape],
    next: usize,
}

impl<'de> de::MapAccess<'de> for Entries<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Stop> {
        if self.next > 0 || self.shapes.is_empty() {
            return Ok(None);
        }
        self.next = 1;
        let (tracer, out) = (&mut *self.tracer, &mut self.shapes[0]);
        tracer
            .at("{key}", |tracer| seed.deserialize(Tracing { tracer, out }))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        let (tracer, out) = (&mut *self.tracer, &mut self.shapes[1]);
        tracer.at("{}", |tracer| seed.deserialize(Tracing { tracer, out }))
    }
}

/// A struct's fields, each once, in order.
struct Fields<'a> {
    tracer: &'a mut Tracer,
    /// The struct whose fields these are (`None`: a struct variant's).
    owner: Option<&'static str>,
    fields: &'static [&'static str],
    shapes: &'a mut [Shape],
    next: usize,
}

impl<'de> de::MapAccess<'de> for Fields<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Stop> {
        if let (Some(owner), Some((name, index))) = (self.owner, self.tracer.omit) {
            if owner == name && index == self.next {
                // A probe pass: this field is left out.
                self.tracer.omitted = true;
                self.next += 1;
            }
        }
        match self.fields.get(self.next) {
            Some(field) => seed
                .deserialize(de::value::BorrowedStrDeserializer::new(field))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        let index = self.next;
        self.next += 1;
        let (tracer, out) = (&mut *self.tracer, &mut self.shapes[index]);
        tracer.at(self.fields[index], |tracer| seed.deserialize(Tracing { tracer, out }))
    }
}

/// The variant a pass chose for an enum.
struct Chosen<'a> {
    tracer: &'a mut Tracer,
    name: &'static str,
    index: usize,
    variant: &'static str,
}

impl<'de, 'a> de::EnumAccess<'de> for Chosen<'a> {
    type Error = Stop;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), Stop> {
        let value = seed.deserialize(de::value::BorrowedStrDeserializer::new(self.variant))?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for Chosen<'_> {
    type Error = Stop;

    fn unit_variant(self) -> Result<(), Stop> {
        self.tracer.define_variant(self.name, self.index, VariantData::Unit);
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Stop> {
        let mut shape = Shape::Any;
        let value = seed.deserialize(Tracing {
            tracer: self.tracer,
            out: &mut shape,
        })?;
        self.tracer
            .define_variant(self.name, self.index, VariantData::Newtype(shape));
        Ok(value)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Stop> {
        let mut shapes = vec![Shape::Any; len];
        let value = visitor.visit_seq(Items {
            tracer: self.tracer,
            shapes: &mut shapes,
            next: 0,
            step: None,
        })?;
        self.tracer
            .define_variant(self.name, self.index, VariantData::Tuple(shapes));
        Ok(value)
    }

    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], visitor: V) -> Result<V::Value, Stop> {
        let mut shapes = vec![Shape::Any; fields.len()];
        let value = visitor.visit_map(Fields {
            tracer: self.tracer,
            owner: None,
            fields,
            shapes: &mut shapes,
            next: 0,
        })?;
        let fields = named_fields(fields, shapes);
        self.tracer
            .define_variant(self.name, self.index, VariantData::Struct(fields));
        Ok(value)
    }
}

#[cfg(test)]
mod tests;
