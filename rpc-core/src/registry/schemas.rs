//! The schemas a service's instances name, fetched once per fingerprint.
//!
//! Each instance of a service may name the fingerprint of the schema it serves. Next to its
//! instance watch, a discovery cache entry runs [`keep_schemas`]: whenever the instance list
//! changes, it fetches the schemas of fingerprints it does not know yet (one read each, ever),
//! forgets those no instance names any more, and publishes the map with the list it was
//! brought up to date for, so a first lookup can wait until the schemas of its first list are
//! known. A read that fails is retried with backoff; a text that is not a schema (too large, not
//! JSON, a newer format) or not the schema its fingerprint names (forged or corrupt: see
//! [`read_published_schema`]) is skipped with one warning, and its instances count as having no
//! schema: every method.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, warn};

use super::{Registry, ServiceInstance, MAX_SCHEMA_TEXT};
use crate::backoff::Backoff;
use crate::schema::ServiceSchema;

/// A service's schemas by fingerprint.
pub type SchemaMap = BTreeMap<String, Arc<ServiceSchema>>;

/// What an entry knows of its service's schemas.
#[derive(Clone, Default)]
pub(super) struct KnownSchemas {
    /// The schemas fetched, by fingerprint.
    pub(super) map: Arc<SchemaMap>,
    /// The instance list the map was last brought up to date for.
    pub(super) list: Option<Arc<[ServiceInstance]>>,
}

/// Why a schema text read from the registry was not taken.
#[derive(Debug, thiserror::Error)]
pub enum PublishedSchemaError {
    /// Longer than any schema the framework writes.
    #[error("{0} bytes exceed the limit of {MAX_SCHEMA_TEXT}")]
    TooLarge(usize),
    /// Not a service schema (not JSON, or a newer format).
    #[error("not a service schema: {0}")]
    NotASchema(#[source] serde_json::Error),
    /// A schema, but not the one its key names: written over the key by someone else (or
    /// corrupted). Trusting it could take methods away from every consumer.
    #[error(
        "the text under fingerprint {stored_under} is a schema whose fingerprint is {hashes_to}: forged or corrupt"
    )]
    Forged {
        /// The fingerprint the key names.
        stored_under: String,
        /// The fingerprint of the text found there.
        hashes_to: String,
    },
}

/// The schema published under `fingerprint`, from its stored `text`, when the text is a
/// schema and is the one the fingerprint names.
pub fn read_published_schema(fingerprint: &str, text: &str) -> Result<ServiceSchema, PublishedSchemaError> {
    if text.len() > MAX_SCHEMA_TEXT {
        return Err(PublishedSchemaError::TooLarge(text.len()));
    }
    let schema: ServiceSchema = serde_json::from_str(text).map_err(PublishedSchemaError::NotASchema)?;
    let hashes_to = schema.fingerprint();
    if hashes_to != fingerprint {
        return Err(PublishedSchemaError::Forged {
            stored_under: fingerprint.to_owned(),
            hashes_to,
        });
    }
    Ok(schema)
}

/// Keeps `known` in step with the schemas the instances published on `lists` name, until the
/// list channel closes.
pub(super) async fn keep_schemas(
    registry: Arc<dyn Registry>,
    service_key: &str,
    mut lists: watch::Receiver<Option<Arc<[ServiceInstance]>>>,
    known: &watch::Sender<KnownSchemas>,
    read_timeout: Duration,
    mut backoff: Backoff,
) {
    // Fingerprints whose text was not a schema: not read again while instances name them.
    let mut bad: HashSet<String> = HashSet::new();
    loop {
        let list = lists.borrow_and_update().clone();
        let mut missing = false;
        if let Some(list) = list {
            let wanted: HashSet<&str> = list.iter().filter_map(|i| i.schema.as_deref()).collect();
            bad.retain(|f| wanted.contains(f.as_str()));
            let mut map: SchemaMap = known.borrow().map.as_ref().clone();
            map.retain(|f, _| wanted.contains(f.as_str()));
            for &fingerprint in &wanted {
                if map.contains_key(fingerprint) || bad.contains(fingerprint) {
                    continue;
                }
                let read = tokio::time::timeout(read_timeout, registry.get_schema(service_key, fingerprint)).await;
                match read {
                    Ok(Ok(Some(text))) => match read_published_schema(fingerprint, &text) {
                        Ok(schema) => {
                            debug!(%fingerprint, methods = schema.methods.len(), "schema fetched");
                            map.insert(fingerprint.to_owned(), Arc::new(schema));
                        }
                        Err(e) => {
                            warn!(%fingerprint, error = %e, "skipping a schema; its instances count as having every method");
                            bad.insert(fingerprint.to_owned());
                        }
                    },
                    Ok(Ok(None)) => {
                        debug!(%fingerprint, "an instance names a schema that is not published (yet)");
                        missing = true;
                    }
                    Ok(Err(e)) => {
                        debug!(%fingerprint, error = %e, "reading a schema failed; will retry");
                        missing = true;
                    }
                    Err(_) => {
                        debug!(%fingerprint, "reading a schema timed out; will retry");
                        missing = true;
                    }
                }
            }
            known.send_replace(KnownSchemas {
                map: Arc::new(map),
                list: Some(list),
            });
        }
        if missing {
            tokio::select! {
                changed = lists.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        } else {
            backoff.reset();
            if lists.changed().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_that_are_not_the_schema_their_fingerprint_names_are_refused_with_a_reason() {
        let schema = crate::schema::SchemaBuilder::new("S", "1")
            .method::<(u32,), String>("m", &["n"], false)
            .build();
        let fingerprint = schema.fingerprint();
        let read = |text: &str| read_published_schema(&fingerprint, text);
        assert!(matches!(read("{"), Err(PublishedSchemaError::NotASchema(_))));
        assert!(matches!(
            read(r#"{"name":"S"}"#),
            Err(PublishedSchemaError::NotASchema(_))
        ));
        let huge = " ".repeat(MAX_SCHEMA_TEXT + 1);
        assert!(matches!(read(&huge), Err(PublishedSchemaError::TooLarge(_))));
        let text = serde_json::to_string(&schema).unwrap();
        assert_eq!(read(&text).unwrap(), schema);
        // Another schema (one method fewer) under this fingerprint: forged.
        let mut other = schema.clone();
        other.methods.clear();
        let error = read(&serde_json::to_string(&other).unwrap()).unwrap_err();
        match &error {
            PublishedSchemaError::Forged {
                stored_under,
                hashes_to,
            } => {
                assert_eq!(stored_under, &fingerprint);
                assert_eq!(hashes_to, &other.fingerprint());
            }
            other => panic!("{other}"),
        }
        assert!(error.to_string().contains("forged or corrupt"), "{error}");
    }
}
