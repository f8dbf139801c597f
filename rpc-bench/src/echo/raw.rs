//! The raw TCP floor: one connection, `concurrency` length-prefixed frames kept in flight,
//! pipelined, batched writes, no task, allocation or serialization per call. The server echoes
//! each byte as it arrives. No framework can beat this.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{measure_window, payload, spawn_server, Framework, Phase, Sample, Timing};

/// The floor.
pub struct RawTcp;

impl Framework for RawTcp {
    fn name(&self) -> String {
        "raw-tcp-floor".to_owned()
    }

    fn serve(&self, listener: std::net::TcpListener) -> Box<dyn std::any::Any + Send> {
        spawn_server(listener, |listener| async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let _ = sock.set_nodelay(true);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 256 * 1024];
                    loop {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if sock.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        })
    }

    fn load(
        &self,
        addr: SocketAddr,
        size: usize,
        concurrency: usize,
        timing: Timing,
    ) -> Pin<Box<dyn Future<Output = Sample> + Send>> {
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await.expect("raw connect");
            let _ = stream.set_nodelay(true);
            let (mut rd, mut wr) = stream.into_split();
            let mut frame = (size as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&payload(size));
            let frame_len = frame.len();
            let phase = Phase::default();
            let driver_phase = phase.clone();
            let driver = async move {
                let mut sent: VecDeque<Instant> = VecDeque::with_capacity(concurrency);
                let mut latencies = Vec::with_capacity(1 << 16);
                let mut out = Vec::with_capacity(frame_len * concurrency);
                for _ in 0..concurrency {
                    out.extend_from_slice(&frame);
                    sent.push_back(Instant::now());
                }
                wr.write_all(&out).await.expect("raw write");
                let mut inbuf = vec![0u8; 256 * 1024];
                let mut pending = 0usize; // bytes of the current frame already read
                while !driver_phase.stopped() {
                    let n = rd.read(&mut inbuf).await.expect("raw read");
                    assert!(n > 0, "raw server closed");
                    pending += n;
                    out.clear();
                    while pending >= frame_len {
                        pending -= frame_len;
                        let started = sent.pop_front().expect("a frame in flight");
                        if driver_phase.measuring() {
                            latencies.push(started.elapsed().as_micros() as u32);
                        }
                        out.extend_from_slice(&frame);
                        sent.push_back(Instant::now());
                    }
                    if !out.is_empty() {
                        wr.write_all(&out).await.expect("raw write");
                    }
                }
                latencies
            };
            let driver = tokio::spawn(driver);
            let (latencies_us, elapsed) =
                measure_window(&phase, timing, async move { driver.await.unwrap_or_default() }).await;
            Sample { latencies_us, elapsed }
        })
    }
}
