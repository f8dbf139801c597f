//! Providers and consumers built from a configuration: the glue between
//! [`rpc_core::config::RpcConfig`], the registry factory and the core's server and client.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rpc_core::client::{Consumer, ConsumerError};
use rpc_core::config::RpcConfig;
use rpc_core::registry::{Registry, RegistryError, ServiceInstance};
use rpc_core::server::{Registration, RunningServer, ServerBuilder, ShutdownReport};
use tokio::net::TcpListener;
use tracing::warn;

/// Starting a provider or a consumer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    /// The registry could not be reached or refused the registration.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The server could not listen.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The consumer could not be built.
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
}

/// A serving, registered server and the registry it is registered in.
pub struct Provider {
    server: RunningServer,
    registry: Arc<dyn Registry>,
    instances: Vec<ServiceInstance>,
}

impl Provider {
    /// The address the server listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.server.local_addr()
    }

    /// What was registered.
    pub fn instances(&self) -> &[ServiceInstance] {
        &self.instances
    }

    /// The running server.
    pub fn server(&self) -> &RunningServer {
        &self.server
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.registry
    }

    /// Deregisters, drains and stops the server, then closes the registry (revoking an etcd
    /// lease, closing a ZooKeeper session).
    pub async fn shutdown(self) -> ShutdownReport {
        let report = self.server.shutdown().await;
        if let Err(e) = self.registry.close().await {
            warn!(error = %e, "closing the registry failed");
        }
        report
    }
}

/// Connects the configured registry, binds `rpc.server.host:port`, serves `builder`'s services
/// and registers them.
pub async fn serve(config: &RpcConfig, builder: ServerBuilder) -> Result<Provider, BootError> {
    let addr = format!("{}:{}", config.server.host, config.server.port);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| BootError::Bind { addr, source })?;
    serve_listener(config, builder, listener).await
}

/// Like [`serve`] on a listener bound by the caller (who may need the port before building
/// the services).
pub async fn serve_listener(
    config: &RpcConfig,
    builder: ServerBuilder,
    listener: TcpListener,
) -> Result<Provider, BootError> {
    let registry = crate::connect(&config.registry).await?;
    let mut server = builder.serve_listener(listener);
    match server
        .register(registry.clone(), &Registration::from_config(&config.server))
        .await
    {
        Ok(instances) => Ok(Provider {
            server,
            registry,
            instances,
        }),
        Err(e) => {
            server.shutdown().await;
            let _ = registry.close().await;
            Err(e.into())
        }
    }
}

/// Connects the configured registry and builds a [`Consumer`] over it.
pub async fn consumer(config: &RpcConfig) -> Result<Consumer, BootError> {
    let registry = crate::connect(&config.registry).await?;
    Ok(Consumer::new(registry, config).await?)
}
