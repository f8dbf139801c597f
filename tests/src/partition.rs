//! Proxies on an etcd cluster's peer traffic, so a test can cut one member off from its peers
//! while its clients still reach it: a network partition on loopback.
//!
//! Each member advertises its proxy as its peer URL, so every raft connection between members
//! passes one: a connection to member `i` passes proxy `i`. etcd's peers open connections both
//! ways (streams one way, pipelined messages the other), so cutting a member off means refusing
//! both the connections made to it and the ones it makes. A peer request names its sender
//! (`X-Server-From: <member id>`), so each proxy reads the head of each connection's first
//! request, and refuses (or, for connections already open, closes) the ones to or from the
//! member that is cut off.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

/// Which member is cut off: its index (connections to it) and its id (connections from it).
#[derive(Debug, Clone, Default)]
struct Cut {
    member: Option<usize>,
    id: Option<String>,
}

impl Cut {
    /// Whether a connection through proxy `proxy`, sent by `from`, crosses the cut.
    fn blocks(&self, proxy: usize, from: Option<&str>) -> bool {
        self.member == Some(proxy) || (from.is_some() && from == self.id.as_deref())
    }
}

/// One proxy per member, each forwarding to that member's peer port.
pub struct PeerProxies {
    ports: Vec<u16>,
    cut: watch::Sender<Cut>,
    _tasks: Vec<AbortOnDropHandle<()>>,
}

impl PeerProxies {
    /// Binds one proxy per entry of `upstream` (members' peer ports) on free loopback ports.
    pub async fn start(upstream: &[u16]) -> Self {
        let (cut, _) = watch::channel(Cut::default());
        let mut ports = Vec::new();
        let mut tasks = Vec::new();
        for (proxy, &member_port) in upstream.iter().enumerate() {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a peer proxy");
            ports.push(listener.local_addr().expect("proxy address").port());
            let cut = cut.subscribe();
            tasks.push(AbortOnDropHandle::new(tokio::spawn(async move {
                // Connection tasks are detached: each ends when either side closes, or when
                // the cut falls across it.
                while let Ok((inbound, _)) = listener.accept().await {
                    tokio::spawn(relay(inbound, proxy, member_port, cut.clone()));
                }
            })));
        }
        Self {
            ports,
            cut,
            _tasks: tasks,
        }
    }

    /// The port of proxy `i` (member `i`'s advertised peer port).
    pub fn port(&self, i: usize) -> u16 {
        self.ports[i]
    }

    /// Cuts member `member` (whose id, as etcd writes it, is `id`) off from its peers.
    pub fn isolate(&self, member: usize, id: String) {
        self.cut.send_replace(Cut {
            member: Some(member),
            id: Some(id),
        });
    }

    /// Lets every member reach every other again.
    pub fn heal(&self) {
        self.cut.send_replace(Cut::default());
    }
}

/// Forwards one connection to the member on `member_port`, unless or until the cut falls
/// across it.
async fn relay(mut inbound: TcpStream, proxy: usize, member_port: u16, mut cut: watch::Receiver<Cut>) {
    let Some(head) = read_head(&mut inbound).await else {
        return;
    };
    let from = sender(&head);
    if cut.borrow_and_update().blocks(proxy, from.as_deref()) {
        return;
    }
    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", member_port)).await else {
        return;
    };
    if outbound.write_all(&head).await.is_err() {
        return;
    }
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        () = async {
            while cut.changed().await.is_ok() {
                if cut.borrow_and_update().blocks(proxy, from.as_deref()) {
                    return;
                }
            }
            std::future::pending::<()>().await
        } => {}
    }
}

/// The bytes of a connection up to the end of its first request's head (at most 16 KiB or
/// 5 s); `None` if the connection closes first.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let read = async {
        let mut head = Vec::new();
        let mut chunk = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Some(head)
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.ok().flatten()
}

/// The `X-Server-From` header of a request head: the id of the member that sent it.
fn sender(head: &[u8]) -> Option<String> {
    String::from_utf8_lossy(head).lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("x-server-from")
            .then(|| value.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_blocks_connections_to_and_from_the_isolated_member_only() {
        let cut = Cut {
            member: Some(2),
            id: Some("c0ffee".into()),
        };
        assert!(cut.blocks(2, Some("abc")), "to the isolated member");
        assert!(cut.blocks(0, Some("c0ffee")), "from the isolated member");
        assert!(!cut.blocks(0, Some("abc")), "between the others");
        assert!(
            !cut.blocks(1, None),
            "a request that names no sender, to another member"
        );
        assert!(!Cut::default().blocks(2, Some("c0ffee")), "healed");
        let head = b"GET /raft/stream/msgappv2/1 HTTP/1.1\r\nHost: x\r\nX-Server-From: c0ffee\r\n\r\n";
        assert_eq!(sender(head).as_deref(), Some("c0ffee"));
    }
}
