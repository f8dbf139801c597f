//! Registry backends of the RPC framework, and the factory that builds the one a configuration
//! names.
//!
//! * [`etcd::EtcdRegistry`]: the primary backend. One lease per process kept alive by etcd's
//!   keep-alive stream; watches from the listing's revision + 1.
//! * [`zookeeper::ZookeeperRegistry`]: ephemeral nodes under persistent service nodes,
//!   re-created in a new session when the old one expires; one-shot watches re-armed before
//!   every re-read.
//! * [`memory::MemoryRegistry`]: in-process, for single-process use and tests.
//!
//! All of them implement [`rpc_core::registry::Registry`] and store instances at
//! `{root}/{name}:{version}/{host}:{port}` as JSON.

#![deny(missing_docs)]

//!
//! # Cargo features
//!
//! Each network backend is a feature, both on by default:
//!
//! * `etcd`: the etcd backend. Its client is generated from protobuf at build time, which
//!   needs `protoc` and the well-known `.proto` files (Debian: `protobuf-compiler` and
//!   `libprotobuf-dev`).
//! * `zookeeper`: the ZooKeeper backend (pure Rust, nothing to install).
//! * `prometheus`: the `/metrics` endpoint that `rpc.metrics.listen` starts
//!   ([`metrics_endpoint`]); without it a configuration that sets `rpc.metrics.listen` is
//!   refused.
//!
//! The memory backend is always there. A configuration naming a backend that was not compiled
//! in is refused by [`load_config`] (and by [`connect`]) with an error that names the feature.

mod bootstrap;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(any(feature = "etcd", feature = "zookeeper"))]
mod local;
pub mod memory;
pub mod metrics_endpoint;
pub mod reconnecting;
#[cfg(feature = "zookeeper")]
pub mod zookeeper;

pub use bootstrap::{client_options, consumer, secure_consumer, serve, serve_listener, BootError, Provider};

use std::path::Path;
use std::sync::Arc;

use rpc_core::config::{ConfigError, RegistryConfig, RegistryKind, RpcConfig};
use rpc_core::registry::{Registry, RegistryError};

/// The registry backends this build of the crate contains.
pub fn compiled_backends() -> &'static [RegistryKind] {
    &[
        #[cfg(feature = "etcd")]
        RegistryKind::Etcd,
        #[cfg(feature = "zookeeper")]
        RegistryKind::Zookeeper,
        RegistryKind::Memory,
    ]
}

/// Why a backend is missing from this build: the message of the error naming it, or `None`
/// when it is compiled in.
fn missing_backend(kind: RegistryKind) -> Option<String> {
    if compiled_backends().contains(&kind) {
        return None;
    }
    Some(format!(
        "{kind} is not compiled in; enable the `{kind}` feature of rpc-registry"
    ))
}

/// Loads a configuration file like [`RpcConfig::load`] (environment overrides included) and
/// checks that what it asks for is compiled into this build ([`check_features`]).
pub fn load_config(path: impl AsRef<Path>) -> Result<RpcConfig, ConfigError> {
    let path = path.as_ref();
    let config = RpcConfig::load(path)?;
    check_features(&config, &path.display().to_string())?;
    Ok(config)
}

/// Checks that what `config` asks for is compiled into this build: the registry backend it
/// names, and the Prometheus endpoint when `rpc.metrics.listen` is set. `origin` names the
/// configuration's source in the error.
pub fn check_features(config: &RpcConfig, origin: &str) -> Result<(), ConfigError> {
    let invalid = |field: &str, message: String| ConfigError::Invalid {
        origin: origin.to_owned(),
        field: field.to_owned(),
        message,
    };
    if let Some(message) = missing_backend(config.registry.kind) {
        return Err(invalid("rpc.registry.type", message));
    }
    if config.metrics.listen.is_some() && !cfg!(feature = "prometheus") {
        return Err(invalid(
            "rpc.metrics.listen",
            "the Prometheus endpoint is not compiled in; enable the `prometheus` feature of rpc-registry".to_owned(),
        ));
    }
    Ok(())
}

/// Builds and connects the backend `config` names.
///
/// Connecting checks that the registry answers, so an unreachable registry is reported here,
/// at start-up, rather than at the first call.
pub async fn connect(config: &RegistryConfig) -> Result<Arc<dyn Registry>, RegistryError> {
    Ok(match config.kind {
        #[cfg(feature = "etcd")]
        RegistryKind::Etcd => Arc::new(etcd::EtcdRegistry::connect(etcd::EtcdOptions::from_config(config)).await?),
        #[cfg(feature = "zookeeper")]
        RegistryKind::Zookeeper => {
            Arc::new(zookeeper::ZookeeperRegistry::connect(zookeeper::ZookeeperOptions::from_config(config)).await?)
        }
        RegistryKind::Memory => Arc::new(memory::MemoryRegistry::shared(&config.root)),
        #[allow(unreachable_patterns)] // reachable when a backend feature is off
        other => {
            return Err(RegistryError::InvalidConfig(
                missing_backend(other).unwrap_or_else(|| format!("{other} is not supported")),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_backend_is_always_compiled_in() {
        assert!(compiled_backends().contains(&RegistryKind::Memory));
        let config = RpcConfig::from_yaml("rpc:\n  registry:\n    type: memory\n").unwrap();
        check_features(&config, "f.yaml").unwrap();
    }

    #[cfg(not(all(feature = "etcd", feature = "zookeeper")))]
    #[test]
    fn a_missing_backend_is_a_config_error_naming_the_feature() {
        let missing = if cfg!(feature = "etcd") { "zookeeper" } else { "etcd" };
        let config = RpcConfig::from_yaml(&format!("rpc:\n  registry:\n    type: {missing}\n")).unwrap();
        let e = check_features(&config, "f.yaml").unwrap_err().to_string();
        assert_eq!(
            e,
            format!("f.yaml: rpc.registry.type: {missing} is not compiled in; enable the `{missing}` feature of rpc-registry")
        );
    }
}
