//! A loopback TCP proxy that can stall traffic, to cut a client off from a server without
//! stopping either: a blackholed connection stays open but nothing crosses it, as in a network
//! partition. It counts the bytes it carries each way.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

/// A proxy from a free loopback port to `target`; stops (and drops every connection) when
/// dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    blackhole: watch::Sender<bool>,
    /// Bytes carried client → target, and target → client.
    carried: [Arc<AtomicU64>; 2],
    _accept: AbortOnDropHandle<()>,
}

impl FaultProxy {
    /// Starts forwarding to `target` (`host:port`).
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (blackhole, _) = watch::channel(false);
        let target = target.to_owned();
        let modes = blackhole.clone();
        let carried = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
        let [up, down] = carried.clone();
        let accept = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(&target).await else {
                    continue;
                };
                let (in_read, in_write) = inbound.into_split();
                let (out_read, out_write) = outbound.into_split();
                connections.spawn(pump(in_read, out_write, modes.subscribe(), up.clone()));
                connections.spawn(pump(out_read, in_write, modes.subscribe(), down.clone()));
            }
        });
        Self {
            addr,
            blackhole,
            carried,
            _accept: AbortOnDropHandle::new(accept),
        }
    }

    /// Bytes carried so far from clients to the target, and back.
    pub fn carried(&self) -> (u64, u64) {
        let [up, down] = &self.carried;
        (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed))
    }

    /// `127.0.0.1:port` to connect to instead of the target.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Stops (`true`) or resumes (`false`) all traffic, on open and new connections alike.
    pub fn set_blackhole(&self, on: bool) {
        self.blackhole.send_replace(on);
    }
}

/// Copies one direction, holding bytes back while the blackhole is on.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut blackhole: watch::Receiver<bool>,
    carried: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if blackhole.wait_for(|on| !on).await.is_err() {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
            },
            _ = blackhole.changed() => continue,
        };
        // Bytes read just as the blackhole came on wait for it to lift.
        if blackhole.wait_for(|on| !on).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        carried.fetch_add(n as u64, Ordering::Relaxed);
    }
}
