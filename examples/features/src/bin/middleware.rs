//! Tower middleware on both sides of a call.
//!
//! The server stacks tower's timeout, load shedding and concurrency limit with an async layer
//! of its own that refuses calls without a `tenant` and hands the tenant to the handler; the
//! consumer stacks a timeout and a layer that stamps the tenant on every call. A call through
//! the consumer is served; a call on a bare channel is refused with `permission_denied`.
//!
//! `cargo run -p waypost-examples --bin middleware`

use std::time::Duration;

use tower::filter::AsyncFilterLayer;
use tower::timeout::TimeoutLayer;
use tower::util::MapRequestLayer;
use tower::ServiceBuilder;
use waypost::client::{Channel, ClientCall, Consumer};
use waypost::server::{ServerBuilder, ServerCall};
use waypost::RpcError;

#[waypost::service]
pub trait Greeter {
    async fn hello(&self, name: String) -> String;
}

/// What the server's layer resolved, handed to the handler.
struct Tenant(String);

struct English;

impl Greeter for English {
    async fn hello(&self, name: String) -> String {
        let ctx = waypost::context::current();
        let tenant = ctx.extensions().get::<Tenant>().map_or("?", |t| t.0.as_str());
        format!("Hello, {name} of {tenant}!")
    }
}

/// An async server layer: it may await (a directory lookup, say) before it decides.
async fn require_tenant(mut call: ServerCall) -> Result<ServerCall, RpcError> {
    let Some(tenant) = call.context().metadata().get("tenant").map(str::to_owned) else {
        return Err(RpcError::permission_denied("a tenant is required"));
    };
    tokio::task::yield_now().await; // stands for the lookup
    call.context_mut().extensions_mut().insert(Tenant(tenant));
    Ok(call)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = waypost_examples::config()?;
    let services = ServerBuilder::from_config(&config.server)
        .layer(TimeoutLayer::new(Duration::from_millis(200)))
        .layer(ServiceBuilder::new().load_shed().concurrency_limit(64))
        .layer(AsyncFilterLayer::new(require_tenant))
        .add_service(GreeterServer::new(English));
    let provider = waypost::serve(&config, services).await?;

    // Every client of this consumer goes through its layers.
    let consumer = Consumer::builder(&config)
        .layer(TimeoutLayer::new(Duration::from_millis(500)))
        .layer(MapRequestLayer::new(|mut call: ClientCall| {
            call.context_mut().metadata_mut().insert("tenant", "acme");
            call
        }))
        .build(waypost::connect(&config.registry).await?)
        .await?;
    let greeter = GreeterClient::new(consumer.channel())?;
    let greeting = greeter.hello("Ada".into()).await?;
    println!("through the layers: {greeting}");
    if greeting != "Hello, Ada of acme!" {
        return Err(waypost_examples::unexpected("the tenant reaches the handler", greeting));
    }

    // A bare channel to the same provider sends no tenant: the server's layer refuses it.
    let bare = GreeterClient::new(Channel::direct(provider.local_addr()?.to_string())?)?;
    match bare.hello("Bob".into()).await {
        Err(RpcError::PermissionDenied(why)) => println!("without a tenant: refused ({why})"),
        other => {
            return Err(waypost_examples::unexpected(
                "a call without a tenant is refused",
                other,
            ))
        }
    }

    consumer.close().await;
    provider.shutdown().await;
    Ok(())
}
