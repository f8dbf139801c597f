//! Metrics: what the framework counts, through the `metrics` facade.
//!
//! Every figure goes to the process's `metrics` recorder; with none installed recording is a
//! no-op. `rpc.metrics.listen` makes waypost-registry install a Prometheus recorder and serve it at
//! `/metrics`; any other `metrics` recorder (statsd, OpenTelemetry, ...) works the same way,
//! installed by the application before it builds its servers and clients.
//!
//! Per-call figures come from [`MetricsLayer`], an [`Interceptor`](crate::interceptor::Interceptor) like any
//! other: add it to a server or a client (the bootstraps of waypost-registry add it when metrics
//! are configured). Events away from the call path (retries, ejections, watch events, lease
//! state...) are recorded where they happen.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `rpc_server_calls_total` | counter | service, method, outcome |
//! | `rpc_server_call_duration_seconds` | histogram | service, method |
//! | `rpc_server_calls_in_flight` | gauge | |
//! | `rpc_server_rejected_total` | counter | reason (an error kind: `overloaded`, `shutting_down`, `service_not_found`, `method_not_found`, `invalid_metadata`, `protocol`, `unsupported`) |
//! | `rpc_server_limited_total` | counter | service, method, scope (`service`, `method`), limit (`concurrency`, `rate`) |
//! | `rpc_server_shed_total` | counter | service, method (calls refused by adaptive load shedding) |
//! | `rpc_server_connections` | gauge | |
//! | `rpc_server_connection_limit_reached_total` | counter | |
//! | `rpc_server_tls_handshake_failures_total` | counter | |
//! | `rpc_client_calls_total` | counter | service, method, outcome |
//! | `rpc_client_call_duration_seconds` | histogram | service, method |
//! | `rpc_client_calls_in_flight` | gauge | |
//! | `rpc_client_retries_total` | counter | service |
//! | `rpc_client_failovers_total` | counter | service |
//! | `rpc_client_hedges_total` | counter | service |
//! | `rpc_client_retry_budget_exhausted_total` | counter | service |
//! | `rpc_client_ejections_total` | counter | instance |
//! | `rpc_client_breaker_refusals_total` | counter | instance (attempts the circuit breaker kept from it) |
//! | `rpc_client_breaker_trips_total` | counter | instance (times its circuit breaker opened) |
//! | `rpc_server_streams_total` | counter | service, method, outcome |
//! | `rpc_client_streams_total` | counter | service, method |
//! | `rpc_stream_messages_sent_total` | counter | side (`server`, `client`) |
//! | `rpc_stream_messages_received_total` | counter | side |
//! | `rpc_discovery_watch_events_total` | counter | service |
//! | `rpc_discovery_rewatches_total` | counter | service |
//! | `rpc_discovery_instances` | gauge | service |
//! | `rpc_registry_session_up` | gauge | backend (1: the etcd lease is kept alive / the ZooKeeper session is connected) |
//! | `rpc_registry_reregistrations_total` | counter | backend |
//!
//! `outcome` is `ok`, `application_error`, `cancelled` (server: the caller left) or the
//! [`ErrorKind`](crate::ErrorKind) of a failure in snake case (`timeout`, `overloaded`, ...).
//!
//! Label values are bounded: services and methods a server serves (requests for others are
//! counted by `rpc_server_rejected_total` without their names) or a client was generated for,
//! error kinds, and instance addresses only on the ejection counter.

mod layer;

pub use layer::MetricsLayer;

use crate::interceptor::Outcome;
use crate::protocol::Status;

/// Calls a server ended, by service, method and outcome.
pub const SERVER_CALLS: &str = "rpc_server_calls_total";
/// How long a server took per call, by service and method.
pub const SERVER_CALL_DURATION: &str = "rpc_server_call_duration_seconds";
/// Calls a server is running.
pub const SERVER_IN_FLIGHT: &str = "rpc_server_calls_in_flight";
/// Requests a server answered without running them, by reason.
pub const SERVER_REJECTED: &str = "rpc_server_rejected_total";
/// Calls a service's or method's limit refused, by service, method, scope and limit.
pub const SERVER_LIMITED: &str = "rpc_server_limited_total";
/// Calls refused by adaptive load shedding, by service and method.
pub const SERVER_SHED: &str = "rpc_server_shed_total";
/// Connections a server has open.
pub const SERVER_CONNECTIONS: &str = "rpc_server_connections";
/// Times a server found `max_connections` open (new connections wait in the listen backlog).
pub const SERVER_CONNECTION_LIMIT_REACHED: &str = "rpc_server_connection_limit_reached_total";
/// TLS handshakes a server failed (or refused: a plain-text client on a TLS port).
pub const SERVER_TLS_HANDSHAKE_FAILURES: &str = "rpc_server_tls_handshake_failures_total";
/// Calls a client ended, by service, method and outcome.
pub const CLIENT_CALLS: &str = "rpc_client_calls_total";
/// How long a client's calls took, retries included, by service and method.
pub const CLIENT_CALL_DURATION: &str = "rpc_client_call_duration_seconds";
/// Calls a client is making.
pub const CLIENT_IN_FLIGHT: &str = "rpc_client_calls_in_flight";
/// Rounds a client retried, by service.
pub const CLIENT_RETRIES: &str = "rpc_client_retries_total";
/// Attempts a client moved to another instance, by service.
pub const CLIENT_FAILOVERS: &str = "rpc_client_failovers_total";
/// Hedged attempts a client started (a slow call sent to a further instance), by service.
pub const CLIENT_HEDGES: &str = "rpc_client_hedges_total";
/// Retries or fail-overs the retry budget refused, by service.
pub const CLIENT_BUDGET_EXHAUSTED: &str = "rpc_client_retry_budget_exhausted_total";
/// Instances ejected after failures, by instance address.
pub const CLIENT_EJECTIONS: &str = "rpc_client_ejections_total";
/// Times a circuit breaker opened (its first refusal after accepting), by instance.
pub const CLIENT_BREAKER_TRIPS: &str = "rpc_client_breaker_trips_total";
/// Attempts a circuit breaker refused without sending, by instance.
pub const CLIENT_BREAKER_REFUSALS: &str = "rpc_client_breaker_refusals_total";
/// Streams a server ended, by service, method and outcome.
pub const SERVER_STREAMS: &str = "rpc_server_streams_total";
/// Streams a client opened, by service and method.
pub const CLIENT_STREAMS: &str = "rpc_client_streams_total";
/// Stream items sent, by side.
pub const STREAM_MESSAGES_SENT: &str = "rpc_stream_messages_sent_total";
/// Stream items received and read, by side.
pub const STREAM_MESSAGES_RECEIVED: &str = "rpc_stream_messages_received_total";
/// Watch events applied to the discovery cache, by service.
pub const DISCOVERY_WATCH_EVENTS: &str = "rpc_discovery_watch_events_total";
/// Watches of a service started again after one ended, by service.
pub const DISCOVERY_REWATCHES: &str = "rpc_discovery_rewatches_total";
/// Instances the discovery cache holds, by service.
pub const DISCOVERY_INSTANCES: &str = "rpc_discovery_instances";
/// 1 while a backend's registrations are kept alive (etcd lease, ZooKeeper session), by backend.
pub const REGISTRY_SESSION_UP: &str = "rpc_registry_session_up";
/// Instances a backend registered again (new lease, new session, key found missing), by backend.
pub const REGISTRY_REREGISTRATIONS: &str = "rpc_registry_reregistrations_total";

/// Gives the process's recorder the help text of every metric above (Prometheus `# HELP`
/// lines). An exporter calls it once after installing its recorder.
pub fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(SERVER_CALLS, "Calls a server ended, by service, method and outcome");
    describe_histogram!(SERVER_CALL_DURATION, Unit::Seconds, "Server time per call");
    describe_gauge!(SERVER_IN_FLIGHT, "Calls a server is running");
    describe_counter!(
        SERVER_REJECTED,
        "Requests a server answered without running them, by reason"
    );
    describe_gauge!(SERVER_CONNECTIONS, "Connections a server has open");
    describe_counter!(SERVER_LIMITED, "Calls refused by a service's or method's limit");
    describe_counter!(
        SERVER_CONNECTION_LIMIT_REACHED,
        "Times a server had max_connections open"
    );
    describe_counter!(
        SERVER_TLS_HANDSHAKE_FAILURES,
        "TLS handshakes a server failed or refused"
    );
    describe_counter!(CLIENT_CALLS, "Calls a client ended, by service, method and outcome");
    describe_histogram!(
        CLIENT_CALL_DURATION,
        Unit::Seconds,
        "Client time per call, retries included"
    );
    describe_gauge!(CLIENT_IN_FLIGHT, "Calls a client is making");
    describe_counter!(CLIENT_RETRIES, "Rounds a client retried, by service");
    describe_counter!(
        CLIENT_FAILOVERS,
        "Attempts a client moved to another instance, by service"
    );
    describe_counter!(CLIENT_BUDGET_EXHAUSTED, "Retries the retry budget refused, by service");
    describe_counter!(CLIENT_HEDGES, "Hedged attempts started, by service");
    describe_counter!(CLIENT_EJECTIONS, "Instances ejected after failures, by instance");
    describe_counter!(SERVER_STREAMS, "Streams a server ended, by service, method and outcome");
    describe_counter!(CLIENT_STREAMS, "Streams a client opened, by service and method");
    describe_counter!(STREAM_MESSAGES_SENT, "Stream items sent, by side");
    describe_counter!(STREAM_MESSAGES_RECEIVED, "Stream items received and read, by side");
    describe_counter!(
        DISCOVERY_WATCH_EVENTS,
        "Watch events applied to the discovery cache, by service"
    );
    describe_counter!(DISCOVERY_REWATCHES, "Watches started again after one ended, by service");
    describe_gauge!(DISCOVERY_INSTANCES, "Instances in the discovery cache, by service");
    describe_gauge!(REGISTRY_SESSION_UP, "1 while registrations are kept alive, by backend");
    describe_counter!(REGISTRY_REREGISTRATIONS, "Instances registered again, by backend");
}

/// Histogram bucket bounds (seconds) for the call durations: 50 µs to 10 s.
pub const DURATION_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `outcome` label of a call's end.
pub fn outcome_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Ok => "ok",
        Outcome::ApplicationError => "application_error",
        Outcome::Cancelled => "cancelled",
        Outcome::Error(kind) => kind.as_str(),
    }
}

/// A `scope` (`service` or `method`) `limit` (`concurrency`, `rate`) refused a call of
/// `service`/`method`.
pub(crate) fn server_limited(service: &str, method: &str, scope: &'static str, limit: &'static str) {
    ::metrics::counter!(SERVER_LIMITED, "service" => service.to_owned(), "method" => method.to_owned(), "scope" => scope, "limit" => limit).increment(1);
}

/// Load shedding refused a call of `service`/`method`.
pub(crate) fn server_shed(service: &str, method: &str) {
    ::metrics::counter!(SERVER_SHED, "service" => service.to_owned(), "method" => method.to_owned()).increment(1);
}

/// A server's stream of `service`/`method` ended with `outcome`.
pub(crate) fn server_stream_ended(service: &str, method: &str, outcome: Outcome) {
    ::metrics::counter!(SERVER_STREAMS, "service" => service.to_owned(), "method" => method.to_owned(), "outcome" => outcome_label(outcome)).increment(1);
}

/// A client opened a stream of `service`/`method`.
pub(crate) fn client_stream_opened(service: &'static str, method: &'static str) {
    ::metrics::counter!(CLIENT_STREAMS, "service" => service, "method" => method).increment(1);
}

/// `side` sent `n` stream items.
pub(crate) fn stream_messages_sent(side: &'static str, n: u64) {
    ::metrics::counter!(STREAM_MESSAGES_SENT, "side" => side).increment(n);
}

/// `side` read `n` stream items.
pub(crate) fn stream_messages_received(side: &'static str, n: u64) {
    ::metrics::counter!(STREAM_MESSAGES_RECEIVED, "side" => side).increment(n);
}

/// A server answered a request with `status` without running it.
pub(crate) fn server_rejected(status: Status) {
    let reason = outcome_label(Outcome::from_status(status));
    ::metrics::counter!(SERVER_REJECTED, "reason" => reason).increment(1);
}

/// A server opened (`+1`) or closed (`-1`) a connection.
pub(crate) fn server_connections(delta: f64) {
    ::metrics::gauge!(SERVER_CONNECTIONS).increment(delta);
}

/// A server found its connection limit reached.
pub(crate) fn server_connection_limit_reached() {
    ::metrics::counter!(SERVER_CONNECTION_LIMIT_REACHED).increment(1);
}

/// A server's TLS handshake failed.
#[cfg(feature = "tls")]
pub(crate) fn tls_handshake_failed() {
    ::metrics::counter!(SERVER_TLS_HANDSHAKE_FAILURES).increment(1);
}

/// A client retries a round of a call to `service`.
pub(crate) fn client_retry(service: &str) {
    ::metrics::counter!(CLIENT_RETRIES, "service" => service.to_owned()).increment(1);
}

/// A client moves an attempt to another instance of `service`.
pub(crate) fn client_failover(service: &str) {
    ::metrics::counter!(CLIENT_FAILOVERS, "service" => service.to_owned()).increment(1);
}

/// A client started a hedged attempt of a call to `service`.
pub(crate) fn client_hedge(service: &str) {
    ::metrics::counter!(CLIENT_HEDGES, "service" => service.to_owned()).increment(1);
}

/// The retry budget of `service` refused a retry.
pub(crate) fn client_budget_exhausted(service: &str) {
    ::metrics::counter!(CLIENT_BUDGET_EXHAUSTED, "service" => service.to_owned()).increment(1);
}

/// A client ejected `instance`.
pub(crate) fn client_ejection(instance: &str) {
    ::metrics::counter!(CLIENT_EJECTIONS, "instance" => instance.to_owned()).increment(1);
}

/// The circuit breaker of `instance` opened.
pub(crate) fn client_breaker_trip(instance: &str) {
    ::metrics::counter!(CLIENT_BREAKER_TRIPS, "instance" => instance.to_owned()).increment(1);
}

/// The circuit breaker of `instance` refused an attempt.
pub(crate) fn client_breaker_refusal(instance: &str) {
    ::metrics::counter!(CLIENT_BREAKER_REFUSALS, "instance" => instance.to_owned()).increment(1);
}

/// The discovery cache applied a watch event of `service`, which now has `instances`.
pub(crate) fn discovery_instances(service: &str, instances: usize) {
    ::metrics::gauge!(DISCOVERY_INSTANCES, "service" => service.to_owned()).set(instances as f64);
}

/// The discovery cache applied a watch event of `service`.
pub(crate) fn discovery_watch_event(service: &str) {
    ::metrics::counter!(DISCOVERY_WATCH_EVENTS, "service" => service.to_owned()).increment(1);
}

/// The discovery cache watches `service` again.
pub(crate) fn discovery_rewatch(service: &str) {
    ::metrics::counter!(DISCOVERY_REWATCHES, "service" => service.to_owned()).increment(1);
}

/// For registry backends: whether `backend`'s registrations are kept alive (etcd lease
/// keep-alive answered, ZooKeeper session connected).
pub fn registry_session_up(backend: &'static str, up: bool) {
    ::metrics::gauge!(REGISTRY_SESSION_UP, "backend" => backend).set(if up { 1.0 } else { 0.0 });
}

/// For registry backends: `backend` registered `instances` again.
pub fn registry_reregistered(backend: &'static str, instances: usize) {
    ::metrics::counter!(REGISTRY_REREGISTRATIONS, "backend" => backend).increment(instances as u64);
}
