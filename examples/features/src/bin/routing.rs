//! Routing rules pushed through the registry: a canary group, then a drained instance.
//!
//! Two providers of `Inventory` register; an operator (here, this program; in production
//! `waypost rules` or `etcdctl put`) writes the service's rules to the registry. Consumers
//! follow them within a watch round trip, without a restart: calls whose metadata carries
//! `route-tag: canary` go to the canary, then a rule disabling the canary sends every call to
//! the other instance, and deleting the rules restores the configuration.
//!
//! `cargo run -p waypost-examples --bin routing`

use std::collections::BTreeSet;
use std::time::Duration;

use waypost::server::ServerBuilder;

#[waypost::service]
pub trait Inventory {
    /// The address of the instance that answered.
    async fn served_by(&self) -> String;
}

struct Instance(String);

impl Inventory for Instance {
    async fn served_by(&self) -> String {
        self.0.clone()
    }
}

/// Serves `Inventory` on a free port; the provider answers with its own address.
async fn provider(
    config: &waypost::config::RpcConfig,
) -> Result<(waypost::Provider, String), Box<dyn std::error::Error>> {
    let listener = waypost::server::listen(&format!("{}:0", config.server.host)).await?;
    let address = format!("{}:{}", config.server.registered_host(), listener.local_addr()?.port());
    let services =
        ServerBuilder::from_config(&config.server).add_service(InventoryServer::new(Instance(address.clone())));
    Ok((waypost::serve_listener(config, services, listener).await?, address))
}

/// The instances that answer 20 calls of `client`.
async fn answering(client: &InventoryClient) -> Result<BTreeSet<String>, waypost::RpcError> {
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        seen.insert(client.served_by().await?);
    }
    Ok(seen)
}

/// Calls until the instances answering `client` are `want` (rules reach consumers through a
/// watch, so a change takes a round trip), for at most five seconds.
async fn until_answering(client: &InventoryClient, want: &[&str]) -> Result<(), Box<dyn std::error::Error>> {
    let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let seen = answering(client).await?;
        if seen == want {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(waypost_examples::unexpected(
                &format!("calls answered by {want:?}"),
                seen,
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = waypost_examples::config()?;
    let (stable, stable_addr) = provider(&config).await?;
    let (canary, canary_addr) = provider(&config).await?;
    let consumer = waypost::consumer(&config).await?;
    let everyone = InventoryClient::new(consumer.channel())?;
    let testers = everyone.with_metadata("route-tag", "canary");
    until_answering(&everyone, &[&stable_addr, &canary_addr]).await?;
    println!("no rules: calls spread over {stable_addr} and {canary_addr}");

    let operator = waypost::connect(&config.registry).await?;
    let key = "Inventory:1.0";
    operator
        .put_rules(key, &format!(r#"{{"tags": {{"canary": ["{canary_addr}"]}}}}"#))
        .await?;
    until_answering(&testers, &[&canary_addr]).await?;
    println!("tags rule: calls tagged canary go to {canary_addr} only");

    operator
        .put_rules(key, &format!(r#"{{"disabled": ["{canary_addr}"]}}"#))
        .await?;
    until_answering(&everyone, &[&stable_addr]).await?;
    println!("disabled rule: every call goes to {stable_addr}");

    operator.delete_rules(key).await?;
    until_answering(&everyone, &[&stable_addr, &canary_addr]).await?;
    println!("rules deleted: calls spread over both again");

    operator.close().await?;
    consumer.close().await;
    stable.shutdown().await;
    canary.shutdown().await;
    Ok(())
}
