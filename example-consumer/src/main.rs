//! Calls the example `UserService` through the configured registry.
//!
//! `example-consumer --config FILE [--calls N]` makes N calls, prints each result, then one
//! JSON summary line: `{"calls":N,"ok":K,"failed":F,"by_instance":{"host:port":k,...}}`, where
//! `by_instance` counts successful calls by the instance that answered. Exits 1 when any call
//! failed. With `rpc.metrics.listen` set it serves Prometheus metrics there while it runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use waypost::stream::StreamExt;
use waypost_example_api::UserServiceClient;

/// Call UserService through the registry.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// YAML configuration file.
    #[arg(long)]
    config: PathBuf,
    /// Number of calls.
    #[arg(long, default_value_t = 10)]
    calls: u64,
    /// Pause between calls, in milliseconds.
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    waypost_example_api::init_logging("warn");
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("example-consumer: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the calls; `Ok(false)` when any failed.
async fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let config = waypost::load_config(&args.config)?;
    let consumer = waypost::consumer(&config).await?;
    let client = UserServiceClient::new(consumer.channel())?;
    let mut ok = 0u64;
    let mut by_instance: BTreeMap<String, u64> = BTreeMap::new();
    for i in 1..=args.calls {
        match client.get_user(i % 5).await {
            Ok(user) => {
                println!(
                    "call {i}: user {} is {} (served by {})",
                    user.id, user.name, user.served_by
                );
                ok += 1;
                *by_instance.entry(user.served_by).or_default() += 1;
            }
            Err(e) => println!("call {i}: failed: {e}"),
        }
        if args.interval_ms > 0 {
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
    }
    // A server stream: the users, one by one, as the provider sends them.
    let mut streamed = 0u64;
    let mut stream_failed = false;
    match client.list_users(0).await {
        Ok(mut users) => {
            while let Some(user) = users.next().await {
                match user {
                    Ok(user) => {
                        println!(
                            "stream: user {} is {} (served by {})",
                            user.id, user.name, user.served_by
                        );
                        streamed += 1;
                    }
                    Err(e) => {
                        println!("stream: failed: {e}");
                        stream_failed = true;
                    }
                }
            }
        }
        Err(e) => {
            println!("stream: failed to start: {e}");
            stream_failed = true;
        }
    }
    consumer.close().await;
    let failed = args.calls - ok;
    let summary = serde_json::json!({
        "calls": args.calls,
        "ok": ok,
        "failed": failed,
        "by_instance": by_instance,
        "streamed": streamed,
    });
    println!("{summary}");
    Ok(failed == 0 && !stream_failed)
}
