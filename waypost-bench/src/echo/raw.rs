//! The raw TCP floor: per connection, `concurrency` length-prefixed frames kept in flight,
//! pipelined, batched writes, no task, allocation or serialization per call. The server echoes
//! each byte as it arrives. No framework can beat this. Bytes only (a frame is bytes).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{
    measure_window, spawn_server, Framework, LoadFuture, Payload, PayloadKind, Phase, ServeFuture, Shape, Timing,
};

/// The floor.
pub struct RawTcp;

impl Framework for RawTcp {
    fn name(&self) -> String {
        "raw-tcp-floor".to_owned()
    }

    fn supports(&self, kind: PayloadKind) -> bool {
        kind == PayloadKind::Bytes
    }

    fn serve(&self, listener: std::net::TcpListener) -> ServeFuture {
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

    fn load(&self, addr: SocketAddr, payload: Payload, shape: Shape, timing: Timing) -> LoadFuture {
        Box::pin(async move {
            let phase = Phase::default();
            let mut drivers = Vec::new();
            for _ in 0..shape.connections {
                let stream = TcpStream::connect(addr).await.expect("raw connect");
                drivers.push(tokio::spawn(drive(stream, payload, shape.concurrency, phase.clone())));
            }
            measure_window(&phase, timing, async move {
                let mut all = Vec::new();
                for d in drivers {
                    all.extend(d.await.unwrap_or_default());
                }
                all
            })
            .await
        })
    }
}

/// Keeps `concurrency` frames in flight on `stream` until the phase says stop; returns the
/// latencies measured. A writer task sends a frame for every one that comes back (the reader
/// must never wait on a write, or large frames would deadlock both ends on full buffers).
async fn drive(stream: TcpStream, payload: Payload, concurrency: usize, phase: Phase) -> Vec<u32> {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut frame = (payload.size as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload.bytes());
    let frame_len = frame.len();
    let (more, mut wanted) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let writer = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(mut n) = wanted.recv().await {
            while let Ok(m) = wanted.try_recv() {
                n += m;
            }
            out.clear();
            for _ in 0..n {
                out.extend_from_slice(&frame);
            }
            if wr.write_all(&out).await.is_err() {
                return;
            }
        }
    });
    let mut sent: VecDeque<Instant> = (0..concurrency).map(|_| Instant::now()).collect();
    let _ = more.send(concurrency);
    let mut latencies = Vec::with_capacity(1 << 16);
    let mut inbuf = vec![0u8; 256 * 1024];
    let mut pending = 0usize; // bytes of the current frame already read
    while !phase.stopped() {
        let n = rd.read(&mut inbuf).await.expect("raw read");
        assert!(n > 0, "raw server closed");
        pending += n;
        let mut completed = 0;
        while pending >= frame_len {
            pending -= frame_len;
            let started = sent.pop_front().expect("a frame in flight");
            if phase.measuring() {
                latencies.push(started.elapsed().as_micros() as u32);
            }
            sent.push_back(Instant::now());
            completed += 1;
        }
        if completed > 0 {
            let _ = more.send(completed);
        }
    }
    writer.abort();
    latencies
}
