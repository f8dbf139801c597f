//! Registry backends of the RPC framework, and the factory that builds the one a configuration
//! names. Applications reach them through the facade crate `waypost`.
//!
//! * [`etcd::EtcdRegistry`]: the primary backend. One lease per process kept alive by etcd's
//!   keep-alive stream; watches from the listing's revision + 1.
//! * [`zookeeper::ZookeeperRegistry`]: ephemeral nodes under persistent service nodes,
//!   re-created in a new session when the old one expires; one-shot watches re-armed before
//!   every re-read.
//! * [`memory::MemoryRegistry`]: in-process, for single-process use and tests.
//!
//! All of them implement [`waypost_core::registry::Registry`] and store instances at
//! `{root}/{name}:{version}/{host}:{port}` as JSON.

#![deny(missing_docs)]
// docs.rs (and `scripts/check-build`) build the docs with `--cfg docsrs` on nightly: every item
// behind a Cargo feature is marked with the features it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

//!
//! # Cargo features
//!
//! Each network backend is a feature, both on by default:
//!
//! * `etcd`: the etcd backend. Its client is generated from protobuf at build time, which
//!   needs `protoc` and the well-known `.proto` files (Debian: `protobuf-compiler` and
//!   `libprotobuf-dev`).
//! * `zookeeper`: the ZooKeeper backend (pure Rust, nothing to install).
//!
//! The memory backend is always there. A configuration naming a backend that was not compiled
//! in is refused by [`connect`] (and by the facade's `load_config`) with an error that names
//! the feature.

#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(any(feature = "etcd", feature = "zookeeper"))]
mod local;
pub mod memory;
pub mod reconnecting;
#[cfg(feature = "zookeeper")]
pub mod zookeeper;

use std::sync::Arc;

use waypost_core::config::{RegistryConfig, RegistryKind};
use waypost_core::registry::{Registry, RegistryError};

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

/// Why a backend is missing from this build: the message of the error naming it (and the
/// facade's feature that brings it), or `None` when it is compiled in.
pub fn missing_backend(kind: RegistryKind) -> Option<String> {
    if compiled_backends().contains(&kind) {
        return None;
    }
    Some(format!(
        "{kind} is not compiled in; enable the `{kind}` feature of waypost"
    ))
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
        assert_eq!(missing_backend(RegistryKind::Memory), None);
    }

    #[cfg(not(all(feature = "etcd", feature = "zookeeper")))]
    #[tokio::test]
    async fn a_missing_backend_is_refused_naming_the_feature() {
        let missing = if cfg!(feature = "etcd") {
            RegistryKind::Zookeeper
        } else {
            RegistryKind::Etcd
        };
        let message = format!("{missing} is not compiled in; enable the `{missing}` feature of waypost");
        assert_eq!(missing_backend(missing), Some(message.clone()));
        let config = RegistryConfig {
            kind: missing,
            ..RegistryConfig::default()
        };
        match connect(&config).await {
            Err(RegistryError::InvalidConfig(m)) => assert_eq!(m, message),
            Err(other) => panic!("expected an invalid configuration, got {other}"),
            Ok(_) => panic!("expected an invalid configuration"),
        }
    }
}
