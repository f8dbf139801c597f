//! A provider process for tests that need a real process to crash: serves `TestService` (and
//! the streaming `Feed`) with
//! the configuration in the file named by its first argument, prints `READY <port>` once
//! registered, and runs until it is killed (SIGTERM shuts it down gracefully). Logs go to
//! stderr (`RUST_LOG`, `warn` by default). `RPC_TEST_FAULT` makes `TestService` misbehave
//! (see `waypost_tests::faulty::Fault::parse`: `fail`, `latency:10`, `latency:10:every:10:200`).

use std::process::ExitCode;

use waypost_core::config::RpcConfig;
use waypost_core::server::ServerBuilder;
use waypost_tests::faulty::{Fault, FaultyService};
use waypost_tests::feed::{FeedImpl, FeedServer};
use waypost_tests::{TestServiceImpl, TestServiceServer};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,tokio_cron_scheduler=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: test-provider CONFIG.yaml");
        return ExitCode::from(2);
    };
    let config = match RpcConfig::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("test-provider: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bind = format!("{}:{}", config.server.host, config.server.port);
    let listener = match waypost_core::server::listen(&bind).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("test-provider: cannot listen on {bind}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `owner` answers the port, so callers can tell the providers apart.
    let label = listener.local_addr().map(|a| a.port().to_string()).unwrap_or_default();
    let fault = match Fault::parse(&std::env::var("RPC_TEST_FAULT").unwrap_or_default()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("test-provider: RPC_TEST_FAULT: {e}");
            return ExitCode::from(2);
        }
    };
    let (service, faults) = FaultyService::new(TestServiceServer::new(TestServiceImpl::labeled(label)));
    faults.set(fault);
    let builder = ServerBuilder::from_config(&config.server)
        .add_service(service)
        .add_service(FeedServer::new(FeedImpl::default()));
    let provider = match waypost::serve_listener(&config, builder, listener).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("test-provider: {e}");
            return ExitCode::FAILURE;
        }
    };
    let port = provider.local_addr().map(|a| a.port()).unwrap_or(0);
    println!("READY {port}");
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("test-provider: {e}");
            return ExitCode::FAILURE;
        }
    };
    term.recv().await;
    provider.shutdown().await;
    ExitCode::SUCCESS
}
