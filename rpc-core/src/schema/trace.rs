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
//!
//! Files: this one (the passes and what they learn), `deserializer` (the tracing
//! deserializer that answers a type's `Deserialize`), `merge` (how the passes' findings
//! combine).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

use serde::de::{self, DeserializeOwned};

use super::shape::{MethodSchema, ServiceSchema, Shape, TypeDef, VariantData};

mod deserializer;
mod merge;

use deserializer::Tracing;
use merge::{merge_def, named_fields};

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

#[cfg(test)]
mod tests;
