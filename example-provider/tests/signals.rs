//! Signals on a running example-provider against the shared etcd: SIGHUP reloads the
//! configuration (a new weight is registered again; an invalid file changes nothing), SIGTERM
//! deregisters and exits 0.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use waypost_tests::process::forward_lines;
use waypost_tests::servers::shared_etcd;

fn write_config(path: &PathBuf, endpoint: &str, root: &str, weight: u32) {
    std::fs::write(
        path,
        format!(
            "rpc:\n  server: {{ host: 127.0.0.1, port: 0, weight: {weight}, deregister_quiet_ms: 50 }}\n  registry: {{ type: etcd, endpoints: [\"{endpoint}\"], root: \"{root}\" }}\n"
        ),
    )
    .unwrap();
}

/// The instance JSON of every UserService instance registered under `root` (the service's
/// published schema, a key of its own that outlives the process, is not an instance).
fn registered(endpoint: &str, root: &str) -> String {
    let out = Command::new("etcdctl")
        .args([
            "--endpoints",
            endpoint,
            "get",
            "--prefix",
            &format!("{root}/UserService:1.0/"),
            "--print-value-only",
        ])
        .output()
        .expect("etcdctl (scripts/setup installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The lines a child process writes to stdout and stderr.
struct Output(mpsc::Receiver<String>);

impl Output {
    /// The next line containing `needle`, waiting at most 10 s for it.
    fn expect(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line containing {needle:?}"),
            }
        }
    }
}

/// Starts example-provider with `config`.
fn start_provider(config: &std::path::Path) -> (std::process::Child, Output) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_example-provider"))
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel::<String>();
    forward_lines(child.stdout.take().unwrap(), tx.clone());
    forward_lines(child.stderr.take().unwrap(), tx);
    (child, Output(lines))
}

#[test]
fn sighup_reloads_and_sigterm_deregisters() {
    let Some(endpoints) = shared_etcd() else { return };
    let endpoint = endpoints[0].clone();
    let root = format!(
        "/signals-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    );
    let config = std::env::temp_dir().join(format!("example-provider-signals-{}.yaml", std::process::id()));
    write_config(&config, &endpoint, &root, 1);
    let (mut child, output) = start_provider(&config);
    let expect_line = |needle: &str| output.expect(needle);
    expect_line("serving UserService:1.0");
    assert!(registered(&endpoint, &root).contains("\"weight\":1"));

    write_config(&config, &endpoint, &root, 5);
    signal(child.id(), "HUP");
    expect_line("registered with weight 5");
    wait_for("etcd holds the new weight", || {
        registered(&endpoint, &root).contains("\"weight\":5")
    });

    std::fs::write(&config, "rpc: [not a mapping").unwrap();
    signal(child.id(), "HUP");
    expect_line("the configuration did not load; keeping the running one");
    assert!(child.try_wait().unwrap().is_none(), "still running");
    assert!(registered(&endpoint, &root).contains("\"weight\":5"));

    signal(child.id(), "TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(registered(&endpoint, &root), "", "nothing left behind");
    let _ = std::fs::remove_file(&config);
}

/// SIGHUP reads the TLS files again: connections opened afterwards get the renewed
/// certificate.
#[tokio::test]
async fn sighup_reloads_the_tls_certificates() {
    use waypost::config::ClientTlsConfig;
    use waypost::tls::ClientTls;
    use waypost_testkit::pki::TestPki;

    let (old, new) = (TestPki::new(), TestPki::new());
    let config = old.ca.dir().join("provider.yaml");
    std::fs::write(
        &config,
        format!(
            "rpc:\n  server: {{ host: 127.0.0.1, port: 0, tls: {{ cert: {}, key: {}, reload_check_ms: 0 }} }}\n  registry: {{ type: memory, root: /tls-reload }}\n",
            old.server.cert.display(),
            old.server.key.display()
        ),
    )
    .unwrap();
    let (mut child, output) = start_provider(&config);
    let expect_line = |needle: &str| output.expect(needle);
    let serving = expect_line("serving UserService:1.0");
    let addr = serving
        .split(" at ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the address in the serving line")
        .to_owned();
    let health = |pki: &TestPki| {
        let addr = addr.clone();
        let ca = pki.ca.ca();
        async move {
            let tls = ClientTls::load(&ClientTlsConfig {
                ca: Some(ca),
                ..ClientTlsConfig::default()
            })
            .await
            .expect("client TLS");
            let options = waypost::client::ClientOptions {
                tls: Some(tls),
                ..Default::default()
            };
            waypost::Channel::direct_with(addr, options)
                .expect("channel")
                .health("UserService:1.0")
                .await
        }
    };
    health(&old).await.expect("the first certificate");

    std::fs::copy(&new.server.cert, &old.server.cert).unwrap();
    std::fs::copy(&new.server.key, &old.server.key).unwrap();
    signal(child.id(), "HUP");
    expect_line("reloaded: TLS certificate");
    health(&new).await.expect("the renewed certificate");
    assert!(
        health(&old).await.is_err(),
        "the old CA no longer verifies the provider"
    );

    signal(child.id(), "TERM");
    assert!(child.wait().unwrap().success());
}
