//! [`MetricsLayer`]: calls, durations and calls in flight, on either side of a call.
//!
//! The handles of each (service, method) are registered with the recorder once, at the
//! method's first call, and kept in maps looked up by the context's own bytes: recording a
//! call is two map lookups, a counter increment and a histogram sample, with no allocation. Handles are looked up lazily so that
//! a recorder installed after the layer was built still receives everything.

use std::sync::{Mutex, OnceLock, PoisonError};

use ::metrics::{Counter, Gauge, Histogram, SharedString};
use bytes::Bytes;
use dashmap::DashMap;

use super::{
    outcome_label, CLIENT_CALLS, CLIENT_CALL_DURATION, CLIENT_IN_FLIGHT, SERVER_CALLS, SERVER_CALL_DURATION,
    SERVER_IN_FLIGHT,
};
use crate::context::{CallContext, Side};
use crate::error::RpcError;
use crate::interceptor::{Interceptor, Outcome};

/// An [`Interceptor`] that records every call it sees: `rpc_{server,client}_calls_total` by service, method and
/// outcome, `rpc_{server,client}_call_duration_seconds` by service and method, and
/// `rpc_{server,client}_calls_in_flight` (see [the module docs](super)). One instance may
/// serve both sides of a process.
#[derive(Debug, Default)]
pub struct MetricsLayer {
    server: Table,
    client: Table,
}

impl MetricsLayer {
    /// An interceptor recording into the process's `metrics` recorder.
    pub fn new() -> Self {
        Self::default()
    }

    fn table(&self, side: Side) -> Option<(&Table, &'static Names)> {
        match side {
            Side::Server => Some((&self.server, &SERVER)),
            Side::Client => Some((&self.client, &CLIENT)),
            _ => None,
        }
    }
}

impl Interceptor for MetricsLayer {
    fn on_request(&self, ctx: &mut CallContext) -> Result<(), RpcError> {
        if let Some((table, names)) = self.table(ctx.side()) {
            table.in_flight(names).increment(1.0);
        }
        Ok(())
    }

    fn on_response(&self, ctx: &CallContext, outcome: Outcome) {
        let Some((table, names)) = self.table(ctx.side()) else {
            return;
        };
        table.in_flight(names).decrement(1.0);
        table.record(names, ctx, outcome);
    }
}

/// The metric names of one side.
#[derive(Debug)]
struct Names {
    calls: &'static str,
    duration: &'static str,
    in_flight: &'static str,
}

static SERVER: Names = Names {
    calls: SERVER_CALLS,
    duration: SERVER_CALL_DURATION,
    in_flight: SERVER_IN_FLIGHT,
};

static CLIENT: Names = Names {
    calls: CLIENT_CALLS,
    duration: CLIENT_CALL_DURATION,
    in_flight: CLIENT_IN_FLIGHT,
};

/// The handles of one side.
#[derive(Debug, Default)]
struct Table {
    in_flight: OnceLock<Gauge>,
    /// By service key, then method name: looked up with the context's bytes as they are.
    services: DashMap<Bytes, DashMap<Bytes, MethodMetrics>>,
}

impl Table {
    fn in_flight(&self, names: &Names) -> &Gauge {
        self.in_flight.get_or_init(|| ::metrics::gauge!(names.in_flight))
    }

    /// Records the end of the call `ctx` with `outcome`.
    fn record(&self, names: &Names, ctx: &CallContext, outcome: Outcome) {
        let (service, method) = ctx.target_bytes();
        let seconds = ctx.started().elapsed().as_secs_f64();
        if let Some(methods) = self.services.get(service.as_ref()) {
            if let Some(metrics) = methods.get(method.as_ref()) {
                return metrics.record(names, seconds, outcome);
            }
        }
        // A server's names are slices of a request: copy them rather than keep it alive.
        self.services
            .entry(Bytes::copy_from_slice(service))
            .or_default()
            .entry(Bytes::copy_from_slice(method))
            .or_insert_with(|| MethodMetrics::new(names, ctx.service(), ctx.method()))
            .record(names, seconds, outcome);
    }
}

/// The handles of one method.
#[derive(Debug)]
struct MethodMetrics {
    service: SharedString,
    method: SharedString,
    duration: Histogram,
    ok: Counter,
    /// Counters of the other outcomes, made at their first use.
    others: Mutex<Vec<(&'static str, Counter)>>,
}

impl MethodMetrics {
    fn new(names: &Names, service: &str, method: &str) -> Self {
        let service = SharedString::from(service.to_owned());
        let method = SharedString::from(method.to_owned());
        Self {
            duration: ::metrics::histogram!(names.duration, "service" => service.clone(), "method" => method.clone()),
            ok: ::metrics::counter!(names.calls, "service" => service.clone(), "method" => method.clone(), "outcome" => "ok"),
            service,
            method,
            others: Mutex::default(),
        }
    }

    fn record(&self, names: &Names, seconds: f64, outcome: Outcome) {
        self.duration.record(seconds);
        if outcome == Outcome::Ok {
            self.ok.increment(1);
            return;
        }
        let label = outcome_label(outcome);
        let mut others = self.others.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, counter)) = others.iter().find(|(l, _)| *l == label) {
            counter.increment(1);
            return;
        }
        let counter = ::metrics::counter!(
            names.calls,
            "service" => self.service.clone(),
            "method" => self.method.clone(),
            "outcome" => label
        );
        counter.increment(1);
        others.push((label, counter));
    }
}
