//! A service wrapper that misbehaves on demand: fails calls with a status, or delays them,
//! and records when each call arrived. Streams, the schema and everything else pass through
//! to the wrapped service.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use waypost_core::protocol::Status;
use waypost_core::server::Service;
use waypost_core::BoxFuture;
use waypost_core::{Body, Reply, SerializerKind};

/// How the wrapped service misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Serves normally.
    None,
    /// Answers the next `n` calls with `status`, then serves normally.
    FailNext(Status, usize),
    /// Answers every call with `status`.
    FailAlways(Status),
    /// Delays the next `n` calls by the duration before serving them.
    DelayNext(Duration, usize),
    /// Every call holds one of `size` slots (a pool of connections to a database) for `hold`,
    /// waiting for one in turn: the service serves `size / hold` calls at most.
    Pool {
        /// Slots.
        size: usize,
        /// How long a call holds one.
        hold: Duration,
    },
    /// Delays every call by `base`, and every `every`-th call (counting from the first one
    /// received; 0: none) by `slow` instead.
    Latency {
        /// Every call's delay.
        base: Duration,
        /// Which calls are slow: every so many.
        every: usize,
        /// Their delay.
        slow: Duration,
    },
}

impl Fault {
    /// Reads a fault from its text form, as `test-provider` takes it from `RPC_TEST_FAULT`:
    /// empty (none), `fail` (every call an internal error), `latency:MS`,
    /// `latency:MS:every:N:SLOW_MS` or `pool:SIZE:MS`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let ms = |s: &str| {
            s.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|e| format!("{s:?}: {e}"))
        };
        match text.split(':').collect::<Vec<_>>().as_slice() {
            [""] => Ok(Self::None),
            ["fail"] => Ok(Self::FailAlways(Status::InternalError)),
            ["pool", size, hold] => Ok(Self::Pool {
                size: size.parse().map_err(|e| format!("{size:?}: {e}"))?,
                hold: ms(hold)?,
            }),
            ["latency", base] => Ok(Self::Latency {
                base: ms(base)?,
                every: 0,
                slow: Duration::ZERO,
            }),
            ["latency", base, "every", n, slow] => Ok(Self::Latency {
                base: ms(base)?,
                every: n.parse().map_err(|e| format!("{n:?}: {e}"))?,
                slow: ms(slow)?,
            }),
            _ => Err(format!(
                "{text:?} is not one of: (empty), fail, latency:MS, latency:MS:every:N:SLOW_MS, pool:SIZE:MS"
            )),
        }
    }
}

/// Controls and observes a [`FaultyService`].
#[derive(Debug, Clone)]
pub struct FaultHandle {
    fault: Arc<Mutex<Fault>>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    /// The slots of a [`Fault::Pool`], made when it is set.
    pool: Arc<Mutex<Option<Arc<tokio::sync::Semaphore>>>>,
}

impl FaultHandle {
    /// Changes the behaviour.
    pub fn set(&self, fault: Fault) {
        *self.pool.lock().unwrap_or_else(PoisonError::into_inner) = match fault {
            Fault::Pool { size, .. } => Some(Arc::new(tokio::sync::Semaphore::new(size))),
            _ => None,
        };
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner) = fault;
    }

    /// Calls received so far.
    pub fn calls(&self) -> usize {
        self.arrivals.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// When each call arrived.
    pub fn arrivals(&self) -> Vec<Instant> {
        self.arrivals.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The gaps between consecutive arrivals.
    pub fn gaps(&self) -> Vec<Duration> {
        self.arrivals().windows(2).map(|w| w[1] - w[0]).collect()
    }
}

/// Wraps a service with a [`Fault`].
pub struct FaultyService {
    inner: Arc<dyn Service>,
    handle: FaultHandle,
}

impl FaultyService {
    /// Wraps `inner`, serving normally until told otherwise.
    pub fn new(inner: impl Service) -> (Self, FaultHandle) {
        let handle = FaultHandle {
            fault: Arc::new(Mutex::new(Fault::None)),
            arrivals: Arc::new(Mutex::new(Vec::new())),
            pool: Arc::new(Mutex::new(None)),
        };
        (
            Self {
                inner: Arc::new(inner),
                handle: handle.clone(),
            },
            handle,
        )
    }
}

impl Service for FaultyService {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn version(&self) -> &str {
        self.inner.version()
    }

    fn key(&self) -> &str {
        self.inner.key()
    }

    fn methods(&self) -> &[&'static str] {
        self.inner.methods()
    }

    fn stream_shape(&self, method: &str) -> Option<waypost_core::StreamShape> {
        self.inner.stream_shape(method)
    }

    fn call_stream(
        &self,
        method: &str,
        serializer: SerializerKind,
        args: Body,
        input: Option<waypost_core::stream::RawStream>,
    ) -> BoxFuture<'static, waypost_core::server::StreamAnswer> {
        self.inner.call_stream(method, serializer, args, input)
    }

    fn schema(&self) -> Option<waypost_core::schema::ServiceSchema> {
        self.inner.schema()
    }

    fn call(&self, method: &str, serializer: SerializerKind, args: Body) -> BoxFuture<'static, Reply> {
        let arrived = {
            let mut arrivals = self.handle.arrivals.lock().unwrap_or_else(PoisonError::into_inner);
            arrivals.push(Instant::now());
            arrivals.len()
        };
        let mut fault = self.handle.fault.lock().unwrap_or_else(PoisonError::into_inner);
        let (fail, delay) = match *fault {
            Fault::None => (None, None),
            Fault::FailAlways(status) => (Some(status), None),
            Fault::FailNext(status, n) => {
                *fault = if n > 1 {
                    Fault::FailNext(status, n - 1)
                } else {
                    Fault::None
                };
                (Some(status), None)
            }
            Fault::DelayNext(d, n) => {
                *fault = if n > 1 { Fault::DelayNext(d, n - 1) } else { Fault::None };
                (None, Some(d))
            }
            Fault::Latency { base, every, slow } => {
                let slow_now = every > 0 && arrived % every == 0;
                (None, Some(if slow_now { slow } else { base }))
            }
            Fault::Pool { hold, .. } => (None, Some(hold)),
        };
        let pool = self.handle.pool.lock().unwrap_or_else(PoisonError::into_inner).clone();
        drop(fault);
        if let Some(status) = fail {
            return Box::pin(std::future::ready(Reply::failure(status, "injected fault")));
        }
        let call = self.inner.call(method, serializer, args);
        Box::pin(async move {
            // A pool's slot is held for the delay; the semaphore is never closed.
            let _slot = match pool {
                Some(pool) => pool.acquire_owned().await.ok(),
                None => None,
            };
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            call.await
        })
    }
}
