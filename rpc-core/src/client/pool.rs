//! One shared connection per endpoint, reconnected on demand.

use std::sync::{Arc, PoisonError, RwLock};

use dashmap::DashMap;
use tokio::time::Instant;

use super::connection::Connection;
use super::ClientOptions;
use crate::error::RpcError;

/// Hands out the live connection to each endpoint, connecting on first use and replacing a
/// closed connection on the next call after it closed.
///
/// Concurrent first calls to one endpoint share a single connect attempt.
pub struct ConnectionPool {
    endpoints: DashMap<String, Arc<Endpoint>>,
    options: ClientOptions,
}

#[derive(Default)]
struct Endpoint {
    current: RwLock<Option<Arc<Connection>>>,
    connecting: tokio::sync::Mutex<()>,
}

impl Endpoint {
    fn live(&self) -> Option<Arc<Connection>> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current.as_ref().filter(|c| !c.is_closed()).cloned()
    }
}

impl ConnectionPool {
    /// An empty pool whose connections use `options`.
    pub fn new(options: ClientOptions) -> Self {
        Self {
            endpoints: DashMap::new(),
            options,
        }
    }

    /// The options connections are made with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The live connection to `addr`, connecting if there is none; connecting gives up at
    /// `deadline` at the latest.
    pub async fn get(&self, addr: &str, deadline: Option<Instant>) -> Result<Arc<Connection>, RpcError> {
        let endpoint = match self.endpoints.get(addr) {
            Some(e) => e.clone(),
            None => self.endpoints.entry(addr.to_owned()).or_default().clone(),
        };
        if let Some(conn) = endpoint.live() {
            return Ok(conn);
        }
        let _connecting = endpoint.connecting.lock().await;
        if let Some(conn) = endpoint.live() {
            return Ok(conn);
        }
        let conn = Arc::new(Connection::connect(addr, &self.options, deadline).await?);
        *endpoint.current.write().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
        Ok(conn)
    }

    /// Closes and forgets the connection to `addr` (for an endpoint that left the registry).
    pub fn remove(&self, addr: &str) {
        if let Some((_, endpoint)) = self.endpoints.remove(addr) {
            if let Some(conn) = endpoint.current.write().unwrap_or_else(PoisonError::into_inner).take() {
                conn.close();
            }
        }
    }

    /// Number of endpoints with a live connection.
    pub fn live_connections(&self) -> usize {
        self.endpoints.iter().filter(|e| e.live().is_some()).count()
    }
}
