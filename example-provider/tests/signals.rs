//! Signals on a running example-provider against the shared etcd: SIGHUP reloads the
//! configuration (a new weight is registered again; an invalid file changes nothing), SIGTERM
//! deregisters and exits 0.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rpc_tests::process::forward_lines;
use rpc_tests::servers::shared_etcd;

fn write_config(path: &PathBuf, endpoint: &str, root: &str, weight: u32) {
    std::fs::write(
        path,
        format!(
            "rpc:\n  server: {{ host: 127.0.0.1, port: 0, weight: {weight}, deregister_quiet_ms: 50 }}\n  registry: {{ type: etcd, endpoints: [\"{endpoint}\"], root: \"{root}\" }}\n"
        ),
    )
    .unwrap();
}

fn registered(endpoint: &str, root: &str) -> String {
    let out = Command::new("etcdctl")
        .args([
            "--endpoints",
            endpoint,
            "get",
            "--prefix",
            &format!("{root}/"),
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_example-provider"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel::<String>();
    forward_lines(child.stdout.take().unwrap(), tx.clone());
    forward_lines(child.stderr.take().unwrap(), tx);
    let expect_line = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line containing {needle:?}"),
            }
        }
    };
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
