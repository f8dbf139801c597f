//! The guard that keeps a fixed-schema serializer from giving a wrong value: each side's
//! fingerprint of every method's types, compared on every call that such a serializer encodes.
//!
//! A caller that encodes with bincode or postcard and knows its schema (generated clients
//! declare it) sends its fingerprint of the method in the call's metadata
//! ([`SCHEMA_METADATA`]). The provider compares it with its own before the call is admitted
//! (after authentication: only callers it serves learn its schema) and refuses a call whose
//! fingerprint differs with [`SchemaMismatch`]: both fingerprints and its schema of the method.
//! The caller then names the first difference between that schema and its own. Calls encoded
//! with the default serializer (or JSON) carry no fingerprint: they read by name and tolerate
//! the additive changes the schema comparison allows. A caller that sends no fingerprint (an
//! earlier build, a hand-made request) is served as before.

use std::collections::HashMap;

use bytes::Bytes;

use super::compat::compare_method;
use super::shape::ServiceSchema;
use crate::error::SchemaMismatch;

/// The metadata entry that carries the caller's fingerprint of the method's types.
pub const SCHEMA_METADATA: &str = "rpc-schema";

/// One side's fingerprint and schema of each method of a service.
#[derive(Debug)]
pub(crate) struct MethodPrints {
    service: String,
    by_method: HashMap<String, MethodPrint>,
}

#[derive(Debug)]
struct MethodPrint {
    fingerprint: String,
    /// The same, as the metadata value a call carries (shared, not copied, per call).
    wire: Bytes,
    excerpt: ServiceSchema,
}

impl MethodPrints {
    /// The prints of every method of `schema`, the schema of the service `service_key`.
    pub(crate) fn of(service_key: &str, schema: &ServiceSchema) -> Self {
        let by_method = schema
            .methods
            .iter()
            .filter_map(|m| {
                let fingerprint = schema.method_fingerprint(&m.name)?;
                let print = MethodPrint {
                    wire: Bytes::from(fingerprint.clone()),
                    fingerprint,
                    excerpt: schema.method_excerpt(&m.name)?,
                };
                Some((m.name.clone(), print))
            })
            .collect();
        Self {
            service: service_key.to_owned(),
            by_method,
        }
    }

    /// This side's fingerprint of `method`'s types.
    #[cfg(test)]
    fn fingerprint(&self, method: &str) -> Option<&str> {
        self.by_method.get(method).map(|p| p.fingerprint.as_str())
    }

    /// This side's fingerprint of `method`'s types as a call's metadata value.
    pub(crate) fn wire_fingerprint(&self, method: &str) -> Option<Bytes> {
        self.by_method.get(method).map(|p| p.wire.clone())
    }

    /// On the provider: whether a call of `method` whose caller's fingerprint is `caller` may
    /// run; the mismatch otherwise.
    pub(crate) fn check(&self, method: &str, caller: &str) -> Result<(), Box<SchemaMismatch>> {
        let Some(ours) = self.by_method.get(method) else {
            return Ok(());
        };
        if ours.fingerprint == caller {
            return Ok(());
        }
        Err(Box::new(SchemaMismatch {
            service: self.service.clone(),
            method: method.to_owned(),
            caller: caller.to_owned(),
            provider: ours.fingerprint.clone(),
            difference: None,
            provider_schema: serde_json::to_value(&ours.excerpt).unwrap_or_default(),
        }))
    }

    /// On the caller: names the first difference between its types and the provider's (a
    /// difference that breaks the default serializer first, as it is the likeliest cause).
    pub(crate) fn explain(&self, mismatch: &mut SchemaMismatch) {
        let Some(ours) = self.by_method.get(&mismatch.method) else {
            return;
        };
        let Ok(theirs) = serde_json::from_value::<ServiceSchema>(mismatch.provider_schema.clone()) else {
            return;
        };
        let (Some(our_method), Some(their_method)) =
            (ours.excerpt.method(&mismatch.method), theirs.method(&mismatch.method))
        else {
            return;
        };
        let differences = compare_method(&ours.excerpt, our_method, &theirs, their_method);
        let first = differences.iter().find(|d| !d.safe).or_else(|| differences.first());
        mismatch.difference = Some(match first {
            Some(d) => format!("{}: {}", d.at, d.what),
            None => "the types are named or ordered differently".to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Field, MethodSchema, Shape, TypeDef};

    fn service(fields: Vec<(&str, Shape)>) -> ServiceSchema {
        let fields = fields
            .into_iter()
            .map(|(name, shape)| Field {
                name: name.into(),
                shape,
                optional: false,
            })
            .collect();
        ServiceSchema {
            name: "Users".into(),
            version: "1.0".into(),
            methods: vec![MethodSchema {
                name: "put".into(),
                args: vec![Field {
                    name: "user".into(),
                    shape: Shape::Named("User".into()),
                    optional: false,
                }],
                result: Shape::U32,
                error: None,
                idempotent: false,
                streaming: None,
            }],
            types: [("User".to_owned(), TypeDef::Struct(fields))].into_iter().collect(),
        }
    }

    #[test]
    fn a_different_caller_is_refused_with_what_the_caller_needs_to_explain_it() {
        let provider = MethodPrints::of("Users:1.0", &service(vec![("id", Shape::U64)]));
        let caller = MethodPrints::of(
            "Users:1.0",
            &service(vec![
                ("id", Shape::U64),
                ("email", Shape::Option(Box::new(Shape::String))),
            ]),
        );
        let same = provider.fingerprint("put").unwrap();
        assert!(provider.check("put", same).is_ok());
        assert!(
            provider.check("other", "whatever").is_ok(),
            "a method it lacks is routing's"
        );
        let mut mismatch = provider.check("put", caller.fingerprint("put").unwrap()).unwrap_err();
        assert_eq!(mismatch.provider, same);
        caller.explain(&mut mismatch);
        let text = mismatch.to_string();
        assert!(
            text.contains(same) && text.contains(caller.fingerprint("put").unwrap()),
            "{text}"
        );
        assert!(text.contains("email"), "the first difference is named: {text}");
        // Through the wire and back.
        let error = crate::reply::Reply::from_error(&crate::RpcError::SchemaMismatch(mismatch.clone()))
            .into_error("Users:1.0", "put");
        assert!(matches!(error, crate::RpcError::SchemaMismatch(m) if *m == *mismatch));
    }
}
