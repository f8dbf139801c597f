//! How the passes' findings combine: a later pass keeps what an earlier one learned that it
//! left empty (an `Option` it found `None`, a sequence it found empty).

use crate::schema::shape::{Field, Shape, TypeDef, VariantData};

/// Keeps the more specific of two shapes (an earlier pass may have learned what this one
/// left empty).
pub(super) fn merge(known: &mut Shape, new: Shape) {
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

pub(super) fn merge_fields(known: &mut [Field], new: Vec<Field>) {
    for (k, n) in known.iter_mut().zip(new) {
        merge(&mut k.shape, n.shape);
    }
}

pub(super) fn merge_def(known: &mut TypeDef, new: TypeDef) {
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
pub(super) fn named_fields(names: &[&str], shapes: Vec<Shape>) -> Vec<Field> {
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
