//! Serves the example `UserService` and registers it in the configured registry.
//!
//! `example-provider --config FILE [--port N]`: on Ctrl-C or SIGTERM it deregisters, drains
//! the calls in flight and exits 0. Any start-up failure prints one line and exits 1.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use example_api::{InMemoryUsers, UserServiceServer};
use rpc_core::server::ServerBuilder;
use tokio::net::TcpListener;

/// Serve UserService and register it.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// YAML configuration file.
    #[arg(long)]
    config: PathBuf,
    /// Port to listen on (overrides rpc.server.port; 0 picks a free one).
    #[arg(long)]
    port: Option<u16>,
}

#[tokio::main]
async fn main() -> ExitCode {
    example_api::init_logging("info");
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("example-provider: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = rpc_registry::load_config(&args.config)?;
    if let Some(port) = args.port {
        config.server.port = port;
    }
    let bind = format!("{}:{}", config.server.host, config.server.port);
    let listener = TcpListener::bind(&bind)
        .await
        .map_err(|e| format!("cannot listen on {bind}: {e}"))?;
    let port = listener.local_addr()?.port();
    let instance = format!("{}:{port}", config.server.registered_host());
    let builder =
        ServerBuilder::from_config(&config.server).add_service(UserServiceServer::new(InMemoryUsers::new(&instance)));
    let provider = rpc_registry::serve_listener(&config, builder, listener).await?;
    for i in provider.instances() {
        println!(
            "serving {} at {} (registry: {} {})",
            i.service_key(),
            i.address(),
            config.registry.kind,
            config.registry.endpoints.join(",")
        );
    }
    shutdown_signal().await?;
    println!("shutting down: deregistering, draining");
    let report = provider.shutdown().await;
    println!("stopped (drained: {})", report.drained);
    Ok(())
}

async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}
