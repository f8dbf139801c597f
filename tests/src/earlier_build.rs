//! A provider of an earlier build of the framework, as far as the binary protocol shows it: it
//! answers each frame as the test says (or not at all) and records the header of every frame it
//! receives. Tests use it to check what a newer client sends to an older server: no compressed
//! body to a server that never said it decodes one, no stream frame after a refusal.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::task::AbortOnDropHandle;
use waypost_core::protocol::{encode_frame, FrameDecoder, Header};

/// How an earlier build answers a frame: the response's header and body, or nothing.
pub type Answer = Box<dyn Fn(&Header) -> Option<(Header, Bytes)> + Send + Sync>;

/// The earlier build's server, on a loopback port; it serves one connection and stops when
/// dropped.
pub struct EarlierBuild {
    addr: String,
    received: Arc<Mutex<Vec<Header>>>,
    _serving: AbortOnDropHandle<()>,
}

impl EarlierBuild {
    /// Listens on a free loopback port and answers each frame of its first connection with
    /// `answer`.
    pub async fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address").to_string();
        let received = Arc::new(Mutex::new(Vec::new()));
        let seen = received.clone();
        let serving = tokio::spawn(async move {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut decoder = FrameDecoder::new(64 << 20);
            let mut buf = BytesMut::new();
            loop {
                while let Ok(Some(frame)) = decoder.decode(&mut buf) {
                    seen.lock().unwrap_or_else(PoisonError::into_inner).push(frame.header);
                    if let Some((header, body)) = answer(&frame.header) {
                        let mut out = BytesMut::new();
                        encode_frame(header, &body, &mut out);
                        if socket.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                }
                match socket.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
        Self {
            addr,
            received,
            _serving: AbortOnDropHandle::new(serving),
        }
    }

    /// Its `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The headers of the frames it received so far, in order.
    pub fn received(&self) -> Vec<Header> {
        self.received.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}
