//! Comparing two versions of a service: which differences a reader of one survives in
//! messages written by the other.
//!
//! A call's arguments are written by the consumer and read by the provider; its result and
//! error are written by the provider and read by the consumer. [`compare`] walks both
//! directions of every method the two schemas share, type by type, and lists each difference
//! with whether it is safe under the default serializer (msgpack, and JSON alike):
//!
//! * safe: a field the reader does not know (skipped), a field the writer does not send that
//!   the reader can do without (an `Option`, a serde default), an argument added at the end as
//!   an `Option`, a value read as an `Option` of it, an integer read as a wider one, a method
//!   only one side has (routing sends it only where it exists), a variant only the writer
//!   knows (a value holding it fails that call with an error naming it; others read);
//! * not safe: a type changed, a field or an argument the reader requires and the writer does
//!   not send, an `Option` written where the reader requires a value.
//!
//! Fixed-schema serializers (bincode, postcard) survive no difference at all: with them, two
//! versions work together only when their fingerprints are equal.

use std::collections::HashSet;
use std::fmt;

use super::shape::{Field, MethodSchema, ServiceSchema, Shape, TypeDef, VariantData};

/// One difference between two versions of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Where: the method, and the path into its arguments, result or error.
    pub at: String,
    /// What differs.
    pub what: String,
    /// Whether calls survive it (see the module docs).
    pub safe: bool,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.safe { "compatible" } else { "INCOMPATIBLE" };
        write!(f, "{verdict}: {}: {}", self.at, self.what)
    }
}

/// The differences between a consumer's schema and a provider's, for every method (see the
/// module docs); empty when the two are the same.
pub fn compare(consumer: &ServiceSchema, provider: &ServiceSchema) -> Vec<Difference> {
    let mut out = Vec::new();
    for method in &consumer.methods {
        match provider.method(&method.name) {
            Some(theirs) => out.extend(compare_method(consumer, method, provider, theirs)),
            None => out.push(Difference {
                at: method.name.clone(),
                what: "only the consumer has this method; calls go to providers that have it".into(),
                safe: true,
            }),
        }
    }
    for method in &provider.methods {
        if consumer.method(&method.name).is_none() {
            out.push(Difference {
                at: method.name.clone(),
                what: "only the provider has this method".into(),
                safe: true,
            });
        }
    }
    out
}

/// The methods both schemas have whose calls do not survive their differences, each with
/// the differences that break it.
pub fn incompatible_methods(consumer: &ServiceSchema, provider: &ServiceSchema) -> Vec<(String, Vec<Difference>)> {
    consumer
        .methods
        .iter()
        .filter_map(|ours| {
            let theirs = provider.method(&ours.name)?;
            let broken: Vec<Difference> = compare_method(consumer, ours, provider, theirs)
                .into_iter()
                .filter(|d| !d.safe)
                .collect();
            (!broken.is_empty()).then(|| (ours.name.clone(), broken))
        })
        .collect()
}

/// The differences of one method both schemas have.
pub fn compare_method(
    consumer: &ServiceSchema,
    ours: &MethodSchema,
    provider: &ServiceSchema,
    theirs: &MethodSchema,
) -> Vec<Difference> {
    let mut walk = Walk {
        out: Vec::new(),
        seen: HashSet::new(),
    };
    // Arguments: the consumer writes, the provider reads.
    let args = Side {
        writer: consumer,
        reader: provider,
    };
    walk.arguments(&args, &ours.name, &ours.args, &theirs.args);
    // Result and error: the provider writes, the consumer reads.
    let back = Side {
        writer: provider,
        reader: consumer,
    };
    walk.shape(&back, &format!("{} result", ours.name), &theirs.result, &ours.result);
    match (&theirs.error, &ours.error) {
        (Some(w), Some(r)) => walk.shape(&back, &format!("{} error", ours.name), w, r),
        // A consumer that expects a typed error from a provider that never sends one is fine.
        (None, _) => {}
        (Some(w), None) => walk.differ(
            format!("{} error", ours.name),
            format!("the provider may answer with a typed error ({w}) the consumer does not expect"),
            false,
        ),
    }
    walk.out
}

/// Who writes and who reads.
struct Side<'s> {
    writer: &'s ServiceSchema,
    reader: &'s ServiceSchema,
}

struct Walk {
    out: Vec<Difference>,
    /// Pairs of named types already compared (recursive types end here).
    seen: HashSet<(String, String)>,
}

impl Walk {
    fn differ(&mut self, at: String, what: String, safe: bool) {
        self.out.push(Difference { at, what, safe });
    }

    /// A method's arguments: positional, the extra ones skipped, the missing ones `None`.
    fn arguments(&mut self, side: &Side<'_>, method: &str, written: &[Field], read: &[Field]) {
        for (i, r) in read.iter().enumerate() {
            let at = format!("{method}({})", r.name);
            match written.get(i) {
                Some(w) => self.shape(side, &at, &w.shape, &r.shape),
                None if r.optional => self.differ(at, "argument added; the provider gets None".into(), true),
                None => self.differ(at, "argument required by the provider, not sent".into(), false),
            }
        }
        for w in written.iter().skip(read.len()) {
            let at = format!("{method}({})", w.name);
            self.differ(at, "argument the provider does not take; ignored".into(), true);
        }
    }

    fn shape(&mut self, side: &Side<'_>, at: &str, written: &Shape, read: &Shape) {
        match (written, read) {
            (w, r) if w == r && !has_named(w) => {}
            (Shape::Any, _) | (_, Shape::Any) => {}
            (Shape::Option(w), Shape::Option(r)) | (Shape::Seq(w), Shape::Seq(r)) => self.shape(side, at, w, r),
            (w, Shape::Option(r)) => self.shape(side, at, w, r),
            (Shape::Option(_), r) => self.differ(
                at.to_owned(),
                format!("written as {written}, read as {r}: a None fails"),
                false,
            ),
            (Shape::Bytes, Shape::Seq(r)) if **r == Shape::U8 => {}
            (Shape::Map { key: wk, value: wv }, Shape::Map { key: rk, value: rv }) => {
                self.shape(side, &format!("{at} key"), wk, rk);
                self.shape(side, &format!("{at} value"), wv, rv);
            }
            (Shape::Tuple(w), Shape::Tuple(r)) if w.len() == r.len() => {
                for (i, (w, r)) in w.iter().zip(r).enumerate() {
                    self.shape(side, &format!("{at}.{i}"), w, r);
                }
            }
            (Shape::Named(w), Shape::Named(r)) => self.named(side, at, w, r),
            (w, r) if widens(w, r) => {}
            (w, r) => self.differ(at.to_owned(), format!("written as {w}, read as {r}"), false),
        }
    }

    fn named(&mut self, side: &Side<'_>, at: &str, written: &str, read: &str) {
        if !self.seen.insert((written.to_owned(), read.to_owned())) {
            return;
        }
        let (Some(w), Some(r)) = (side.writer.types.get(written), side.reader.types.get(read)) else {
            return;
        };
        match (w, r) {
            (TypeDef::Struct(w), TypeDef::Struct(r)) => self.fields(side, at, read, w, r),
            (TypeDef::Enum(w), TypeDef::Enum(r)) => {
                for variant in w {
                    let at = format!("{at}::{}", variant.name);
                    match r.iter().find(|v| v.name == variant.name) {
                        Some(known) => self.variant(side, &at, &variant.data, &known.data),
                        None => self.differ(
                            at,
                            format!("variant unknown to the reader of `{read}`: a value holding it fails that call"),
                            true,
                        ),
                    }
                }
            }
            (TypeDef::Newtype(w), TypeDef::Newtype(r)) => self.shape(side, at, w, r),
            (TypeDef::TupleStruct(w), TypeDef::TupleStruct(r)) if w.len() == r.len() => {
                for (i, (w, r)) in w.iter().zip(r).enumerate() {
                    self.shape(side, &format!("{at}.{i}"), w, r);
                }
            }
            (TypeDef::UnitStruct, TypeDef::UnitStruct) => {}
            _ => self.differ(
                at.to_owned(),
                format!("`{written}` and `{read}` are different kinds of type"),
                false,
            ),
        }
    }

    fn variant(&mut self, side: &Side<'_>, at: &str, written: &VariantData, read: &VariantData) {
        match (written, read) {
            (VariantData::Unknown, _) | (_, VariantData::Unknown) | (VariantData::Unit, VariantData::Unit) => {}
            (VariantData::Newtype(w), VariantData::Newtype(r)) => self.shape(side, at, w, r),
            (VariantData::Tuple(w), VariantData::Tuple(r)) if w.len() == r.len() => {
                for (i, (w, r)) in w.iter().zip(r).enumerate() {
                    self.shape(side, &format!("{at}.{i}"), w, r);
                }
            }
            (VariantData::Struct(w), VariantData::Struct(r)) => self.fields(side, at, "variant", w, r),
            _ => self.differ(at.to_owned(), "the variant holds different data".into(), false),
        }
    }

    /// A struct's (or struct variant's) fields, matched by name.
    fn fields(&mut self, side: &Side<'_>, at: &str, owner: &str, written: &[Field], read: &[Field]) {
        for r in read {
            let at = format!("{at}.{}", r.name);
            match written.iter().find(|w| w.name == r.name) {
                Some(w) => self.shape(side, &at, &w.shape, &r.shape),
                None if r.optional => self.differ(
                    at,
                    format!("field of `{owner}` not sent; the reader takes its default"),
                    true,
                ),
                None => self.differ(
                    at,
                    format!("field of `{owner}` required by the reader, not sent"),
                    false,
                ),
            }
        }
        for w in written {
            if !read.iter().any(|r| r.name == w.name) {
                let at = format!("{at}.{}", w.name);
                self.differ(
                    at,
                    format!("field the reader of `{owner}` does not know; skipped"),
                    true,
                );
            }
        }
    }
}

/// Whether the shape names a type anywhere (then equal shapes may still differ in it).
fn has_named(shape: &Shape) -> bool {
    match shape {
        Shape::Named(_) => true,
        Shape::Option(s) | Shape::Seq(s) => has_named(s),
        Shape::Tuple(items) => items.iter().any(has_named),
        Shape::Map { key, value } => has_named(key) || has_named(value),
        _ => false,
    }
}

/// Whether every value of `written` reads as `read`: a number into a wider one.
fn widens(written: &Shape, read: &Shape) -> bool {
    fn rank(shape: &Shape) -> Option<(bool, u8)> {
        Some(match shape {
            Shape::U8 => (false, 1),
            Shape::U16 => (false, 2),
            Shape::U32 => (false, 4),
            Shape::U64 => (false, 8),
            Shape::U128 => (false, 16),
            Shape::I8 => (true, 1),
            Shape::I16 => (true, 2),
            Shape::I32 => (true, 4),
            Shape::I64 => (true, 8),
            Shape::I128 => (true, 16),
            _ => return None,
        })
    }
    match (written, read) {
        (Shape::F32, Shape::F64) => true,
        _ => match (rank(written), rank(read)) {
            (Some((w_signed, w)), Some((r_signed, r))) => match (w_signed, r_signed) {
                (false, true) => w < r,
                (true, false) => false,
                _ => w <= r,
            },
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests;
