//! Helpers shared by the integration tests: a test service with controllable behaviour and
//! a deadline-bounded wait.

#![deny(missing_docs)]

/// Runs the Rust blocks of each Markdown file as doc tests of a struct of its own.
macro_rules! markdown_doctests {
    ($($name:ident => $path:literal),+ $(,)?) => {
        $(
            #[cfg(doctest)]
            #[doc = include_str!($path)]
            pub struct $name;
        )+
    };
}

// The README's and the guide's Rust blocks: the README's are the files of an outside crate
// (marked `ignore` here, built by `scripts/check-build`); every other block compiles here.
markdown_doctests! {
    ReadmeDoctests => "../../README.md",
    GuideDefineAndServe => "../../docs/define-and-serve.md",
    GuideDiscover => "../../docs/discover.md",
    GuideConfigure => "../../docs/configure.md",
    GuideResilience => "../../docs/resilience.md",
    GuideSecurity => "../../docs/security.md",
    GuideObservability => "../../docs/observability.md",
    GuideOperations => "../../docs/operations.md",
    GuideTrafficControl => "../../docs/traffic-control.md",
    GuidePerformance => "../../docs/performance.md",
    GuideProtocol => "../../docs/protocol.md",
}

pub mod earlier_build;
pub mod ensemble;
pub mod faulty;
pub mod feed;
pub mod load;
pub mod logs;
pub mod partition;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod scenario;
pub mod servers;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The error of [`TestService::fallible`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TestError {
    /// Asked to fail, with a code.
    Refused {
        /// Reason code.
        code: u16,
    },
}

/// A service with one method per behaviour the tests need.
#[waypost_core::service(name = "TestService", version = "1.0")]
pub trait TestService {
    /// Returns its argument.
    async fn echo(&self, value: u64) -> u64;
    /// Sleeps, then returns its argument.
    async fn sleep_echo(&self, value: u64, delay_ms: u64) -> u64;
    /// Several arguments of several types.
    async fn concat(&self, a: String, b: u8, c: Vec<i32>, d: Option<bool>) -> String;
    /// No arguments, unit result.
    async fn touch(&self);
    /// Panics with the message.
    async fn explode(&self, message: String) -> u32;
    /// Fails with the code when it is non-zero.
    async fn fallible(&self, code: u16) -> Result<Vec<String>, TestError>;
    /// A byte vector of the given size.
    async fn blob(&self, size: u32) -> Vec<u8>;
    /// The label of the instance that answered (`key` is only the call's hash key).
    #[idempotent]
    async fn owner(&self, key: u64) -> String;
}

/// The [`TestService`] implementation; counts calls that ran to the end.
#[derive(Debug, Default, Clone)]
pub struct TestServiceImpl {
    /// Calls that completed.
    pub completed: Arc<AtomicUsize>,
    /// Calls of `touch`.
    pub touched: Arc<AtomicUsize>,
    /// What `owner` answers.
    pub label: String,
}

impl TestServiceImpl {
    /// An implementation whose `owner` answers `label`.
    pub fn labeled(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            ..Self::default()
        }
    }

    fn done<T>(&self, value: T) -> T {
        self.completed.fetch_add(1, Ordering::SeqCst);
        value
    }
}

impl TestService for TestServiceImpl {
    async fn echo(&self, value: u64) -> u64 {
        self.done(value)
    }

    async fn sleep_echo(&self, value: u64, delay_ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        self.done(value)
    }

    async fn concat(&self, a: String, b: u8, c: Vec<i32>, d: Option<bool>) -> String {
        self.done(format!("{a}|{b}|{c:?}|{d:?}"))
    }

    async fn touch(&self) {
        self.touched.fetch_add(1, Ordering::SeqCst);
        self.done(())
    }

    async fn explode(&self, message: String) -> u32 {
        panic!("{message}")
    }

    async fn fallible(&self, code: u16) -> Result<Vec<String>, TestError> {
        self.done(if code == 0 {
            Ok(vec!["fine".to_owned()])
        } else {
            Err(TestError::Refused { code })
        })
    }

    async fn blob(&self, size: u32) -> Vec<u8> {
        self.done(vec![0xab; size as usize])
    }

    async fn owner(&self, _key: u64) -> String {
        self.done(self.label.clone())
    }
}

/// Polls `condition` every 10 ms until it holds, failing with `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
