//! Trace propagation over real TCP: the call spans of both sides carry one trace across two
//! hops.
//!
//! The only test of its binary: a scoped subscriber sees every callsite only when no other
//! thread of the process hit them first (tracing caches a callsite's interest).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;
use waypost_core::server::ServerBuilder;
use waypost_core::Channel;

#[waypost_core::service(name = "Inner", version = "1.0")]
pub trait Inner {
    async fn leaf(&self) -> u32;
}

#[waypost_core::service(name = "Outer", version = "1.0")]
pub trait Outer {
    async fn branch(&self) -> u32;
}

struct InnerImpl;

impl Inner for InnerImpl {
    async fn leaf(&self) -> u32 {
        tracing::info!("leaf handler");
        7
    }
}

struct OuterImpl {
    inner: InnerClient,
}

impl Outer for OuterImpl {
    async fn branch(&self) -> u32 {
        tracing::info!("branch handler");
        self.inner.leaf().await.expect("the inner call") + 1
    }
}

/// The fields of one span or event.
type Fields = HashMap<String, String>;

/// A log line's message and the trace id of the span it was logged in.
type LoggedEvent = (String, Option<String>);

/// What the capture layer saw: spans by name with their fields, and each event's message with
/// the `trace_id` of the span it was logged in.
#[derive(Clone, Default)]
struct Captured {
    spans: Arc<Mutex<Vec<(String, Fields)>>>,
    events: Arc<Mutex<Vec<LoggedEvent>>>,
}

impl Captured {
    fn spans(&self, name: &str) -> Vec<Fields> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, f)| f.clone())
            .collect()
    }

    fn span(&self, name: &str, service: &str) -> Fields {
        let mut found: Vec<Fields> = self
            .spans(name)
            .into_iter()
            .filter(|f| f.get("service").map(String::as_str) == Some(service))
            .collect();
        assert_eq!(found.len(), 1, "one {name} span for {service}: {found:?}");
        found.remove(0)
    }

    fn event_trace(&self, message: &str) -> Option<String> {
        let events = self.events.lock().unwrap();
        let (_, trace) = events
            .iter()
            .find(|(m, _)| m == message)
            .unwrap_or_else(|| panic!("no event {message:?}"));
        trace.clone()
    }
}

struct FieldVisitor<'a>(&'a mut Fields);

impl Visit for FieldVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// Index of a span's entry in `Captured::spans`, kept in the span's extensions.
struct Slot(usize);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Captured {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        attrs.record(&mut FieldVisitor(&mut fields));
        let mut spans = self.spans.lock().unwrap();
        spans.push((attrs.metadata().name().to_owned(), fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Slot(spans.len() - 1));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let Some(&Slot(slot)) = span.extensions().get::<Slot>() else {
            return;
        };
        values.record(&mut FieldVisitor(&mut self.spans.lock().unwrap()[slot].1));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut FieldVisitor(&mut fields));
        let Some(message) = fields.remove("message") else {
            return;
        };
        let spans = self.spans.lock().unwrap();
        let trace = ctx.event_scope(event).and_then(|scope| {
            scope
                .filter_map(|span| span.extensions().get::<Slot>().map(|s| s.0))
                .find_map(|slot| spans[slot].1.get("trace_id").cloned())
        });
        drop(spans);
        self.events.lock().unwrap().push((message, trace));
    }
}

/// One trace from the consumer's call through the outer provider to the inner one: each
/// server span is the child of the client span that called it, and the handlers' log lines
/// carry the trace id.
#[tokio::test(flavor = "current_thread")]
async fn one_trace_id_spans_consumer_and_providers_across_two_hops() {
    // Current-thread runtime: every task of both servers and the client runs on this thread,
    // under this subscriber.
    let captured = Captured::default();
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));

    let inner = ServerBuilder::new()
        .add_service(InnerServer::new(InnerImpl))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let inner_client = InnerClient::new(Channel::direct(inner.local_addr().unwrap().to_string()).unwrap()).unwrap();
    let outer = ServerBuilder::new()
        .add_service(OuterServer::new(OuterImpl { inner: inner_client }))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = OuterClient::new(Channel::direct(outer.local_addr().unwrap().to_string()).unwrap()).unwrap();

    assert_eq!(client.branch().await.unwrap(), 8);

    let consumer = captured.span("rpc_client_call", "Outer:1.0");
    let outer_served = captured.span("rpc_call", "Outer:1.0");
    let outer_calls = captured.span("rpc_client_call", "Inner:1.0");
    let inner_served = captured.span("rpc_call", "Inner:1.0");
    let trace = consumer
        .get("trace_id")
        .cloned()
        .expect("the consumer's span has a trace id");
    assert_eq!(trace.len(), 32, "{trace}");
    assert_eq!(
        consumer.get("parent_span_id"),
        None,
        "the consumer's call starts the trace"
    );
    for (what, span) in [
        ("outer provider", &outer_served),
        ("outer's call", &outer_calls),
        ("inner provider", &inner_served),
    ] {
        assert_eq!(span.get("trace_id"), Some(&trace), "{what}: {span:?}");
    }
    assert_eq!(outer_served.get("parent_span_id"), consumer.get("span_id"));
    assert_eq!(outer_calls.get("parent_span_id"), outer_served.get("span_id"));
    assert_eq!(inner_served.get("parent_span_id"), outer_calls.get("span_id"));
    assert_eq!(outer_served.get("method").map(String::as_str), Some("branch"));
    assert_eq!(captured.event_trace("branch handler"), Some(trace.clone()));
    assert_eq!(captured.event_trace("leaf handler"), Some(trace));

    outer.shutdown().await;
    inner.shutdown().await;
}
