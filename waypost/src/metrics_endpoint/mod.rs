//! The Prometheus endpoint that `rpc.metrics.listen` starts.
//!
//! [`MetricsEndpoint::start`] installs a Prometheus recorder as the process's `metrics`
//! recorder (once per process; call durations get histogram buckets from
//! [`waypost_core::metrics::DURATION_BUCKETS`]) and serves its text format over HTTP/1.1 at
//! `GET /metrics`. The server is deliberately small: one request per connection, a request
//! head of at most 8 KiB read within 5 seconds, `Connection: close`. Everything else answers
//! 404 (another path) or 405 (another method).
//!
//! A provider and a consumer of one process configured with the same address share one
//! endpoint: each holds a [`MetricsEndpoint`], and the endpoint stops (its listener closes, its
//! tasks end) when the last holder drops it. The recorder stays installed: the `metrics` facade
//! has no way to remove one.
//!
//! Without the `prometheus` feature [`MetricsEndpoint::start`] fails with
//! [`MetricsError::NotCompiled`] (and [`crate::load_config`] refuses a configuration that
//! sets `rpc.metrics.listen`).

use std::io;

#[cfg(feature = "prometheus")]
mod server;

#[cfg(feature = "prometheus")]
pub use server::MetricsEndpoint;

#[cfg(not(feature = "prometheus"))]
pub use disabled::MetricsEndpoint;

/// The endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The listen address could not be bound.
    #[error("rpc.metrics.listen: cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `rpc.metrics.listen` is set, but this build has no Prometheus endpoint.
    #[error("rpc.metrics.listen: the Prometheus endpoint is not compiled in; enable the `prometheus` feature of waypost-registry")]
    NotCompiled,
    /// The process already has another `metrics` recorder.
    #[error("rpc.metrics.listen: the process already has a metrics recorder that is not this crate's Prometheus recorder; serve that one instead")]
    RecorderTaken,
}

#[cfg(not(feature = "prometheus"))]
mod disabled {
    use std::convert::Infallible;
    use std::net::SocketAddr;

    use super::MetricsError;

    /// A running `/metrics` endpoint; none can exist without the `prometheus` feature.
    #[derive(Debug, Clone)]
    pub struct MetricsEndpoint {
        never: Infallible,
    }

    impl MetricsEndpoint {
        /// Fails: this build has no Prometheus endpoint.
        pub async fn start(listen: &str) -> Result<Self, MetricsError> {
            let _ = listen;
            Err(MetricsError::NotCompiled)
        }

        /// The address served.
        pub fn local_addr(&self) -> SocketAddr {
            match self.never {}
        }
    }
}
