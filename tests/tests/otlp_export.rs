//! OpenTelemetry export against a real OTLP/gRPC receiver: the trace service of the
//! OpenTelemetry protocol definitions (opentelemetry-proto's generated tonic server) on a free
//! loopback port. A two-hop call made inside an application span arrives as one trace whose
//! spans link parent to child across both hops, named and attributed by the RPC semantic
//! conventions, with the ids the framework carries in `traceparent`; a failed call's span says
//! so.
//!
//! The only test of its binary: it installs the process's global subscriber.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span;
use tracing::Instrument;
use waypost::config::{RpcConfig, TelemetryConfig};
use waypost::server::ServerBuilder;
use waypost::Channel;
use waypost_tests::wait_until;

#[waypost::service(name = "Inner", version = "1.0")]
pub trait Inner {
    async fn leaf(&self) -> u32;
}

#[waypost::service(name = "Outer", version = "1.0")]
pub trait Outer {
    async fn branch(&self) -> u32;
}

/// The trace position the inner handler ran at, as the framework carries it.
type Seen = Arc<Mutex<Option<waypost::context::TraceContext>>>;

struct InnerImpl(Seen);

impl Inner for InnerImpl {
    async fn leaf(&self) -> u32 {
        *self.0.lock().unwrap() = waypost::context::current().trace().copied();
        7
    }
}

struct OuterImpl {
    inner: InnerClient,
}

impl Outer for OuterImpl {
    async fn branch(&self) -> u32 {
        self.inner.leaf().await.expect("the inner call") + 1
    }
}

/// A span as received, with the `service.name` of the resource it came with.
#[derive(Debug, Clone)]
struct Received {
    service_name: String,
    span: Span,
}

/// The OTLP trace service: keeps every span it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service_name = resource_spans
                .resource
                .as_ref()
                .and_then(|r| string_attribute(&r.attributes, "service.name"))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|span| Received {
                    service_name: service_name.clone(),
                    span,
                }));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    /// Serves the trace service on a free loopback port.
    async fn start() -> (Self, SocketAddr) {
        let receiver = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (receiver, addr)
    }

    fn named(&self, name: &str) -> Vec<Received> {
        let spans = self.spans.lock().unwrap();
        spans.iter().filter(|r| r.span.name == name).cloned().collect()
    }

    /// The one span of `trace` named `name` of `kind`.
    fn one(&self, trace: &[u8], name: &str, kind: SpanKind) -> Span {
        let found: Vec<Span> = self
            .named(name)
            .into_iter()
            .map(|r| r.span)
            .filter(|s| s.kind == kind as i32 && s.trace_id == trace)
            .collect();
        assert_eq!(found.len(), 1, "one {kind:?} span {name} in the trace: {found:?}");
        found.into_iter().next().unwrap()
    }
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

fn int_attribute(attributes: &[KeyValue], key: &str) -> Option<i64> {
    attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
            Value::IntValue(i) => Some(*i),
            _ => None,
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_hop_call_arrives_at_the_collector_as_one_linked_trace() {
    let (receiver, addr) = Receiver::start().await;
    let config = RpcConfig {
        name: "otlp-test".to_owned(),
        telemetry: TelemetryConfig {
            otlp_endpoint: Some(format!("http://{addr}")),
            ..TelemetryConfig::default()
        },
        ..RpcConfig::default()
    };
    let telemetry = waypost::telemetry::init(&config).expect("telemetry starts");

    let seen = Seen::default();
    let inner = ServerBuilder::new()
        .add_service(InnerServer::new(InnerImpl(seen.clone())))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let inner_addr = inner.local_addr().unwrap();
    let inner_client = InnerClient::new(Channel::direct(inner_addr.to_string()).unwrap()).unwrap();
    let outer = ServerBuilder::new()
        .add_service(OuterServer::new(OuterImpl { inner: inner_client }))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let outer_addr = outer.local_addr().unwrap();
    let client = OuterClient::new(Channel::direct(outer_addr.to_string()).unwrap()).unwrap();

    // The application's own span around the call: the trace's root.
    let answer = client.branch().instrument(tracing::info_span!("checkout")).await;
    assert_eq!(answer.unwrap(), 8);
    // A call that fails: no Outer service at the inner provider.
    let wrong = OuterClient::new(Channel::direct(inner_addr.to_string()).unwrap()).unwrap();
    let refused = wrong.branch().await.expect_err("no such service there");
    assert_eq!(refused.kind(), waypost::ErrorKind::ServiceNotFound);

    wait_until(Duration::from_secs(20), "every span reaches the receiver", || {
        let receiver = receiver.clone();
        let telemetry = &telemetry;
        async move {
            telemetry.flush().await;
            receiver.named("Outer/branch").len() == 3 && receiver.named("Inner/leaf").len() == 2
        }
    })
    .await;

    let root = receiver.named("checkout");
    assert_eq!(root.len(), 1, "the application span: {root:?}");
    let root = &root[0].span;
    let outer_called = receiver.one(&root.trace_id, "Outer/branch", SpanKind::Client);
    let outer_served = receiver.one(&root.trace_id, "Outer/branch", SpanKind::Server);
    let inner_called = receiver.one(&root.trace_id, "Inner/leaf", SpanKind::Client);
    let inner_served = receiver.one(&root.trace_id, "Inner/leaf", SpanKind::Server);

    // One trace, linked parent to child across both hops.
    for span in [&outer_called, &outer_served, &inner_called, &inner_served] {
        assert_eq!(hex(&span.trace_id), hex(&root.trace_id), "{span:?}");
    }
    assert!(root.parent_span_id.is_empty(), "the application span is the root");
    assert_eq!(outer_called.parent_span_id, root.span_id);
    assert_eq!(outer_served.parent_span_id, outer_called.span_id);
    assert_eq!(inner_called.parent_span_id, outer_served.span_id);
    assert_eq!(inner_served.parent_span_id, inner_called.span_id);

    // The ids the framework carries (traceparent, log fields) are the exported ones.
    let at_inner = seen.lock().unwrap().expect("the inner handler saw a trace");
    assert_eq!(at_inner.trace_id().to_string(), hex(&root.trace_id));
    assert_eq!(at_inner.span_id().to_string(), hex(&inner_served.span_id));
    assert_eq!(
        at_inner.parent_span_id().map(|p| p.to_string()),
        Some(hex(&inner_called.span_id))
    );

    // The RPC semantic conventions.
    for (span, service, method) in [
        (&outer_called, "Outer", "branch"),
        (&outer_served, "Outer", "branch"),
        (&inner_called, "Inner", "leaf"),
        (&inner_served, "Inner", "leaf"),
    ] {
        assert_eq!(
            string_attribute(&span.attributes, "rpc.system").as_deref(),
            Some("waypost")
        );
        assert_eq!(
            string_attribute(&span.attributes, "rpc.service").as_deref(),
            Some(service)
        );
        assert_eq!(
            string_attribute(&span.attributes, "rpc.method").as_deref(),
            Some(method)
        );
        assert_eq!(
            string_attribute(&span.attributes, "rpc.service.version").as_deref(),
            Some("1.0")
        );
        let status = span.status.clone().unwrap_or_default();
        assert_ne!(status.code, StatusCode::Error as i32, "{span:?}");
    }
    for (span, port) in [(&outer_called, outer_addr.port()), (&inner_called, inner_addr.port())] {
        assert_eq!(
            string_attribute(&span.attributes, "server.address").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(int_attribute(&span.attributes, "server.port"), Some(i64::from(port)));
    }
    assert!(receiver
        .named("Outer/branch")
        .iter()
        .all(|r| r.service_name == "otlp-test"));

    // The failed call: a root client span with status Error and the error's kind.
    let failed: Vec<Span> = receiver
        .named("Outer/branch")
        .into_iter()
        .map(|r| r.span)
        .filter(|s| s.trace_id != root.trace_id)
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let status = failed[0].status.clone().unwrap_or_default();
    assert_eq!(status.code, StatusCode::Error as i32);
    assert_eq!(
        string_attribute(&failed[0].attributes, "error.type").as_deref(),
        Some("service_not_found")
    );

    outer.shutdown().await;
    inner.shutdown().await;
    telemetry.shutdown().await;
}
