//! An RPC framework with service registries: the one crate an application depends on.
//!
//! Annotate a trait with [`service`], implement it, serve it with [`serve`] (or a
//! [`server::ServerBuilder`]), and call it through the generated client over a [`Channel`]
//! or a [`consumer`] that discovers providers in etcd, ZooKeeper or memory. One YAML file
//! ([`load_config`]) chooses the registry and every strategy.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! pub struct User {
//!     pub id: u64,
//!     pub name: String,
//! }
//!
//! #[waypost::service(name = "UserService", version = "1.0")]
//! pub trait UserService {
//!     async fn get_user(&self, id: u64) -> User;
//! }
//!
//! struct Users;
//!
//! impl UserService for Users {
//!     async fn get_user(&self, id: u64) -> User {
//!         User { id, name: "Ada".into() }
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = waypost::load_config("rpc.yaml")?;
//! // Provider: serves, registers, and deregisters and drains on shutdown.
//! let provider = waypost::serve(&config, waypost::server::ServerBuilder::from_config(&config.server)
//!     .add_service(UserServiceServer::new(Users))).await?;
//! // Consumer: discovers the providers and balances calls over them.
//! let consumer = waypost::consumer(&config).await?;
//! let users = UserServiceClient::new(consumer.channel())?;
//! println!("{}", users.get_user(1).await?.name);
//! provider.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Everything of the runtime ([`waypost_core`]) is re-exported at this crate's root: the
//! [`server`] and [`client`] builders with their tower seams, [`context`], [`config`],
//! [`error`], [`interceptor`], [`auth`], [`metrics`], the [`registry`] contract and discovery
//! cache. The registry backends are in [`backends`], [`connect`] builds the configured one.
//!
//! # Cargo features
//!
//! * `etcd` (default): the etcd backend; its client is generated from protobuf at build time,
//!   which needs `protoc` and the well-known `.proto` files (Debian: `protobuf-compiler` and
//!   `libprotobuf-dev`). Turns `tls` on.
//! * `zookeeper` (default): the ZooKeeper backend (pure Rust).
//! * `tls` (default): TLS and mTLS on the RPC transport (rustls).
//! * `prometheus` (default): the `/metrics` endpoint `rpc.metrics.listen` starts.
//! * `http` (default): HTTP/JSON on the RPC port, with `GET /openapi.json`.
//! * `zstd` (default): zstd compression of call bodies.
//! * `otel`: `telemetry`, call spans exported over OTLP to an OpenTelemetry collector.
//!
//! A configuration asking for something this build leaves out is refused by [`load_config`]
//! with an error naming the field and the feature.

#![deny(missing_docs)]
// docs.rs (and `scripts/check-build`) build the docs with `--cfg docsrs` on nightly: every item
// behind a Cargo feature is marked with the features it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod bootstrap;
pub mod metrics_endpoint;
#[cfg(feature = "otel")]
pub mod telemetry;

pub use bootstrap::{client_options, consumer, secure_consumer, serve, serve_listener, BootError, Provider};
pub use waypost_core::*;
pub use waypost_registry::{compiled_backends, connect};

/// The registry backends compiled into this build.
pub mod backends {
    #[cfg(feature = "etcd")]
    pub use waypost_registry::etcd;
    pub use waypost_registry::memory;
    pub use waypost_registry::reconnecting;
    #[cfg(feature = "zookeeper")]
    pub use waypost_registry::zookeeper;
}

use std::path::Path;

use waypost_core::config::{ConfigError, RpcConfig};

/// Loads a configuration file like [`RpcConfig::load`] (environment overrides included) and
/// checks that what it asks for is compiled into this build ([`check_features`]).
pub fn load_config(path: impl AsRef<Path>) -> Result<RpcConfig, ConfigError> {
    let path = path.as_ref();
    let config = RpcConfig::load(path)?;
    check_features(&config, &path.display().to_string())?;
    Ok(config)
}

/// Checks that what `config` asks for is compiled into this build: the registry backend it
/// names, TLS when a `tls` section is set, the Prometheus endpoint when
/// `rpc.metrics.listen` is set, and span export when `rpc.telemetry.otlp_endpoint` is. `origin` names the configuration's source in the error.
pub fn check_features(config: &RpcConfig, origin: &str) -> Result<(), ConfigError> {
    let invalid = |field: &str, message: String| ConfigError::Invalid {
        origin: origin.to_owned(),
        field: field.to_owned(),
        message,
    };
    if let Some(message) = waypost_registry::missing_backend(config.registry.kind) {
        return Err(invalid("rpc.registry.type", message));
    }
    if config.metrics.listen.is_some() && !cfg!(feature = "prometheus") {
        return Err(invalid(
            "rpc.metrics.listen",
            "the Prometheus endpoint is not compiled in; enable the `prometheus` feature of waypost".to_owned(),
        ));
    }
    if config.telemetry.otlp_endpoint.is_some() && !cfg!(feature = "otel") {
        return Err(invalid(
            "rpc.telemetry.otlp_endpoint",
            "span export is not compiled in; enable the `otel` feature of waypost".to_owned(),
        ));
    }
    if !cfg!(feature = "tls") {
        for (field, set) in [
            ("rpc.server.tls", config.server.tls.is_some()),
            ("rpc.consumer.tls", config.consumer.tls.is_some()),
        ] {
            if set {
                return Err(invalid(
                    field,
                    "TLS is not compiled in; enable the `tls` feature of waypost".to_owned(),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_backend_needs_no_feature() {
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
            format!(
                "f.yaml: rpc.registry.type: {missing} is not compiled in; enable the `{missing}` feature of waypost"
            )
        );
    }
}
