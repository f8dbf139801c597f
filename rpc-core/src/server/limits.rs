//! Admission limits: the server's concurrency limit, the per-service and per-method
//! concurrency and rate limits of `rpc.server.limits`, and adaptive load shedding.
//!
//! A call is admitted only if every limit that applies to it has room: the server's
//! concurrency limit, its service's, its method's, and their rates (token buckets that refill
//! at the configured calls per second and hold one second's worth). A call refused by any of
//! them is answered `Overloaded` at once, naming the limit, and counted in
//! `rpc_server_limited_total` by service, method and limit; the admitted call holds its
//! concurrency permits until it ends (a stream: until the stream ends). With load shedding on,
//! a call (not a stream) must also find room under the [shedder](super::shedding)'s adaptive
//! limit; a shed call is counted in `rpc_server_shed_total`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::warn;

use super::shedding::{ShedPermit, Shedder};
use super::{ServerOptions, Service};
use crate::config::CallLimits;
use crate::metrics;

/// What a call holds while it runs: its share of every concurrency limit that applies.
pub(crate) struct CallPermit {
    _server: OwnedSemaphorePermit,
    _limits: Vec<OwnedSemaphorePermit>,
    _shed: Option<ShedPermit>,
}

/// The limits of one service or one method.
struct Gate {
    concurrency: Option<Arc<Semaphore>>,
    rate: Option<Mutex<Bucket>>,
}

/// A token bucket: `per_sec` tokens a second, at most `per_sec` held.
struct Bucket {
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.per_sec;
        self.tokens = (self.tokens + refill).min(self.per_sec);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Gate {
    fn of(limits: &CallLimits) -> Option<Self> {
        let concurrency = limits.max_concurrent.map(|n| Arc::new(Semaphore::new(n as usize)));
        let rate = limits.rate_per_sec.map(|per_sec| {
            Mutex::new(Bucket {
                per_sec: f64::from(per_sec),
                tokens: f64::from(per_sec),
                last: Instant::now(),
            })
        });
        (concurrency.is_some() || rate.is_some()).then_some(Self { concurrency, rate })
    }

    /// Takes room for one call, into `held`; the limit that has none otherwise.
    fn admit(&self, held: &mut Vec<OwnedSemaphorePermit>, now: Instant) -> Result<(), &'static str> {
        if let Some(concurrency) = &self.concurrency {
            held.push(concurrency.clone().try_acquire_owned().map_err(|_| "concurrency")?);
        }
        if let Some(rate) = &self.rate {
            if !rate.lock().unwrap_or_else(PoisonError::into_inner).take(now) {
                return Err("rate");
            }
        }
        Ok(())
    }
}

/// Every admission limit of a server.
pub(crate) struct Limits {
    server: Arc<Semaphore>,
    services: HashMap<String, Gate>,
    /// By service, then method.
    methods: HashMap<String, HashMap<String, Gate>>,
    shedder: Option<Arc<Shedder>>,
}

/// Why a call was not admitted.
pub(crate) struct Limited {
    /// The message the caller gets.
    pub(crate) message: String,
}

impl Limits {
    /// The server's limit of concurrent calls, the configured limits of the services served
    /// (a configured service or method that is not served is warned about, naming it), and
    /// the shedder when it is on.
    pub(crate) fn new(options: &ServerOptions, served: &HashMap<String, Arc<dyn Service>>) -> Self {
        let mut services = HashMap::new();
        let mut methods = HashMap::new();
        for (key, limits) in &options.limits {
            let Some(service) = served.get(key) else {
                let mut keys: Vec<&str> = served.keys().map(String::as_str).collect();
                keys.sort_unstable();
                warn!(key = %key, served = %keys.join(", "), "rpc.server.limits names a service this server does not serve; ignored");
                continue;
            };
            if let Some(gate) = Gate::of(&limits.call()) {
                services.insert(key.clone(), gate);
            }
            for (method, call) in &limits.methods {
                if !service.methods().contains(&method.as_str()) {
                    warn!(key = %key, method = %method, known = %service.methods().join(", "), "rpc.server.limits names a method the service does not have; ignored");
                    continue;
                }
                if let Some(gate) = Gate::of(call) {
                    methods
                        .entry(key.clone())
                        .or_insert_with(HashMap::new)
                        .insert(method.clone(), gate);
                }
            }
        }
        Self {
            server: Arc::new(Semaphore::new(options.max_concurrent_calls)),
            services,
            methods,
            shedder: options
                .shedding
                .enabled
                .then(|| Arc::new(Shedder::new(&options.shedding))),
        }
    }

    /// Room for one call (or stream, which the shedder leaves alone) of `service`'s
    /// `method` in every limit that applies; otherwise why not (counted).
    pub(crate) fn admit(&self, service: &str, method: &str, stream: bool) -> Result<CallPermit, Limited> {
        let Ok(server) = self.server.clone().try_acquire_owned() else {
            return Err(Limited {
                message: "server concurrency limit reached".to_owned(),
            });
        };
        let mut held = Vec::new();
        if !self.services.is_empty() || !self.methods.is_empty() {
            let now = Instant::now();
            let method_gate = self.methods.get(service).and_then(|m| m.get(method));
            for (gate, scope) in [(self.services.get(service), "service"), (method_gate, "method")] {
                let Some(gate) = gate else { continue };
                if let Err(limit) = gate.admit(&mut held, now) {
                    metrics::server_limited(service, method, scope, limit);
                    return Err(Limited {
                        message: format!("{scope} {limit} limit of {service}/{method} reached"),
                    });
                }
            }
        }
        let shed = match (&self.shedder, stream) {
            (Some(shedder), false) => match shedder.admit() {
                Some(permit) => Some(permit),
                None => {
                    metrics::server_shed(service, method);
                    return Err(Limited {
                        message: format!(
                            "load shed: {} calls in flight is this server's limit now",
                            shedder.limit()
                        ),
                    });
                }
            },
            _ => None,
        };
        Ok(CallPermit {
            _server: server,
            _limits: held,
            _shed: shed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_holds_a_second_and_refills_at_its_rate() {
        let start = Instant::now();
        let mut bucket = Bucket {
            per_sec: 10.0,
            tokens: 10.0,
            last: start,
        };
        assert_eq!((0..15).filter(|_| bucket.take(start)).count(), 10);
        assert!(
            bucket.take(start + Duration::from_millis(100)),
            "one token a tenth of a second"
        );
        assert!(!bucket.take(start + Duration::from_millis(100)));
        assert_eq!(
            (0..30).filter(|_| bucket.take(start + Duration::from_secs(10))).count(),
            10,
            "never more than a second's worth"
        );
    }
}
