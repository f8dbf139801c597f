//! A provider that accepts calls and never answers: every call fails by its deadline (at it, or
//! earlier when the ping sent after the first timeout went unanswered and the calls waiting
//! were failed), and the client keeps neither pending calls, nor tasks, nor memory afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use waypost_core::client::{ClientOptions, ClusterInvoker, ConnectionPool};
use waypost_core::{Channel, ErrorKind};
use waypost_tests::load::{ms, report, resident_bytes};
use waypost_tests::{wait_until, TestServiceClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_a_stuck_provider_fail_by_their_deadline_and_leak_nothing() {
    // Accepts, reads everything, answers nothing.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stuck = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = vec![0u8; 64 * 1024];
                while sock.read(&mut sink).await.map(|n| n > 0).unwrap_or(false) {}
            });
        }
    });
    let options = ClientOptions {
        probe_timeout: Duration::from_millis(300),
        ..ClientOptions::default()
    };
    let pool = Arc::new(ConnectionPool::new(options));
    let deadline = Duration::from_millis(100);
    let client = TestServiceClient::new(
        Channel::new(Arc::new(ClusterInvoker::direct(&addr, pool.clone()).unwrap())).with_timeout(deadline),
    )
    .unwrap();
    // Warm up: the connection and the runtime's own tasks exist before counting.
    assert_eq!(client.echo(0).await.unwrap_err().kind(), ErrorKind::Timeout);
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();
    let rss_before = resident_bytes();

    let workers = 50;
    let per_worker = 40;
    let started = Instant::now();
    let mut handles = Vec::new();
    let abandoned = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for w in 0..workers {
        let client = client.clone();
        let abandoned = abandoned.clone();
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for i in 0..per_worker {
                let t = Instant::now();
                let err = client.echo(w * 1000 + i).await.unwrap_err();
                match err.kind() {
                    ErrorKind::Timeout => latencies.push(t.elapsed()),
                    // Waiting when the probe went unanswered: failed early, saying why.
                    ErrorKind::ConnectionClosed => {
                        assert!(err.to_string().contains("did not answer a ping"), "{err}");
                        abandoned.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    _ => panic!("{err}"),
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for h in handles {
        latencies.extend(h.await.unwrap());
    }
    let took = started.elapsed();
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    assert!(
        latencies[0] >= Duration::from_millis(95),
        "a call timed out before its deadline: {:?}",
        latencies[0]
    );
    let abandoned = abandoned.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        abandoned <= workers as usize,
        "{abandoned} calls failed early: at most one per worker"
    );
    assert!(
        p99 < deadline * 3,
        "p99 time to fail {p99:?} for a {deadline:?} deadline"
    );

    let conn = pool.get(&addr, None).await.unwrap();
    assert_eq!(conn.pending_calls(), 0, "timed-out calls left pending entries");
    wait_until(
        Duration::from_secs(5),
        "the client's tasks are back to the baseline",
        || {
            let n = metrics.num_alive_tasks();
            async move { n <= tasks_before }
        },
    )
    .await;
    let tasks_after = metrics.num_alive_tasks();
    let rss_after = resident_bytes();
    let growth = rss_after.saturating_sub(rss_before);
    assert!(growth < 32 << 20, "resident memory grew by {} MiB", growth >> 20);
    report(
        "slow and stuck providers (a provider that never answers, 100 ms deadline)",
        serde_json::json!({
            "calls": latencies.len() + abandoned, "timed_out": latencies.len(), "failed_early_unanswered_ping": abandoned, "concurrency": workers,
            "time_to_fail_p50_ms": ms(p50), "time_to_fail_p99_ms": ms(p99), "wall_ms": ms(took),
            "pending_after": conn.pending_calls(), "tasks_before": tasks_before, "tasks_after": tasks_after,
            "rss_growth_kib": growth >> 10,
        }),
    );
    stuck.abort();
}
