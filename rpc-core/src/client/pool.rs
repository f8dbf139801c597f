//! Connections per endpoint: one shared by every call, more when the bytes in flight call
//! for them; reconnected on demand.
//!
//! Calls go to the endpoint's first connection while it has less than [`SPREAD_BYTES`] of
//! requests in flight, so light traffic shares one connection and its writes batch. Beyond
//! that a call takes the least loaded connection, and opens another (up to
//! `ClientOptions::max_connections_per_endpoint`) when all are that busy: on one TCP
//! connection, large payloads queue behind each other in one socket buffer, while several
//! connections move them side by side (on loopback, 64 KiB echoes gain 2x from 8 connections).

use std::sync::{Arc, PoisonError, RwLock};

use dashmap::DashMap;
use tokio::time::Instant;

use super::connection::Connection;
use super::ClientOptions;
use crate::error::RpcError;

/// Request bytes in flight on a connection beyond which calls spread to other connections.
pub const SPREAD_BYTES: usize = 64 * 1024;

/// Hands out a live connection to each endpoint, connecting on first use, adding connections
/// under load, and replacing a connection on the next call after it closed or its server sent
/// GoAway (the old one still finishes the calls it carries).
///
/// Concurrent first calls to one endpoint share a single connect attempt.
pub struct ConnectionPool {
    endpoints: DashMap<String, Arc<Endpoint>>,
    options: Arc<ClientOptions>,
}

/// One endpoint's connections; hold on to it to skip the pool's lookup on every call.
pub struct Endpoint {
    addr: String,
    options: Arc<ClientOptions>,
    /// Open connections, the first preferred; closed ones are dropped when the next is added.
    connections: RwLock<Vec<Arc<Connection>>>,
    connecting: tokio::sync::Mutex<()>,
}

/// What a call found among an endpoint's connections.
enum Pick {
    /// Use this one.
    Use(Arc<Connection>),
    /// All live ones are busy and there is room for another; use this one meanwhile.
    Busy(Arc<Connection>),
    /// None takes calls.
    None,
}

impl Endpoint {
    /// The endpoint's address, `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn pick(&self) -> Pick {
        let connections = self.connections.read().unwrap_or_else(PoisonError::into_inner);
        let mut least: Option<&Arc<Connection>> = None;
        let mut live = 0;
        for conn in connections.iter().filter(|c| c.accepts_calls()) {
            let load = conn.in_flight_bytes();
            if load < SPREAD_BYTES {
                return Pick::Use(conn.clone());
            }
            live += 1;
            if least.is_none_or(|l| load < l.in_flight_bytes()) {
                least = Some(conn);
            }
        }
        match least {
            Some(conn) if live < self.options.max_connections_per_endpoint => Pick::Busy(conn.clone()),
            Some(conn) => Pick::Use(conn.clone()),
            None => Pick::None,
        }
    }

    /// Whether new calls should go to other instances: the endpoint's server said it is
    /// going away (GoAway) on a connection still open, which drains; or a call on one timed
    /// out and the server has not answered since (probed, or unresponsive).
    pub fn should_avoid(&self) -> bool {
        let connections = self.connections.read().unwrap_or_else(PoisonError::into_inner);
        connections
            .iter()
            .any(|c| (c.is_going_away() && !c.is_closed()) || c.is_suspect())
    }

    /// Closes every connection, failing their pending calls.
    pub fn close(&self) {
        let connections = std::mem::take(&mut *self.connections.write().unwrap_or_else(PoisonError::into_inner));
        for conn in connections {
            conn.close();
        }
    }

    /// A live connection (see the module docs), connecting if there is none or all are busy;
    /// connecting gives up at `deadline`.
    pub async fn connection(&self, deadline: Option<Instant>) -> Result<Arc<Connection>, RpcError> {
        match self.pick() {
            Pick::Use(conn) => Ok(conn),
            // Another connection for the load, unless someone is opening one already.
            Pick::Busy(conn) => match self.connecting.try_lock() {
                Ok(_connecting) => Ok(self.add(deadline).await.unwrap_or(conn)),
                Err(_) => Ok(conn),
            },
            // Calls that arrive while the first connection is being opened wait for it, then
            // choose afresh: a burst of large calls spreads as it would have otherwise.
            Pick::None => {
                let _connecting = self.connecting.lock().await;
                match self.pick() {
                    Pick::Use(conn) => Ok(conn),
                    Pick::Busy(conn) => Ok(self.add(deadline).await.unwrap_or(conn)),
                    Pick::None => self.add(deadline).await,
                }
            }
        }
    }

    /// Opens one more connection (the caller holds `connecting`).
    async fn add(&self, deadline: Option<Instant>) -> Result<Arc<Connection>, RpcError> {
        let conn = Arc::new(Connection::connect(&self.addr, &self.options, deadline).await?);
        let mut connections = self.connections.write().unwrap_or_else(PoisonError::into_inner);
        connections.retain(|c| !c.is_closed());
        connections.push(conn.clone());
        Ok(conn)
    }

    /// Open connections (live or draining).
    pub fn connection_count(&self) -> usize {
        let connections = self.connections.read().unwrap_or_else(PoisonError::into_inner);
        connections.iter().filter(|c| !c.is_closed()).count()
    }
}

impl ConnectionPool {
    /// An empty pool whose connections use `options`.
    pub fn new(options: ClientOptions) -> Self {
        Self {
            endpoints: DashMap::new(),
            options: Arc::new(options),
        }
    }

    /// The options connections are made with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The slot of `addr`, created on first use.
    pub fn endpoint(&self, addr: &str) -> Arc<Endpoint> {
        if let Some(e) = self.endpoints.get(addr) {
            return e.clone();
        }
        self.endpoints
            .entry(addr.to_owned())
            .or_insert_with(|| {
                Arc::new(Endpoint {
                    addr: addr.to_owned(),
                    options: self.options.clone(),
                    connections: RwLock::new(Vec::new()),
                    connecting: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// The live connection to `addr`, connecting if there is none; connecting gives up at
    /// `deadline` at the latest.
    pub async fn get(&self, addr: &str, deadline: Option<Instant>) -> Result<Arc<Connection>, RpcError> {
        self.endpoint(addr).connection(deadline).await
    }

    /// The addresses with a slot.
    pub fn addresses(&self) -> Vec<String> {
        self.endpoints.iter().map(|e| e.key().clone()).collect()
    }

    /// Closes and forgets the slot of `addr` (an instance that left discovery).
    pub fn remove(&self, addr: &str) {
        if let Some((_, endpoint)) = self.endpoints.remove(addr) {
            endpoint.close();
        }
    }

    /// Number of endpoint slots.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether the pool has no slot.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Number of endpoints with a live connection.
    pub fn live_connections(&self) -> usize {
        self.endpoints
            .iter()
            .filter(|e| !matches!(e.pick(), Pick::None))
            .count()
    }
}
