//! `rules`: show, replace or delete a service's routing rules.
//!
//! Rules are validated here with the consumers' own parser before they are stored, so a bad
//! file is refused with the problem named instead of reaching consumers (which would ignore it
//! with a warning and keep the last valid rules).

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};
use waypost::registry::Registry;
use waypost::rules::ServiceRules;

use crate::error::CtlError;

/// Shows `key`'s rules, or stores the file `set`, or deletes them (`clear`).
pub async fn run(
    registry: &Arc<dyn Registry>,
    key: &str,
    set: Option<&Path>,
    clear: bool,
    json: bool,
) -> Result<(), CtlError> {
    let location = registry.rules_location(key);
    if let Some(path) = set {
        let text = tokio::fs::read_to_string(path).await.map_err(|source| CtlError::Read {
            path: path.display().to_string(),
            source,
        })?;
        ServiceRules::parse(&text).map_err(|source| CtlError::InvalidRules {
            path: path.display().to_string(),
            source,
        })?;
        registry.put_rules(key, text.trim()).await?;
        report(json, "set", key, &location);
        return Ok(());
    }
    if clear {
        registry.delete_rules(key).await?;
        report(json, "cleared", key, &location);
        return Ok(());
    }
    let text = registry.get_rules(key).await?;
    if json {
        let rules = text
            .as_deref()
            .map(|t| serde_json::from_str::<Value>(t).unwrap_or_else(|_| json!(t)));
        let problem = text
            .as_deref()
            .and_then(|t| ServiceRules::parse(t).err())
            .map(|e| e.to_string());
        println!(
            "{}",
            json!({"service": key, "location": location, "rules": rules, "invalid": problem})
        );
        return Ok(());
    }
    match text {
        None => println!("{key} has no rules ({location})"),
        Some(text) => {
            let pretty = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or_else(|| text.clone());
            println!("{pretty}");
            if let Err(problem) = ServiceRules::parse(&text) {
                println!("(invalid, ignored by consumers: {problem})");
            }
        }
    }
    Ok(())
}

fn report(json: bool, done: &str, key: &str, location: &str) {
    if json {
        println!("{}", json!({"service": key, "location": location, "rules": done}));
    } else {
        println!("rules of {key} {done} ({location})");
    }
}
