//! `waypost`: what an operator needs to see and touch of a running system, from the same YAML
//! file the services read (only its `rpc.registry` and `rpc.consumer` sections matter here).
//!
//! ```text
//! waypost --config FILE services                       # every service key and its instance count
//! waypost --config FILE instances UserService:1.0      # address, weight, zone, age of each instance
//! waypost --config FILE watch UserService:1.0          # each change as it happens, until Ctrl-C
//! waypost --config FILE call UserService:1.0 get_user '[1]'   # arguments as a JSON array
//! waypost --config FILE rules UserService:1.0 [--set FILE.json | --clear]
//! waypost --config FILE health UserService:1.0         # each instance's own health answer
//! waypost --config FILE describe UserService:1.0       # methods and types (--json: JSON Schema)
//! waypost --config FILE schemas UserService:1.0        # schemas in use, and whether they mix
//! ```
//!
//! `--json` makes every listing machine-readable (`watch`: one JSON object per line). Exit 0 on
//! success; 1 with one line on stderr otherwise: unknown service or method, unreachable
//! registry, arguments the provider could not decode, the method's own error.

#![deny(missing_docs)]

mod call;
mod error;
mod listing;
mod output;
mod rules;
mod schemas;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use waypost::config::RpcConfig;
use waypost::registry::Registry;

use crate::error::CtlError;

/// Inspect and operate services through their registry.
#[derive(Parser)]
#[command(name = "waypost", version, about)]
struct Args {
    /// The YAML configuration file (its registry section says where to look).
    #[arg(long)]
    config: PathBuf,
    /// Machine-readable output: JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every service key in the registry and its instance count.
    Services,
    /// The instances of a service: address, weight, zone, age.
    Instances {
        /// Service key, `name:version`.
        key: String,
    },
    /// Prints each arrival, change and departure of a service's instances until Ctrl-C.
    Watch {
        /// Service key, `name:version`.
        key: String,
    },
    /// Calls a method with JSON arguments (the json serializer) and prints the result as JSON.
    Call {
        /// Service key, `name:version`.
        key: String,
        /// Method name.
        method: String,
        /// The arguments as a JSON array, one element per argument: `'[1]'`, `'["ada", 3]'`, `'[]'`.
        args: String,
    },
    /// Shows a service's routing rules, or replaces or deletes them.
    Rules {
        /// Service key, `name:version`.
        key: String,
        /// Validates the rules in this JSON file and stores them.
        #[arg(long, value_name = "FILE.json", conflicts_with = "clear")]
        set: Option<PathBuf>,
        /// Deletes the rules.
        #[arg(long)]
        clear: bool,
    },
    /// Asks each instance of a service how it is (serving or draining).
    Health {
        /// Service key, `name:version`.
        key: String,
    },
    /// The methods and types of a service, from the schema most of its instances published
    /// (`--json`: JSON Schema of each method's arguments, result and error).
    Describe {
        /// Service key, `name:version`.
        key: String,
    },
    /// The schemas a service's instances use, and for each pair whether calls between them
    /// survive their differences; fails when some do not.
    Schemas {
        /// Service key, `name:version`.
        key: String,
    },
}

fn main() -> ExitCode {
    // Library warnings would break the one-line error contract; RUST_LOG turns them on.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&CtlError::Io(e)),
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Prints `error` as one line and fails.
fn fail(error: &CtlError) -> ExitCode {
    let text = error.to_string();
    eprintln!("waypost: error: {}", text.lines().collect::<Vec<_>>().join("; "));
    ExitCode::FAILURE
}

async fn run(args: Args) -> Result<(), CtlError> {
    let config = waypost::load_config(&args.config)?;
    let registry = waypost::connect(&config.registry).await?;
    let outcome = dispatch(&args, &config, &registry).await;
    let _ = registry.close().await;
    outcome
}

async fn dispatch(args: &Args, config: &RpcConfig, registry: &Arc<dyn Registry>) -> Result<(), CtlError> {
    let json = args.json;
    match &args.command {
        Command::Services => listing::services(registry, json).await,
        Command::Instances { key } => listing::instances(registry, key, json).await,
        Command::Health { key } => listing::health(registry, config, key, json).await,
        Command::Watch { key } => watch::run(registry, key, json).await,
        Command::Call { key, method, args } => call::run(registry.clone(), config, key, method, args, json).await,
        Command::Rules { key, set, clear } => rules::run(registry, key, set.as_deref(), *clear, json).await,
        Command::Describe { key } => schemas::describe(registry, key, json).await,
        Command::Schemas { key } => schemas::schemas(registry, key, json).await,
    }
}
