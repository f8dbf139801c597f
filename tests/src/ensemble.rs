//! A throw-away three-server ZooKeeper ensemble on loopback, for tests of sessions that move
//! between servers when one dies or freezes.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Child;

use crate::ports::free_port;
use crate::servers::{spawn_zookeeper, wait_ready, zookeeper_installed, zookeeper_serving};
use waypost_testkit::scratch_dir;

/// A ZooKeeper ensemble whose servers run until killed or dropped.
pub struct ZookeeperEnsemble {
    servers: Vec<EnsembleServer>,
}

struct EnsembleServer {
    client_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl ZookeeperEnsemble {
    /// Starts `size` servers and waits until each serves requests (a quorum has formed).
    ///
    /// Under `CI=true` a missing ZooKeeper installation fails the test; elsewhere it returns
    /// `None`.
    pub async fn start(size: usize) -> Option<Self> {
        if !zookeeper_installed() {
            return None;
        }
        let ports: Vec<(u16, u16, u16)> = (0..size).map(|_| (free_port(), free_port(), free_port())).collect();
        let peers: String = ports
            .iter()
            .enumerate()
            .map(|(i, (_, quorum, election))| format!("server.{}=127.0.0.1:{quorum}:{election}\n", i + 1))
            .collect();
        let mut servers = Vec::new();
        for (i, (client_port, _, _)) in ports.iter().enumerate() {
            let dir = scratch_dir("zookeeper-ensemble");
            let data = dir.join("data");
            std::fs::create_dir_all(&data).expect("create the data directory");
            std::fs::write(data.join("myid"), format!("{}\n", i + 1)).expect("write myid");
            std::fs::write(
                dir.join("zoo.cfg"),
                format!(
                    "tickTime=500\ninitLimit=20\nsyncLimit=4\nminSessionTimeout=1000\nmaxSessionTimeout=60000\n\
                     dataDir={}\nclientPort={client_port}\nclientPortAddress=127.0.0.1\n\
                     admin.enableServer=false\n4lw.commands.whitelist=srvr,ruok\n{peers}",
                    data.display()
                ),
            )
            .expect("write zoo.cfg");
            servers.push(EnsembleServer {
                client_port: *client_port,
                dir,
                child: None,
            });
        }
        let mut ensemble = Self { servers };
        for i in 0..size {
            ensemble.servers[i].child = Some(spawn_zookeeper(&ensemble.servers[i].dir));
        }
        for i in 0..size {
            ensemble.await_serving(i).await;
        }
        Some(ensemble)
    }

    /// Waits until server `i` opens sessions (a server reports its mode a little before).
    async fn await_serving(&mut self, i: usize) {
        let endpoint = self.endpoint(i);
        let server = &mut self.servers[i];
        let child = server.child.as_mut().expect("spawned");
        let opens_sessions = || async {
            let connect = zookeeper_client::Client::connect(&endpoint);
            zookeeper_serving(&endpoint).await
                && tokio::time::timeout(Duration::from_secs(2), connect)
                    .await
                    .is_ok_and(|c| c.is_ok())
        };
        assert!(
            wait_ready(child, Duration::from_secs(60), opens_sessions).await,
            "ZooKeeper server {i} did not serve; see {}",
            server.dir.join("zookeeper.log").display()
        );
    }

    /// `127.0.0.1:port` of server `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.servers[i].client_port)
    }

    /// Every server's endpoint.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.servers.len()).map(|i| self.endpoint(i)).collect()
    }

    /// The process id of server `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.servers[i].child.as_ref().and_then(Child::id)
    }

    /// The index of the server that reports itself leader.
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.servers.len() {
            if self.servers[i].child.is_some() && mode(&self.endpoint(i)).await.as_deref() == Some("leader") {
                return Some(i);
            }
        }
        None
    }

    /// Kills server `i` (its data stays).
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the killed server `i` again; it rejoins the ensemble.
    pub async fn restart(&mut self, i: usize) {
        self.servers[i].child = Some(spawn_zookeeper(&self.servers[i].dir));
        self.await_serving(i).await;
    }

    /// The client connections server `i` holds (0 if it does not answer).
    pub async fn connections(&self, i: usize) -> usize {
        srvr_field(&self.endpoint(i), "Connections")
            .await
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

/// The `Mode:` a server reports (`leader`, `follower`), if it serves.
async fn mode(endpoint: &str) -> Option<String> {
    srvr_field(endpoint, "Mode").await
}

/// A field of a server's `srvr` report.
async fn srvr_field(endpoint: &str, field: &str) -> Option<String> {
    let probe = async {
        let mut stream = TcpStream::connect(endpoint).await.ok()?;
        stream.write_all(b"srvr").await.ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(": "))
            .map(|m| m.trim().to_owned())
    };
    tokio::time::timeout(Duration::from_secs(1), probe).await.ok().flatten()
}

impl Drop for ZookeeperEnsemble {
    fn drop(&mut self) {
        for server in &mut self.servers {
            if let Some(child) = server.child.as_mut() {
                let _ = child.start_kill();
            }
            let _ = std::fs::remove_dir_all(&server.dir);
        }
    }
}
