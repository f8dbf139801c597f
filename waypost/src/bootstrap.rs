//! Providers and consumers built from a configuration: the glue between
//! [`waypost_core::config::RpcConfig`], the registry factory and the core's server and client.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::warn;
use waypost_core::auth::{AllowList, BearerToken, BearerTokens};
use waypost_core::client::{ClientOptions, Consumer, ConsumerBuilder, ConsumerError};
use waypost_core::config::RpcConfig;
use waypost_core::metrics::MetricsLayer;
use waypost_core::registry::{now_ms, CacheFile, Registry, RegistryError, ServiceInstance};
use waypost_core::server::{Registration, RunningServer, ServerBuilder, ServerLayers, ShutdownReport};
#[cfg(feature = "tls")]
use waypost_core::tls::{ClientTls, ServerTls, TlsError};

use waypost_registry::reconnecting::ReconnectingRegistry;

use crate::metrics_endpoint::{MetricsEndpoint, MetricsError};

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
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// A TLS file of the configuration cannot be used.
    #[cfg(feature = "tls")]
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The configuration asks for something this build leaves out (the message names the
    /// field and the feature).
    #[error("{0}")]
    NotCompiled(String),
}

/// A serving, registered server and the registry it is registered in.
pub struct Provider {
    server: RunningServer,
    registry: Arc<dyn Registry>,
    instances: Vec<ServiceInstance>,
    metrics: Option<MetricsEndpoint>,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    tls: Option<ServerTlsHandle>,
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

    /// Reads the TLS files of `rpc.server.tls` again (certificates renewed on disk): new
    /// connections use them, open ones keep theirs. Nothing happens without TLS; files that do
    /// not load leave the running certificates in place.
    #[cfg(feature = "tls")]
    pub async fn reload_tls(&self) -> Result<(), TlsError> {
        match &self.tls {
            Some(tls) => tls.reload().await,
            None => Ok(()),
        }
    }

    /// Where `/metrics` is served, when `rpc.metrics.listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsEndpoint::local_addr)
    }

    /// Re-registers every instance with the weight and metadata of `config`'s `rpc.server`
    /// section (after a configuration reload); returns the instances as registered now.
    pub async fn update_registration(&mut self, config: &RpcConfig) -> Result<&[ServiceInstance], RegistryError> {
        self.instances = self
            .server
            .update_registration(&Registration::from_config(&config.server))
            .await?;
        Ok(&self.instances)
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
/// and registers them. With `rpc.metrics.listen` set, also serves `/metrics` and records every
/// call with a [`MetricsLayer`] outside the builder's interceptors and layers.
pub async fn serve<L: ServerLayers>(config: &RpcConfig, builder: ServerBuilder<L>) -> Result<Provider, BootError> {
    let addr = format!("{}:{}", config.server.host, config.server.port);
    let listener = waypost_core::server::listen(&addr)
        .await
        .map_err(|source| BootError::Bind { addr, source })?;
    serve_listener(config, builder, listener).await
}

/// Like [`serve`] on a listener bound by the caller (who may need the port before building
/// the services).
pub async fn serve_listener<L: ServerLayers>(
    config: &RpcConfig,
    builder: ServerBuilder<L>,
    listener: TcpListener,
) -> Result<Provider, BootError> {
    let metrics = start_metrics(config).await?;
    let (builder, tls) = secure_server(config, builder).await?;
    let builder = match metrics {
        Some(_) => builder.outer_interceptor(MetricsLayer::new()),
        None => builder,
    };
    let registry = waypost_registry::connect(&config.registry).await?;
    let mut server = builder.serve_listener(listener);
    match server
        .register(registry.clone(), &Registration::from_config(&config.server))
        .await
    {
        Ok(instances) => Ok(Provider {
            server,
            registry,
            instances,
            metrics,
            tls,
        }),
        Err(e) => {
            server.shutdown().await;
            let _ = registry.close().await;
            Err(e.into())
        }
    }
}

/// Connects the configured registry and builds a [`Consumer`] over it.
///
/// With `rpc.registry.cache_file` set, a consumer also starts while the registry is
/// unreachable: from the instances in the file (with a warning), on a registry that keeps
/// trying to connect and replaces them with live data as soon as it does. A file that cannot
/// be used is ignored with a warning naming it, and the registry's error is returned.
///
/// With `rpc.metrics.listen` set, the consumer serves `/metrics` (sharing the endpoint of a
/// provider of the same process) and records every call with a [`MetricsLayer`].
pub async fn consumer(config: &RpcConfig) -> Result<Consumer, BootError> {
    let metrics = start_metrics(config).await?;
    let mut builder = Consumer::builder(config);
    if let Some(endpoint) = metrics {
        builder = builder.interceptor(MetricsLayer::new()).attach(endpoint);
    }
    let builder = secure_consumer(builder, config).await?;
    let unreachable = match waypost_registry::connect(&config.registry).await {
        Ok(registry) => return Ok(builder.build(registry).await?),
        Err(e @ (RegistryError::Unavailable { .. } | RegistryError::Timeout { .. })) => e,
        Err(e) => return Err(e.into()),
    };
    let Some(path) = &config.registry.cache_file else {
        return Err(unreachable.into());
    };
    let file = CacheFile::new(path, &config.registry.root);
    let load = file.clone();
    let cached = match tokio::task::spawn_blocking(move || load.load()).await {
        Ok(Ok(cached)) => cached,
        Ok(Err(e)) => {
            warn!(file = %path.display(), error = %e, "ignoring the cache file");
            return Err(unreachable.into());
        }
        Err(e) => {
            warn!(file = %path.display(), error = %e, "reading the cache file failed");
            return Err(unreachable.into());
        }
    };
    warn!(
        error = %unreachable,
        file = %path.display(),
        services = cached.services.len(),
        instances = cached.instance_count(),
        age_secs = now_ms().saturating_sub(cached.written_at_ms) / 1000,
        "the registry is unreachable: starting from the cache file; live data replaces it when the registry answers"
    );
    let registry = Arc::new(ReconnectingRegistry::new(config.registry.clone()));
    let consumer = builder.build(registry).await?;
    consumer.cache().seed(&cached);
    Ok(consumer)
}

/// Starts (or joins) the endpoint `rpc.metrics.listen` asks for; `None` when it is unset.
async fn start_metrics(config: &RpcConfig) -> Result<Option<MetricsEndpoint>, MetricsError> {
    match &config.metrics.listen {
        Some(listen) => Ok(Some(MetricsEndpoint::start(listen).await?)),
        None => Ok(None),
    }
}

/// Applies the consumer's security of `config` to `builder`: TLS to providers
/// (`rpc.consumer.tls`) and the bearer token sent with every call (`rpc.consumer.auth.token`).
/// [`consumer`] does this; tools that bring their own registry call it themselves.
pub async fn secure_consumer(mut builder: ConsumerBuilder, config: &RpcConfig) -> Result<ConsumerBuilder, BootError> {
    if let Some(tls) = &config.consumer.tls {
        #[cfg(feature = "tls")]
        {
            builder = builder.tls(ClientTls::load(tls).await?);
        }
        #[cfg(not(feature = "tls"))]
        return Err(tls_not_compiled("rpc.consumer.tls", tls));
    }
    if let Some(token) = config.consumer.auth.as_ref().and_then(|a| a.token.as_ref()) {
        builder = builder.interceptor(BearerToken::new(token.expose()));
    }
    Ok(builder)
}

/// The connection options of `rpc.consumer`, TLS included: for a direct channel to one
/// provider (a health probe, a benchmark). The bearer token is an interceptor: add
/// [`BearerToken`] to the channel when calls need it.
pub async fn client_options(config: &RpcConfig) -> Result<ClientOptions, BootError> {
    #[allow(unused_mut)] // set only with TLS
    let mut options = ClientOptions::from(&config.consumer);
    if let Some(tls) = &config.consumer.tls {
        #[cfg(feature = "tls")]
        {
            options.tls = Some(ClientTls::load(tls).await?);
        }
        #[cfg(not(feature = "tls"))]
        return Err(tls_not_compiled("rpc.consumer.tls", tls));
    }
    Ok(options)
}

/// The server's TLS (`rpc.server.tls`, kept to reload its files) and caller checks
/// (`rpc.server.auth`: bearer tokens, the mTLS allow-list), outside the builder's own
/// interceptors and layers.
async fn secure_server<L>(
    config: &RpcConfig,
    mut builder: ServerBuilder<L>,
) -> Result<(ServerBuilder<L>, Option<ServerTlsHandle>), BootError> {
    let tls = match &config.server.tls {
        #[cfg(feature = "tls")]
        Some(tls) => {
            let tls = ServerTls::load(tls).await?;
            builder = builder.tls(tls.clone());
            Some(tls)
        }
        #[cfg(not(feature = "tls"))]
        Some(tls) => return Err(tls_not_compiled("rpc.server.tls", tls)),
        None => None,
    };
    if let Some(auth) = &config.server.auth {
        if !auth.allow.is_empty() {
            builder = builder.outer_interceptor(AllowList::new(auth.allow.clone()));
        }
        if !auth.tokens.is_empty() {
            builder = builder.outer_interceptor(BearerTokens::new(auth.tokens.iter().map(|t| t.expose())));
        }
    }
    Ok((builder, tls))
}

/// What a provider keeps of its TLS to reload the files.
#[cfg(feature = "tls")]
type ServerTlsHandle = ServerTls;
/// Nothing: no TLS in this build.
#[cfg(not(feature = "tls"))]
type ServerTlsHandle = std::convert::Infallible;

/// The error for a TLS section in a build without TLS.
#[cfg(not(feature = "tls"))]
fn tls_not_compiled<T>(field: &str, _section: &T) -> BootError {
    BootError::NotCompiled(format!(
        "{field}: TLS is not compiled in; enable the `tls` feature of waypost"
    ))
}
