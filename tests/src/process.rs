//! Child provider processes (the `test-provider` binary) for tests where a process must die.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The lines of a child's output (`stream`), read on a thread of their own: receive them with
/// a deadline (`recv_timeout`). The channel closes when the stream ends.
pub fn lines(stream: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    forward_lines(stream, tx);
    rx
}

/// Sends each line of `stream` to `tx` from a thread of its own (several streams may share
/// one channel: a child's stdout and stderr).
pub fn forward_lines(stream: impl std::io::Read + Send + 'static, tx: std::sync::mpsc::Sender<String>) {
    use std::io::BufRead;
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
}

/// Sends the signal `name` (`STOP`, `CONT`, ...) to process `pid`: freezing a process with
/// `STOP` keeps its sockets open and its peers waiting, as a long pause or a stalled VM does.
pub async fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .await
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// A running `test-provider` process; killed when dropped.
pub struct ProviderProcess {
    child: Child,
    /// The port it serves on.
    pub port: u16,
    config: PathBuf,
    log: Option<PathBuf>,
}

/// How a provider process is started.
#[derive(Debug, Clone, Default)]
pub struct ProcessOptions {
    /// A limit on its open files (`prlimit --nofile`).
    pub max_open_files: Option<u64>,
    /// Write its stderr to a file ([`ProviderProcess::log`]) instead of the test's output.
    pub capture_log: bool,
    /// Environment variables to set for it (`RPC_TEST_FAULT`: see `test-provider`).
    pub env: Vec<(String, String)>,
}

impl ProviderProcess {
    /// Starts `binary` (pass `env!("CARGO_BIN_EXE_test-provider")`) with `yaml` as its
    /// configuration and waits until it has registered.
    pub async fn start(binary: &Path, yaml: &str) -> Self {
        Self::start_with(binary, yaml, ProcessOptions::default()).await
    }

    /// Like [`ProviderProcess::start`], with `options`.
    pub async fn start_with(binary: &Path, yaml: &str, options: ProcessOptions) -> Self {
        let config = std::env::temp_dir().join(format!(
            "rpc-test-provider-{}-{}.yaml",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::write(&config, yaml).expect("write the provider config");
        let mut command = match options.max_open_files {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let log = options.capture_log.then(|| config.with_extension("log"));
        let stderr = match &log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("create the provider log")),
            None => Stdio::inherit(),
        };
        let mut child = command
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn test-provider (prlimit comes with util-linux)");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("test-provider did not get ready within 20 s")
            .expect("read test-provider output")
            .expect("test-provider exited before it was ready");
        let port = ready
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected test-provider output: {ready}"));
        Self {
            child,
            port,
            config,
            log,
        }
    }

    /// What the process wrote to stderr, when started with `capture_log`.
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Resident memory now and at its peak, in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// SIGKILL: the process dies without deregistering.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then waits for a graceful exit.
    pub async fn terminate(&mut self) -> std::io::Result<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
        }
        self.child.wait().await
    }
}

impl Drop for ProviderProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.config);
        if let Some(log) = &self.log {
            let _ = std::fs::remove_file(log);
        }
    }
}
