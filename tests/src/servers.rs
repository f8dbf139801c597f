//! Registry servers for the tests: the shared instances `scripts/test` starts, and throw-away
//! etcd processes that a test can stop, restart or wipe.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::partition::PeerProxies;
use crate::ports::free_port;
use waypost_testkit::pki::{CertFiles, TestPki};
use waypost_testkit::scratch_dir;

/// The shared etcd `scripts/test` started (`RPC_TEST_ETCD_ENDPOINTS`).
///
/// Without it: under `CI=true` the test fails; elsewhere it is skipped with a message.
pub fn shared_etcd() -> Option<Vec<String>> {
    shared_server("RPC_TEST_ETCD_ENDPOINTS", "etcd")
}

/// The shared ZooKeeper `scripts/test` started (`RPC_TEST_ZK_SERVERS`), as [`shared_etcd`].
pub fn shared_zookeeper() -> Option<Vec<String>> {
    shared_server("RPC_TEST_ZK_SERVERS", "ZooKeeper")
}

fn shared_server(var: &str, what: &str) -> Option<Vec<String>> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v.split(',').map(|s| s.trim().to_owned()).collect()),
        _ => {
            assert!(
                !is_ci(),
                "{var} is not set: this test needs {what}; run the tests with scripts/test"
            );
            eprintln!("SKIPPED: {var} is not set; run scripts/test to test against {what}");
            None
        }
    }
}

/// A configuration for one process on the shared etcd (see [`shared_etcd`]): a server on a
/// free loopback port that deregisters without waiting, under a registry root of its own
/// named after `prefix`.
pub fn etcd_config(prefix: &str) -> Option<waypost_core::config::RpcConfig> {
    let etcd = shared_etcd()?;
    let yaml = format!(
        "rpc:\n  server: {{ host: 127.0.0.1, port: 0, deregister_quiet_ms: 10 }}\n  registry:\n    type: etcd\n    endpoints: [{}]\n    root: \"{}\"\n",
        yaml_list(&etcd),
        unique_root(prefix)
    );
    Some(waypost_core::config::RpcConfig::from_yaml(&yaml).expect("a valid test configuration"))
}

/// `endpoints` as the items of a YAML flow list: `"a:1", "b:2"`.
pub fn yaml_list(endpoints: &[String]) -> String {
    endpoints
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether the tests run in CI, where a missing server is a failure, never a skip.
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A registry root no other test uses.
pub fn unique_root(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "/{prefix}-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        fastrand::u32(..)
    )
}

/// A throw-away single-member etcd on free loopback ports, killed when dropped.
pub struct EtcdServer {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    /// Flags beyond the ones every test etcd gets.
    extra_args: Vec<String>,
    /// TLS on the client port, with client certificates required.
    tls: Option<EtcdTls>,
}

/// The TLS side of a test etcd: its files and the plain port where it answers `/health`.
struct EtcdTls {
    ca: PathBuf,
    server: CertFiles,
    /// A client certificate for `etcdctl`.
    client: CertFiles,
    health_port: u16,
}

/// The user and password of an etcd started with authentication.
pub const ETCD_ROOT: (&str, &str) = ("root", "rpc-test-password");

impl EtcdServer {
    /// Starts a fresh etcd and waits until it is healthy.
    ///
    /// Under `CI=true` a missing `etcd` binary fails the test; elsewhere it returns `None`.
    pub async fn start() -> Option<Self> {
        Self::start_with(Vec::new(), scratch_dir("etcd")).await
    }

    /// Starts an etcd with authentication enabled, whose JWT tokens expire after `token_ttl`
    /// (signed with an RSA key made by `openssl` for this server); the user is [`ETCD_ROOT`].
    pub async fn start_with_jwt_auth(token_ttl: Duration) -> Option<Self> {
        let dir = scratch_dir("etcd-jwt");
        let (private, public) = (dir.join("jwt.key"), dir.join("jwt.pub"));
        run_tool("openssl", &["genrsa", "-out", &path_str(&private), "2048"]).await;
        run_tool(
            "openssl",
            &["rsa", "-in", &path_str(&private), "-pubout", "-out", &path_str(&public)],
        )
        .await;
        let auth = format!(
            "jwt,pub-key={},priv-key={},sign-method=RS256,ttl={}s",
            public.display(),
            private.display(),
            token_ttl.as_secs()
        );
        let server = Self::start_with(vec!["--auth-token".to_owned(), auth], dir).await?;
        server.enable_auth().await;
        Some(server)
    }

    /// Starts an etcd that serves clients over TLS with the server certificate of `pki`,
    /// requires a client certificate signed by its CA (`--client-cert-auth`), and has
    /// authentication enabled (user [`ETCD_ROOT`]). Its endpoint is `https://...`.
    pub async fn start_with_tls_and_auth(pki: &TestPki) -> Option<Self> {
        let tls = EtcdTls {
            ca: pki.ca.ca(),
            server: pki.server.clone(),
            client: pki.client.clone(),
            health_port: free_port(),
        };
        let server = Self::start_inner(Vec::new(), scratch_dir("etcd-tls"), Some(tls)).await?;
        server.enable_auth().await;
        Some(server)
    }

    /// Adds the user [`ETCD_ROOT`] with the root role and turns authentication on.
    async fn enable_auth(&self) {
        let (user, password) = ETCD_ROOT;
        self.etcdctl(&["user", "add", user, "--new-user-password", password])
            .await;
        self.etcdctl(&["user", "grant-role", user, "root"]).await;
        self.etcdctl(&["auth", "enable"]).await;
    }

    /// Runs `etcdctl` against this server (with its TLS files), before authentication is on.
    async fn etcdctl(&self, args: &[&str]) {
        let mut all = vec!["--endpoints".to_owned(), self.endpoint()];
        if let Some(tls) = &self.tls {
            all.extend([
                format!("--cacert={}", tls.ca.display()),
                format!("--cert={}", tls.client.cert.display()),
                format!("--key={}", tls.client.key.display()),
            ]);
        }
        all.extend(args.iter().map(|a| (*a).to_owned()));
        run_tool("etcdctl", &all.iter().map(String::as_str).collect::<Vec<_>>()).await;
    }

    async fn start_with(extra_args: Vec<String>, data_dir: PathBuf) -> Option<Self> {
        Self::start_inner(extra_args, data_dir, None).await
    }

    async fn start_inner(extra_args: Vec<String>, data_dir: PathBuf, tls: Option<EtcdTls>) -> Option<Self> {
        if which("etcd").is_none() {
            assert!(!is_ci(), "the etcd binary is not installed; run scripts/test");
            eprintln!("SKIPPED: the etcd binary is not installed; run scripts/test");
            return None;
        }
        let mut server = Self {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            data_dir,
            extra_args,
            tls,
        };
        // The ports are reserved for this process (see `ports`): nothing else binds them.
        assert!(
            server.launch().await,
            "etcd did not start; see {}",
            server.data_dir.join("etcd.log").display()
        );
        Some(server)
    }

    /// `127.0.0.1:port` of the client listener (`https://127.0.0.1:port` with TLS).
    pub fn endpoint(&self) -> String {
        match self.tls {
            Some(_) => format!("https://127.0.0.1:{}", self.client_port),
            None => format!("127.0.0.1:{}", self.client_port),
        }
    }

    /// Kills the server (its data stays).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// The process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Starts the stopped server again on the same port with the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        assert!(self.launch().await, "etcd did not restart");
    }

    /// Replaces the server by an empty one on the same port (all data lost).
    pub async fn wipe_and_restart(&mut self) {
        self.stop().await;
        let _ = std::fs::remove_dir_all(&self.data_dir);
        self.data_dir = scratch_dir("etcd");
        assert!(self.launch().await, "etcd did not restart");
    }

    /// Starts etcd; `false` when it exits or is not healthy within 30 s.
    async fn launch(&mut self) -> bool {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut args = self.extra_args.clone();
        let mut health = format!("127.0.0.1:{}", self.client_port);
        if let Some(tls) = &self.tls {
            // Later flags win: the client URLs become https.
            let client = format!("https://127.0.0.1:{}", self.client_port);
            health = format!("127.0.0.1:{}", tls.health_port);
            args.extend([
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--cert-file={}", tls.server.cert.display()),
                format!("--key-file={}", tls.server.key.display()),
                format!("--trusted-ca-file={}", tls.ca.display()),
                "--client-cert-auth".to_owned(),
                format!("--listen-metrics-urls=http://{health}"),
            ]);
        }
        let child = spawn_etcd(
            "t",
            &self.data_dir,
            self.client_port,
            (self.peer_port, self.peer_port),
            &format!("t={peer}"),
            &args,
        );
        let child = self.child.insert(child);
        wait_ready(child, Duration::from_secs(30), || etcd_healthy(&health)).await
    }
}

/// Spawns one etcd member with its data under `dir` and its log in `dir/etcd.log`.
fn spawn_etcd(
    name: &str,
    dir: &std::path::Path,
    client_port: u16,
    (peer_port, advertised_peer_port): (u16, u16),
    initial_cluster: &str,
    extra_args: &[String],
) -> Child {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let advertised_peer = format!("http://127.0.0.1:{advertised_peer_port}");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("etcd.log"))
        .expect("open the etcd log");
    Command::new("etcd")
        .args(["--name", name, "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &advertised_peer,
        ])
        .args(["--initial-cluster", initial_cluster, "--initial-cluster-state", "new"])
        .args(["--initial-cluster-token", &format!("rpc-test-{}", std::process::id())])
        .args(["--log-level", "warn"])
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn etcd")
}

/// A throw-away etcd cluster of several members on loopback, killed when dropped.
pub struct EtcdCluster {
    members: Vec<EtcdMember>,
    initial_cluster: String,
    /// With [`EtcdCluster::start_partitionable`]: the proxies every peer connection passes.
    proxies: Option<PeerProxies>,
    /// A client per member for status requests, kept between them: a new connection for every
    /// request (as this helper made) could take longer than the request's 2 s on a loaded
    /// machine, so that no member seemed to answer while the cluster had a leader all along.
    clients: std::sync::Mutex<Vec<Option<etcd_client::Client>>>,
}

struct EtcdMember {
    name: String,
    client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl EtcdCluster {
    /// Starts `size` members and waits until every one is healthy.
    pub async fn start(size: usize) -> Option<Self> {
        Self::start_with(size, false).await
    }

    /// Like [`EtcdCluster::start`], with the members' peer traffic through proxies, so that
    /// [`EtcdCluster::isolate`] can cut a member off from its peers.
    pub async fn start_partitionable(size: usize) -> Option<Self> {
        Self::start_with(size, true).await
    }

    async fn start_with(size: usize, partitionable: bool) -> Option<Self> {
        if which("etcd").is_none() {
            assert!(!is_ci(), "the etcd binary is not installed; run scripts/test");
            eprintln!("SKIPPED: the etcd binary is not installed; run scripts/test");
            return None;
        }
        // The ports are reserved for this process (see `ports`): nothing else binds them.
        match Self::start_members(size, partitionable).await {
            Ok(cluster) => Some(cluster),
            Err(member) => panic!("etcd member {member} did not become healthy"),
        }
    }

    /// Starts the members; the one that did not become healthy, if any.
    async fn start_members(size: usize, partitionable: bool) -> Result<Self, usize> {
        let members: Vec<EtcdMember> = (0..size)
            .map(|i| EtcdMember {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                dir: scratch_dir("etcd-member"),
                child: None,
            })
            .collect();
        let proxies = match partitionable {
            true => Some(PeerProxies::start(&members.iter().map(|m| m.peer_port).collect::<Vec<_>>()).await),
            false => None,
        };
        let initial_cluster = members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let advertised = proxies.as_ref().map_or(m.peer_port, |p| p.port(i));
                format!("{}=http://127.0.0.1:{advertised}", m.name)
            })
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            clients: std::sync::Mutex::new(vec![None; members.len()]),
            members,
            initial_cluster,
            proxies,
        };
        for i in 0..size {
            cluster.spawn(i);
        }
        for i in 0..size {
            let endpoint = cluster.endpoint(i);
            let child = cluster.members[i].child.as_mut().expect("spawned");
            if !wait_ready(child, Duration::from_secs(60), || etcd_healthy(&endpoint)).await {
                return Err(i);
            }
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let advertised = self.proxies.as_ref().map_or(m.peer_port, |p| p.port(i));
        let child = spawn_etcd(
            &m.name,
            &m.dir,
            m.client_port,
            (m.peer_port, advertised),
            &self.initial_cluster,
            &[],
        );
        self.members[i].child = Some(child);
    }

    /// Member `i`'s id, as etcd writes it (hex), asked of the member itself.
    pub async fn member_id(&self, i: usize) -> Option<String> {
        let status = self.status(i).await?;
        status.header().map(|h| format!("{:x}", h.member_id()))
    }

    /// Member `i`'s status, asked of the member itself (without requiring a leader), within 2 s.
    async fn status(&self, i: usize) -> Option<etcd_client::StatusResponse> {
        let cached = self.clients.lock().expect("status clients")[i].clone();
        let status = async {
            let mut client = match cached {
                Some(client) => client,
                None => {
                    let client = etcd_client::Client::connect([format!("http://{}", self.endpoint(i))], None)
                        .await
                        .ok()?;
                    self.clients.lock().expect("status clients")[i] = Some(client.clone());
                    client
                }
            };
            client.status().await.ok()
        };
        let answer = tokio::time::timeout(Duration::from_secs(2), status)
            .await
            .ok()
            .flatten();
        if answer.is_none() {
            // Connect afresh next time (the member may have been killed and restarted).
            self.clients.lock().expect("status clients")[i] = None;
        }
        answer
    }

    /// Whether member `i` knows a leader (asked of the member itself, without requiring one).
    pub async fn sees_leader(&self, i: usize) -> bool {
        self.status(i).await.is_some_and(|s| s.leader() != 0)
    }

    /// Cuts member `i` off from its peers (its clients still reach it). Needs a cluster from
    /// [`EtcdCluster::start_partitionable`].
    pub async fn isolate(&self, i: usize) {
        let id = self.member_id(i).await.expect("the member's id");
        self.proxies.as_ref().expect("a partitionable cluster").isolate(i, id);
    }

    /// Ends [`EtcdCluster::isolate`].
    pub fn heal(&self) {
        if let Some(proxies) = &self.proxies {
            proxies.heal();
        }
    }

    /// `127.0.0.1:port` of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client_port)
    }

    /// Every member's endpoint.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// The index of the current leader: a member that answers, names itself leader, and is
    /// named leader by a majority of the members (so neither a frozen old leader, named by a
    /// follower that has not yet noticed, nor a cut-off one that has not yet stepped down).
    pub async fn leader(&self) -> Option<usize> {
        Self::leader_of(&self.statuses().await, self.members.len())
    }

    /// Each member's (id, leader it names), or `None` for a stopped member or one that does not
    /// answer.
    async fn statuses(&self) -> Vec<Option<(u64, u64)>> {
        futures_util::future::join_all((0..self.members.len()).map(|i| async move {
            // A stopped member has no say.
            self.members[i].child.as_ref()?;
            let status = self.status(i).await?;
            Some((status.header()?.member_id(), status.leader()))
        }))
        .await
    }

    fn leader_of(statuses: &[Option<(u64, u64)>], members: usize) -> Option<usize> {
        let majority = members / 2 + 1;
        statuses.iter().position(|status| {
            status.is_some_and(|(id, leader)| {
                leader == id && statuses.iter().flatten().filter(|(_, l)| *l == id).count() >= majority
            })
        })
    }

    /// The process id of member `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().and_then(Child::id)
    }

    /// The index of the leader, waiting up to 30 s for one (an election may be under way); the
    /// failure names what each member answered last.
    pub async fn await_leader(&self) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let statuses = self.statuses().await;
            if let Some(leader) = Self::leader_of(&statuses, self.members.len()) {
                return leader;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no etcd leader within 30 s; (member id, leader it names) of each member, last asked: {:x?}",
                statuses
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills member `i` (its data stays).
    pub async fn kill(&mut self, i: usize) {
        self.clients.lock().expect("status clients")[i] = None;
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill().await;
        }
    }

    /// Restarts the killed member `i` with its data; it rejoins the cluster.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i);
        let endpoint = self.endpoint(i);
        let child = self.members[i].child.as_mut().expect("spawned");
        assert!(
            wait_ready(child, Duration::from_secs(60), || etcd_healthy(&endpoint)).await,
            "etcd member {i} did not rejoin"
        );
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(child) = m.child.as_mut() {
                let _ = child.start_kill();
            }
            let _ = std::fs::remove_dir_all(&m.dir);
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn path_str(path: &std::path::Path) -> String {
    path.display().to_string()
}

/// Runs a command-line tool the tests need, failing the test with its output if it fails.
async fn run_tool(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program} (scripts/setup installs it): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether etcd at `endpoint` answers its health check.
pub async fn etcd_healthy(endpoint: &str) -> bool {
    let probe = async {
        let mut stream = TcpStream::connect(endpoint).await.ok()?;
        stream
            .write_all(format!("GET /health HTTP/1.0\r\nHost: {endpoint}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        Some(body.contains("\"health\":\"true\""))
    };
    tokio::time::timeout(Duration::from_secs(1), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// A throw-away standalone ZooKeeper on a free loopback port, killed when dropped.
pub struct ZookeeperServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";

impl ZookeeperServer {
    /// Starts a fresh ZooKeeper and waits until it serves requests.
    ///
    /// Under `CI=true` a missing ZooKeeper installation fails the test; elsewhere it returns
    /// `None`.
    pub async fn start() -> Option<Self> {
        if !zookeeper_installed() {
            return None;
        }
        let dir = scratch_dir("zookeeper");
        std::fs::create_dir_all(dir.join("data")).expect("create the data directory");
        let mut server = Self {
            child: None,
            port: free_port(),
            dir,
        };
        // The port is reserved for this process (see `ports`): nothing else binds it.
        assert!(
            server.launch().await,
            "ZooKeeper did not start; see {}",
            server.dir.join("zookeeper.log").display()
        );
        Some(server)
    }

    /// `127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the server (its data stays).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the stopped server again with the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        assert!(self.launch().await, "ZooKeeper did not restart");
    }

    /// Starts ZooKeeper; `false` when it exits or does not serve within 60 s.
    async fn launch(&mut self) -> bool {
        std::fs::write(
            self.dir.join("zoo.cfg"),
            format!(
                "tickTime=500\nminSessionTimeout=1000\nmaxSessionTimeout=60000\ndataDir={}\nclientPort={}\n\
                 clientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=srvr,ruok\nmaxClientCnxns=0\n",
                self.dir.join("data").display(),
                self.port
            ),
        )
        .expect("write zoo.cfg");
        let child = spawn_zookeeper(&self.dir);
        let endpoint = self.endpoint();
        let child = self.child.insert(child);
        wait_ready(child, Duration::from_secs(60), || zookeeper_serving(&endpoint)).await
    }
}

/// Spawns a ZooKeeper server with `dir/zoo.cfg`, its log in `dir/zookeeper.log`.
pub(crate) fn spawn_zookeeper(dir: &std::path::Path) -> Child {
    let log = std::fs::File::create(dir.join("zookeeper.log")).expect("create the log");
    let classpath = format!(
        "{}:/etc/zookeeper/conf:{ZOOKEEPER_JAR}:/usr/share/java/slf4j-simple.jar",
        dir.display()
    );
    Command::new("java")
        .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
        .args(["-cp", &classpath, "org.apache.zookeeper.server.quorum.QuorumPeerMain"])
        .arg(dir.join("zoo.cfg"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ZooKeeper")
}

/// Whether ZooKeeper and Java are installed; under `CI=true` their absence fails the test.
pub(crate) fn zookeeper_installed() -> bool {
    if std::path::Path::new(ZOOKEEPER_JAR).is_file() && which("java").is_some() {
        return true;
    }
    assert!(
        !is_ci(),
        "ZooKeeper (Debian package zookeeper) is not installed; run scripts/test"
    );
    eprintln!("SKIPPED: ZooKeeper is not installed; run scripts/test");
    false
}

impl Drop for ZookeeperServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether ZooKeeper at `endpoint` serves requests (`srvr` reports a mode only then).
pub async fn zookeeper_serving(endpoint: &str) -> bool {
    let probe = async {
        let mut stream = TcpStream::connect(endpoint).await.ok()?;
        stream.write_all(b"srvr").await.ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        Some(body.lines().any(|l| l.starts_with("Mode:")))
    };
    tokio::time::timeout(Duration::from_secs(1), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Polls `ready` until it holds (`true`), or the child exits or `timeout` passes (`false`).
pub(crate) async fn wait_ready<F, Fut>(child: &mut Child, timeout: Duration, ready: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if ready().await {
            return true;
        }
        if !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn which(binary: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join(binary))
        .find(|p| p.is_file())
}
