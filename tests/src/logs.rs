//! Log lines a test can read: a `tracing` subscriber for the current thread that writes into a
//! buffer.

use std::sync::{Arc, Mutex};

use tracing::subscriber::DefaultGuard;
use tracing_subscriber::util::SubscriberInitExt;

/// What was logged on this thread since [`CapturedLogs::start`], until it is dropped.
pub struct CapturedLogs {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: DefaultGuard,
}

impl CapturedLogs {
    /// Captures the log lines (plain text, every level the default filter lets through) of
    /// the current thread.
    pub fn start() -> Self {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let guard = tracing_subscriber::fmt()
            .with_writer(move || BufferWriter(writer.clone()))
            .with_ansi(false)
            .finish()
            .set_default();
        Self { buffer, _guard: guard }
    }

    /// Bytes logged so far (a mark for [`CapturedLogs::since`]).
    pub fn len(&self) -> usize {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing was logged yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text logged since the mark `from` (0: everything).
    pub fn since(&self, from: usize) -> String {
        let buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(buffer.get(from..).unwrap_or_default()).into_owned()
    }
}

struct BufferWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for BufferWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
