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

mod bootstrap;
pub mod etcd;
pub mod memory;
pub mod zookeeper;

pub use bootstrap::{consumer, serve, serve_listener, BootError, Provider};

use std::sync::Arc;

use rpc_core::config::{RegistryConfig, RegistryKind};
use rpc_core::registry::{Registry, RegistryError};

/// Builds and connects the backend `config` names.
///
/// Connecting checks that the registry answers, so an unreachable registry is reported here,
/// at start-up, rather than at the first call.
pub async fn connect(config: &RegistryConfig) -> Result<Arc<dyn Registry>, RegistryError> {
    Ok(match config.kind {
        RegistryKind::Etcd => Arc::new(etcd::EtcdRegistry::connect(etcd::EtcdOptions::from_config(config)).await?),
        RegistryKind::Memory => Arc::new(memory::MemoryRegistry::shared(&config.root)),
        RegistryKind::Zookeeper => {
            Arc::new(zookeeper::ZookeeperRegistry::connect(zookeeper::ZookeeperOptions::from_config(config)).await?)
        }
    })
}
