//! Test helpers for services built on waypost, the ones the framework's own tests and
//! benchmarks use:
//!
//! - [`pki`]: a throw-away certificate authority made at run time (no key is ever committed),
//!   with a server certificate for `localhost` and a client certificate, written as PEM files:
//!   what a test of TLS or mutual TLS needs.
//! - [`load`]: open-loop (a fixed rate of independent calls, as real callers arrive) and
//!   closed-loop (a fixed number of callers, each waiting for its answer) load drivers, for
//!   measuring what a provider serves and how it behaves beyond that.
//! - [`scratch_dir`]: a fresh directory per use, in memory where the machine offers it.
//!
//! These are test helpers: they panic, with a message naming what failed, where a test could
//! not go on (a certificate that cannot be written, a key that cannot be made).

#![deny(missing_docs)]

pub mod load;
pub mod pki;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh directory for a throw-away server's data or a test's files, named after `what` and
/// unique to this call: in memory (`/dev/shm`) where the machine has it, so that a server's
/// fsyncs cost nothing and a busy disk (a build beside the tests) cannot stall a registry's
/// writes or its elections; else under the system's temporary directory. The caller removes it.
///
/// # Panics
///
/// When the directory cannot be created.
pub fn scratch_dir(what: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let shm = Path::new("/dev/shm");
    let root = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = root.join(format!(
        "waypost-test-{what}-{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        fastrand::u32(..)
    ));
    if let Err(err) = std::fs::create_dir_all(&dir) {
        panic!("creating the scratch directory {}: {err}", dir.display());
    }
    dir
}
