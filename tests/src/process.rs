//! Child provider processes (the `test-provider` binary) for tests where a process must die.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `test-provider` process; killed when dropped.
pub struct ProviderProcess {
    child: Child,
    /// The port it serves on.
    pub port: u16,
    config: PathBuf,
}

impl ProviderProcess {
    /// Starts `binary` (pass `env!("CARGO_BIN_EXE_test-provider")`) with `yaml` as its
    /// configuration and waits until it has registered.
    pub async fn start(binary: &Path, yaml: &str) -> Self {
        let config = std::env::temp_dir().join(format!(
            "rpc-test-provider-{}-{}.yaml",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::write(&config, yaml).expect("write the provider config");
        let mut child = Command::new(binary)
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn test-provider");
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
        Self { child, port, config }
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
    }
}
