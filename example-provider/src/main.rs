//! Serves the example `UserService` and registers it in the configured registry.
//!
//! `example-provider --config FILE [--port N]`: on Ctrl-C or SIGTERM it deregisters, drains
//! the calls in flight and exits 0. With `rpc.metrics.listen` set it serves Prometheus metrics
//! at `/metrics` there. On SIGHUP it reloads FILE: a changed weight or metadata is
//! registered again at once; the TLS certificate files (`rpc.server.tls`) are read again for
//! new connections; other changes are named as needing a restart; an invalid file is
//! reported and the running configuration kept. Any start-up failure prints one line and
//! exits 1.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use waypost::server::ServerBuilder;
use waypost_example_api::{InMemoryUsers, UserServiceServer};

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
    waypost_example_api::init_logging("info");
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("example-provider: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = waypost::load_config(&args.config)?;
    if let Some(port) = args.port {
        config.server.port = port;
    }
    let bind = format!("{}:{}", config.server.host, config.server.port);
    let listener = waypost::server::listen(&bind)
        .await
        .map_err(|e| format!("cannot listen on {bind}: {e}"))?;
    let port = listener.local_addr()?.port();
    let instance = format!("{}:{port}", config.server.registered_host());
    let builder =
        ServerBuilder::from_config(&config.server).add_service(UserServiceServer::new(InMemoryUsers::new(&instance)));
    let provider = waypost::serve_listener(&config, builder, listener).await?;
    for i in provider.instances() {
        println!(
            "serving {} at {} (registry: {} {})",
            i.service_key(),
            i.address(),
            config.registry.kind,
            config.registry.endpoints.join(",")
        );
    }
    if let Some(addr) = provider.metrics_addr() {
        println!("metrics at http://{addr}/metrics");
    }
    let mut provider = provider;
    let mut term = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => { r?; break; }
            _ = term.recv() => break,
            _ = hangup.recv() => reload(&args, &mut config, &mut provider).await,
        }
    }
    println!("shutting down: deregistering, draining");
    let report = provider.shutdown().await;
    println!("stopped (drained: {})", report.drained);
    Ok(())
}

/// SIGHUP: re-reads the configuration and applies what can change while serving.
async fn reload(args: &Args, config: &mut waypost::config::RpcConfig, provider: &mut waypost::Provider) {
    let mut next = match waypost::load_config(&args.config) {
        Ok(next) => next,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: the configuration did not load; keeping the running one");
            return;
        }
    };
    if let Some(port) = args.port {
        next.server.port = port;
    }
    let (old, new) = (&config.server, &next.server);
    if old.weight != new.weight || old.metadata != new.metadata {
        match provider.update_registration(&next).await {
            Ok(instances) => {
                for i in instances {
                    println!(
                        "reloaded: {} at {} registered with weight {}",
                        i.service_key(),
                        i.address(),
                        i.weight
                    );
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: registering the new weight and metadata failed");
                return;
            }
        }
    }
    if let Some(tls) = &old.tls {
        match provider.reload_tls().await {
            Ok(()) => println!("reloaded: TLS certificate {}", tls.cert.display()),
            Err(e) => tracing::error!(error = %e, "SIGHUP: the TLS files did not load; keeping the running ones"),
        }
    }
    let restart_only = [
        ("rpc.server.host", old.host != new.host),
        ("rpc.server.port", old.port != new.port),
        ("rpc.server.tls", old.tls != new.tls),
        ("rpc.server.auth", old.auth != new.auth),
        ("rpc.registry", config.registry != next.registry),
    ];
    for (field, changed) in restart_only {
        if changed {
            tracing::warn!(field, "SIGHUP: this change takes effect at the next restart");
        }
    }
    tracing::info!("SIGHUP: configuration reloaded");
    *config = next;
}
