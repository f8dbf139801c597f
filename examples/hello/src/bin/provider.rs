use hello_waypost::{Greeter, GreeterServer};
use waypost::server::ServerBuilder;

struct English;

impl Greeter for English {
    async fn hello(&self, name: String) -> String {
        format!("Hello, {name}!")
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = waypost::load_config("rpc.yaml")?;
    let services = ServerBuilder::from_config(&config.server).add_service(GreeterServer::new(English));
    let provider = waypost::serve(&config, services).await?;
    println!("serving at {}", provider.local_addr()?);
    tokio::signal::ctrl_c().await?;
    provider.shutdown().await;
    Ok(())
}
