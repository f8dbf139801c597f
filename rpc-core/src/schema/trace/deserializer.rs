//! The tracing deserializer: answers the calls of a type's `Deserialize` with placeholder
//! values and writes down what it was asked (see the module docs of `trace`).

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};

use super::merge::named_fields;
use super::{Fix, Frame, Stop, Tracer};
use crate::schema::shape::{Shape, TypeDef, Variant, VariantData};

/// The tracing deserializer for one value: what it learns goes to `out`.
pub(super) struct Tracing<'a> {
    pub(super) tracer: &'a mut Tracer,
    pub(super) out: &'a mut Shape,
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
