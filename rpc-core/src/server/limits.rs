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
//!
//! A registered server follows each service's rules (`{root}/config/{name}:{version}`): their
//! `limits` replace the service's configured ones and their `shedding` turns shedding on or
//! off for it, live; deleting the rules restores the configuration.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::shedding::{ShedPermit, Shedder};
use super::{ServerOptions, Service};
use crate::config::{CallLimits, ServiceLimits};
use crate::metrics;
use crate::rules::ServiceRules;

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
    /// Per served service: its limits and whether it sheds, as configured or as its rules
    /// set them now.
    services: HashMap<String, Admission>,
    shedder: Arc<Shedder>,
    /// Whether any service has limits or sheds (else admission looks no further than the
    /// server's limit).
    any: AtomicBool,
}

/// One service's admission, replaced live by its rules.
struct Admission {
    service: Arc<dyn Service>,
    /// The limits of `rpc.server.limits`, back in force when the rules drop theirs.
    configured: Option<ServiceLimits>,
    /// Whether `rpc.server.shedding` sheds its calls.
    sheds_configured: bool,
    gates: RwLock<Option<Arc<Gates>>>,
    sheds: AtomicBool,
}

/// The gates of a service and its methods.
struct Gates {
    service: Option<Gate>,
    methods: HashMap<String, Gate>,
}

impl Gates {
    /// The gates of `limits` for `service` (a method it does not have is warned about,
    /// naming it, and ignored); `None` when nothing is limited.
    fn of(service: &dyn Service, limits: &ServiceLimits) -> Option<Arc<Self>> {
        let mut methods = HashMap::new();
        for (method, call) in &limits.methods {
            if !service.methods().contains(&method.as_str()) {
                warn!(key = %service.key(), method = %method, known = %service.methods().join(", "), "limits name a method the service does not have; ignored");
                continue;
            }
            if let Some(gate) = Gate::of(call) {
                methods.insert(method.clone(), gate);
            }
        }
        let service = Gate::of(&limits.call());
        (service.is_some() || !methods.is_empty()).then(|| Arc::new(Self { service, methods }))
    }
}

/// Why a call was not admitted.
pub(crate) struct Limited {
    /// The message the caller gets.
    pub(crate) message: String,
}

impl Limits {
    /// The server's limit of concurrent calls, the configured limits of the services served
    /// (a configured service or method that is not served is warned about, naming it), and
    /// the shedder.
    pub(crate) fn new(options: &ServerOptions, served: &HashMap<String, Arc<dyn Service>>) -> Self {
        for key in options.limits.keys().filter(|k| !served.contains_key(*k)) {
            let mut keys: Vec<&str> = served.keys().map(String::as_str).collect();
            keys.sort_unstable();
            warn!(key = %key, served = %keys.join(", "), "rpc.server.limits names a service this server does not serve; ignored");
        }
        let services = served
            .iter()
            .map(|(key, service)| {
                let configured = options.limits.get(key).cloned();
                let gates = configured.as_ref().and_then(|l| Gates::of(&**service, l));
                let admission = Admission {
                    service: service.clone(),
                    configured,
                    sheds_configured: options.shedding.enabled,
                    gates: RwLock::new(gates),
                    sheds: AtomicBool::new(options.shedding.enabled),
                };
                (key.clone(), admission)
            })
            .collect();
        let limits = Self {
            server: Arc::new(Semaphore::new(options.max_concurrent_calls)),
            services,
            shedder: Arc::new(Shedder::new(&options.shedding)),
            any: AtomicBool::new(false),
        };
        limits.note_any();
        limits
    }

    /// Recomputes whether any service has limits or sheds.
    fn note_any(&self) {
        let any = self
            .services
            .values()
            .any(|a| a.sheds.load(Ordering::Relaxed) || read(&a.gates).is_some());
        self.any.store(any, Ordering::Relaxed);
    }

    /// Applies `rules` (or their absence: the configuration again) to the admission of
    /// `service_key`: its limits and whether it sheds.
    pub(crate) fn apply_rules(&self, service_key: &str, rules: Option<&ServiceRules>) {
        let Some(admission) = self.services.get(service_key) else {
            return;
        };
        let limits = rules.and_then(|r| r.limits.as_ref()).or(admission.configured.as_ref());
        let gates = limits.and_then(|l| Gates::of(&*admission.service, l));
        *admission.gates.write().unwrap_or_else(PoisonError::into_inner) = gates;
        let sheds = rules.and_then(|r| r.shedding).unwrap_or(admission.sheds_configured);
        admission.sheds.store(sheds, Ordering::Relaxed);
        self.note_any();
        debug!(service = service_key, ?limits, sheds, "admission limits updated");
    }

    /// Room for one call (or stream, which the shedder leaves alone) of `service`'s
    /// `method` in every limit that applies; otherwise why not (counted).
    pub(crate) fn admit(&self, service: &str, method: &str, stream: bool) -> Result<CallPermit, Limited> {
        let Ok(server) = self.server.clone().try_acquire_owned() else {
            return Err(Limited {
                message: "server concurrency limit reached".to_owned(),
            });
        };
        let mut permit = CallPermit {
            _server: server,
            _limits: Vec::new(),
            _shed: None,
        };
        if !self.any.load(Ordering::Relaxed) {
            return Ok(permit);
        }
        let Some(admission) = self.services.get(service) else {
            return Ok(permit);
        };
        if let Some(gates) = read(&admission.gates) {
            let now = Instant::now();
            for (gate, scope) in [
                (gates.service.as_ref(), "service"),
                (gates.methods.get(method), "method"),
            ] {
                let Some(gate) = gate else { continue };
                if let Err(limit) = gate.admit(&mut permit._limits, now) {
                    metrics::server_limited(service, method, scope, limit);
                    return Err(Limited {
                        message: format!("{scope} {limit} limit of {service}/{method} reached"),
                    });
                }
            }
        }
        if !stream && admission.sheds.load(Ordering::Relaxed) {
            let Some(shed) = self.shedder.admit() else {
                metrics::server_shed(service, method);
                return Err(Limited {
                    message: format!(
                        "load shed: {} calls in flight is this server's limit now",
                        self.shedder.limit()
                    ),
                });
            };
            permit._shed = Some(shed);
        }
        Ok(permit)
    }
}

/// The gates in force now.
fn read(gates: &RwLock<Option<Arc<Gates>>>) -> Option<Arc<Gates>> {
    gates.read().unwrap_or_else(PoisonError::into_inner).clone()
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
