//! What the examples share: the configuration they read (`rpc.yaml` next to this crate, with
//! the usual `RPC__...` environment overrides, so CI can point them at etcd).
//!
//! Each program in `src/bin/` shows one feature, checks what it shows, and exits 1 (naming
//! what went wrong) if anything differs: CI runs them all (`scripts/examples`).

#![deny(missing_docs)]

use waypost::config::{ConfigError, RpcConfig};

/// The examples' configuration: `rpc.yaml` of this crate, overridden by `RPC__...` variables.
pub fn config() -> Result<RpcConfig, ConfigError> {
    waypost::load_config(concat!(env!("CARGO_MANIFEST_DIR"), "/rpc.yaml"))
}

/// An error naming what an example expected and what it got.
pub fn unexpected(what: &str, got: impl std::fmt::Debug) -> Box<dyn std::error::Error> {
    format!("{what}: got {got:?}").into()
}
