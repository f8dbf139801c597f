//! `services`, `instances` and `health`: what the registry holds, and what instances say.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use waypost::config::RpcConfig;
use waypost::health::Health;
use waypost::registry::{Registry, ServiceInstance};
use waypost::Channel;

use crate::error::CtlError;
use crate::output;

/// Prints every service key with its instance count.
pub async fn services(registry: &Arc<dyn Registry>, json: bool) -> Result<(), CtlError> {
    let mut rows = Vec::new();
    for key in registry.services().await? {
        let count = registry.discover(&key).await?.len();
        rows.push((key, count));
    }
    if json {
        let list: Vec<_> = rows
            .iter()
            .map(|(key, count)| json!({"service": key, "instances": count}))
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(());
    }
    if rows.is_empty() {
        println!("no services registered");
    }
    for (key, count) in rows {
        let plural = if count == 1 { "" } else { "s" };
        println!("{key:<40} {count} instance{plural}");
    }
    Ok(())
}

/// The instances of `key`; an unknown service when there are none.
pub async fn registered(registry: &Arc<dyn Registry>, key: &str) -> Result<Vec<ServiceInstance>, CtlError> {
    let mut instances = registry.discover(key).await?;
    if instances.is_empty() {
        let known = registry.services().await?;
        return Err(CtlError::UnknownService {
            key: key.to_owned(),
            known: if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            },
        });
    }
    instances.sort_by_key(ServiceInstance::address);
    Ok(instances)
}

/// Prints the instances of `key`.
pub async fn instances(registry: &Arc<dyn Registry>, key: &str, json: bool) -> Result<(), CtlError> {
    let instances = registered(registry, key).await?;
    if json {
        let list: Vec<_> = instances.iter().map(output::object).collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(());
    }
    println!("{}", output::HEADER);
    for instance in &instances {
        println!("{}", output::line(instance));
    }
    Ok(())
}

/// Asks every instance of `key` for its health; fails unless all are serving.
pub async fn health(registry: &Arc<dyn Registry>, config: &RpcConfig, key: &str, json: bool) -> Result<(), CtlError> {
    let instances = registered(registry, key).await?;
    let timeout = Duration::from_millis(config.consumer.timeout_ms);
    let options = waypost::client_options(config).await?;
    let mut failing = 0;
    let mut rows = Vec::new();
    for instance in &instances {
        let address = instance.address();
        let channel = Channel::direct_with(&address, options.clone())?.with_timeout(timeout);
        let answer = channel.health(key).await;
        if !matches!(answer, Ok(Health::Serving)) {
            failing += 1;
        }
        let text = match answer {
            Ok(health) => health.to_string(),
            Err(e) => format!("no answer ({}): {e}", e.kind().as_str()),
        };
        rows.push((address, text));
    }
    if json {
        let list: Vec<_> = rows
            .iter()
            .map(|(address, health)| json!({"address": address, "health": health}))
            .collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        for (address, health) in &rows {
            println!("{address:<22} {health}");
        }
    }
    match failing {
        0 => Ok(()),
        failing => Err(CtlError::Unhealthy {
            failing,
            total: instances.len(),
        }),
    }
}
