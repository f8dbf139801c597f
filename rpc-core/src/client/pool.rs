//! One shared connection per endpoint, reconnected on demand.

use std::sync::{Arc, PoisonError, RwLock};

use dashmap::DashMap;
use tokio::time::Instant;

use super::connection::Connection;
use super::ClientOptions;
use crate::error::RpcError;

/// Hands out the live connection to each endpoint, connecting on first use and replacing a
/// connection on the next call after it closed or its server sent GoAway (the old one still
/// finishes the calls it carries).
///
/// Concurrent first calls to one endpoint share a single connect attempt.
pub struct ConnectionPool {
    endpoints: DashMap<String, Arc<Endpoint>>,
    options: Arc<ClientOptions>,
}

/// One endpoint's connection slot; hold on to it to skip the pool's lookup on every call.
pub struct Endpoint {
    addr: String,
    options: Arc<ClientOptions>,
    current: RwLock<Option<Arc<Connection>>>,
    connecting: tokio::sync::Mutex<()>,
}

impl Endpoint {
    /// The endpoint's address, `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The current connection, if it takes new calls (open, and no GoAway received).
    fn live(&self) -> Option<Arc<Connection>> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current.as_ref().filter(|c| c.accepts_calls()).cloned()
    }

    /// Whether the endpoint's server said it is going away (GoAway) on the current
    /// connection: new calls should go to other instances while that connection drains.
    pub fn is_leaving(&self) -> bool {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current.as_ref().is_some_and(|c| c.is_going_away() && !c.is_closed())
    }

    /// Closes the current connection, failing its pending calls.
    pub fn close(&self) {
        let current = self.current.write().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(conn) = current {
            conn.close();
        }
    }

    /// The live connection, connecting if there is none; connecting gives up at `deadline`.
    pub async fn connection(&self, deadline: Option<Instant>) -> Result<Arc<Connection>, RpcError> {
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        let conn = Arc::new(Connection::connect(&self.addr, &self.options, deadline).await?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
        Ok(conn)
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
                    current: RwLock::new(None),
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
        self.endpoints.iter().filter(|e| e.live().is_some()).count()
    }
}
