//! OpenTelemetry: call spans exported over OTLP/gRPC to a collector (Jaeger, Tempo, an
//! OpenTelemetry Collector). The `otel` feature.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = waypost::load_config("rpc.yaml")?;
//! // Log lines to stderr (RUST_LOG, `info` by default) and, when `rpc.telemetry.otlp_endpoint`
//! // or OTEL_EXPORTER_OTLP_ENDPOINT is set, spans to the collector.
//! let telemetry = waypost::telemetry::init(&config)?;
//! // ... serve and call ...
//! telemetry.shutdown().await; // sends what is still buffered
//! # Ok(()) }
//! ```
//!
//! # What is exported
//!
//! Every call makes a client span on the caller and a server span on the provider, named
//! `Service/method` with the OpenTelemetry RPC attributes: `rpc.system` (`waypost`),
//! `rpc.service`, `rpc.method`, `rpc.service.version`, on the client `server.address` and
//! `server.port` of the instance called, and on failure the span status `Error` with
//! `error.type` (the [`ErrorKind`](crate::ErrorKind) name). The application's own spans inside
//! a handler or around a call (at `info` and above) are exported too, in the same trace.
//! The framework's connection and registry spans are not.
//!
//! # Ids
//!
//! The framework carries a call's trace in `traceparent` (W3C). Once export is on, each call
//! span takes the ids OpenTelemetry gives it ([`waypost_core::context::export`]): the
//! `traceparent` a call sends names its exported client span, the server's span is that span's
//! child, and a call the handler makes is the server span's child, so the collector shows one
//! trace across every hop, with the ids that log lines carry (`trace_id`, `span_id`).
//!
//! # Configuration
//!
//! `rpc.telemetry` in the YAML file ([`TelemetryConfig`]), with the standard variables taking
//! precedence: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` (either
//! turns export on), `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_BSP_*` for batching; `OTEL_SDK_DISABLED=true` turns export off.
//!
//! # Cost
//!
//! With export off nothing is installed: a call asks once per span whether an exporter is,
//! and no OpenTelemetry code runs. With it on, spans are batched and sent from a thread of
//! their own; a collector that is down loses spans, never calls.

use std::env;

use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceState, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{filter_fn, EnvFilter, LevelFilter};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use waypost_core::config::{RpcConfig, TelemetryConfig};
use waypost_core::context::export::{install_span_export, CallEnd, CallSpan, SpanExport, SpanKind};
use waypost_core::context::{SpanId, TraceContext, TraceId};

/// The `rpc.system` attribute of every call span.
pub const RPC_SYSTEM: &str = "waypost";

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (a malformed endpoint or header variable).
    #[error("cannot build the OTLP exporter for {endpoint}: {source}")]
    Exporter {
        /// The endpoint it was built for, and where that came from.
        endpoint: String,
        /// What failed.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// A global tracing subscriber was already installed.
    #[error("cannot install the tracing subscriber: {0}")]
    Subscriber(#[source] tracing_subscriber::util::TryInitError),
}

/// The running span export: flush it with [`Telemetry::flush`], stop it with
/// [`Telemetry::shutdown`] (dropping it stops it too, without waiting).
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// Where spans go and where that was set; `None` when export is off.
    endpoint: Option<String>,
}

impl Telemetry {
    /// Starts span export as `config.telemetry` and the `OTEL_*` variables say; `None` when
    /// they turn it off (no endpoint anywhere, or `OTEL_SDK_DISABLED=true`). Installs the
    /// process's span exporter seam (see the module documentation); the spans reach the
    /// collector through [`Telemetry::layer`] on the process's subscriber.
    ///
    /// Needs a tokio runtime: the exporter's connection runs on it.
    pub fn start(config: &RpcConfig) -> Result<Option<Self>, TelemetryError> {
        let Some((endpoint, origin)) = endpoint(&config.telemetry) else {
            return Ok(None);
        };
        let described = format!("{endpoint} (from {origin})");
        let mut exporter = SpanExporter::builder().with_tonic();
        if origin == "rpc.telemetry.otlp_endpoint" {
            exporter = exporter.with_endpoint(endpoint.clone());
        }
        let exporter = exporter.build().map_err(|source| TelemetryError::Exporter {
            endpoint: described.clone(),
            source,
        })?;
        let mut resource = Resource::builder();
        if env::var_os("OTEL_SERVICE_NAME").is_none() {
            let name = config.telemetry.service_name.as_deref().unwrap_or(&config.name);
            resource = resource.with_service_name(name.to_owned());
        }
        let mut provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build());
        if env::var_os("OTEL_TRACES_SAMPLER").is_none() {
            provider = provider.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.telemetry.sampling_ratio,
            ))));
        }
        let provider = provider.build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        install_span_export(Box::new(OtelSpans));
        Ok(Some(Self {
            endpoint: Some(described),
            provider: Some(provider),
        }))
    }

    /// The layer that hands spans to the exporter, for an application that builds its own
    /// subscriber: call spans and the application's spans at `info` and above, whatever the
    /// log filter says. `None` when export is off (an `Option` of a layer is a layer).
    pub fn layer<S>(&self) -> Option<impl Layer<S> + use<S>>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let tracer = self.provider.as_ref()?.tracer("waypost");
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_threads(false)
                .with_location(false)
                .with_target(false)
                .with_tracked_inactivity(false)
                .with_filter(filter_fn(|meta| {
                    meta.level() <= &tracing::Level::INFO
                        && (!meta.is_span() || exported_span(meta.target(), meta.name()))
                })),
        )
    }

    /// Sends the spans buffered so far.
    pub async fn flush(&self) {
        if let Some(provider) = self.provider.clone() {
            // Blocks until the exporter's thread has sent them, over a connection that runs on
            // this runtime: off its worker threads.
            let flushed = tokio::task::spawn_blocking(move || provider.force_flush()).await;
            if let Ok(Err(e)) = flushed {
                tracing::warn!(error = %e, "flushing spans failed");
            }
        }
    }

    /// Sends what is buffered and stops the export.
    pub async fn shutdown(mut self) {
        if let Some(provider) = self.provider.take() {
            let stopped = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = stopped {
                tracing::warn!(error = %e, "stopping the span export failed");
            }
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(move || provider.shutdown())),
                Err(_) => drop(provider.shutdown()),
            }
        }
    }
}

/// Installs the process's tracing subscriber: log lines to stderr, filtered by `RUST_LOG`
/// (`info` when unset), and span export when configured (see [`Telemetry::start`]). Returns
/// the export, which the application keeps and shuts down on exit.
pub fn init(config: &RpcConfig) -> Result<Telemetry, TelemetryError> {
    let telemetry = Telemetry::start(config)?.unwrap_or(Telemetry {
        provider: None,
        endpoint: None,
    });
    let logs = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    let export = telemetry.layer();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(logs),
        )
        .with(export)
        .try_init()
        .map_err(TelemetryError::Subscriber)?;
    match &telemetry.endpoint {
        Some(endpoint) => tracing::info!(%endpoint, "exporting spans over OTLP"),
        None => tracing::debug!("span export is off"),
    }
    Ok(telemetry)
}

/// The endpoint export goes to and where it was set; `None` when export is off.
fn endpoint(config: &TelemetryConfig) -> Option<(String, &'static str)> {
    if env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return None;
    }
    for var in ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"] {
        if let Some(value) = env::var(var).ok().filter(|v| !v.trim().is_empty()) {
            return Some((value, var));
        }
    }
    config.otlp_endpoint.clone().map(|e| (e, "rpc.telemetry.otlp_endpoint"))
}

/// Whether a span of `target` named `name` is exported: the application's spans and the
/// framework's call spans, not its connection, discovery and registry spans.
fn exported_span(target: &str, name: &str) -> bool {
    let framework = ["waypost_core", "waypost_registry", "waypost::"]
        .iter()
        .any(|prefix| target.starts_with(prefix));
    !framework || matches!(name, "rpc_call" | "rpc_client_call")
}

/// The span exporter seam, on tracing-opentelemetry.
struct OtelSpans;

impl SpanExport for OtelSpans {
    fn start(&self, span: &tracing::Span, call: &CallSpan<'_>) -> TraceContext {
        let (service, version) = call.service.rsplit_once(':').unwrap_or((call.service, ""));
        span.record("otel.name", format!("{service}/{}", call.method).as_str());
        span.record(
            "otel.kind",
            match call.kind {
                SpanKind::Client => "client",
                _ => "server",
            },
        );
        span.set_attribute("rpc.system", RPC_SYSTEM);
        span.set_attribute("rpc.service", service.to_owned());
        span.set_attribute("rpc.method", call.method.to_owned());
        if !version.is_empty() {
            span.set_attribute("rpc.service.version", version.to_owned());
        }
        // A server span is the child of the caller's span, whatever span the connection runs
        // in; a client span is the child of the span it is made in (a handler's, the
        // application's), else of the trace its metadata names.
        // The span this client span is made in, if it is exported (asked once).
        let enclosing = match call.kind {
            SpanKind::Client => {
                Some(tracing::Span::current().context().span().span_context().clone()).filter(SpanContext::is_valid)
            }
            _ => None,
        };
        if enclosing.is_none() {
            let _ = span.set_parent(remote_parent(call.trace.as_ref()));
        }
        let exported = span.context();
        let ids = exported.span().span_context().clone();
        let parent = match &enclosing {
            Some(enclosing) => Some(SpanId(u64::from_be_bytes(enclosing.span_id().to_bytes()))),
            None => call.trace.as_ref().and_then(TraceContext::parent_span_id),
        };
        TraceContext::from_parts(
            TraceId(u128::from_be_bytes(ids.trace_id().to_bytes())),
            SpanId(u64::from_be_bytes(ids.span_id().to_bytes())),
            parent,
            ids.is_sampled(),
        )
        // Not exported after all (the layer is not on this subscriber): the framework's own.
        .or(call.trace)
        .unwrap_or_else(TraceContext::new_root)
    }

    fn peer(&self, span: &tracing::Span, address: &str) {
        let (host, port) = address.rsplit_once(':').unwrap_or((address, ""));
        span.set_attribute("server.address", host.trim_matches(['[', ']']).to_owned());
        if let Ok(port) = port.parse::<i64>() {
            span.set_attribute("server.port", port);
        }
    }

    fn end(&self, span: &tracing::Span, end: CallEnd<'_>) {
        if let CallEnd::Failed { kind, message } = end {
            span.set_attribute("error.type", kind);
            span.set_status(opentelemetry::trace::Status::error(message.to_owned()));
        }
    }
}

/// The context whose span is the caller's (the parent `trace` names), or an empty one that
/// makes the span a root.
fn remote_parent(trace: Option<&TraceContext>) -> Context {
    let Some((trace, parent)) = trace.and_then(|t| t.parent_span_id().map(|p| (t, p))) else {
        return Context::new();
    };
    let flags = if trace.is_sampled() {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    Context::new().with_remote_span_context(SpanContext::new(
        opentelemetry::trace::TraceId::from(trace.trace_id().0),
        opentelemetry::trace::SpanId::from(parent.0),
        flags,
        true,
        TraceState::default(),
    ))
}
