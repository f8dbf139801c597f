//! Three provider processes in etcd, one SIGKILLed under load: a `fail_over` consumer loses no
//! call.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rpc_core::config::RpcConfig;
use rpc_tests::process::ProviderProcess;
use rpc_tests::servers::{shared_etcd, unique_root};
use rpc_tests::{wait_until, TestServiceClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_over_loses_no_call_when_one_of_three_providers_is_killed_under_load() {
    let Some(endpoints) = shared_etcd() else { return };
    let registry = format!(
        "  registry:\n    type: etcd\n    endpoints: [\"{}\"]\n    root: \"{}\"\n    ttl_secs: 2\n",
        endpoints[0],
        unique_root("crash")
    );
    let provider_yaml = format!("rpc:\n  server: {{ host: 127.0.0.1, port: 0 }}\n{registry}");
    let binary = Path::new(env!("CARGO_BIN_EXE_test-provider"));
    let mut providers = Vec::new();
    for _ in 0..3 {
        providers.push(ProviderProcess::start(binary, &provider_yaml).await);
    }
    let consumer_yaml = format!(
        "rpc:\n{registry}  consumer:\n    timeout_ms: 2000\n    tolerant: fail_over\n    retry: {{ strategy: none, max_attempts: 3 }}\n"
    );
    let config = RpcConfig::from_yaml(&consumer_yaml).unwrap();
    let consumer = rpc_registry::consumer(&config).await.unwrap();
    let client = TestServiceClient::new(consumer.channel()).unwrap();
    client.owner(0).await.unwrap(); // loads the service and starts its watch
    wait_until(Duration::from_secs(5), "all three providers are discovered", || {
        let n = consumer.cache().cached("TestService:1.0").map_or(0, |l| l.len());
        async move { n == 3 }
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let by_instance = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..16u64)
        .map(|w| {
            let (client, stop, by_instance, failures) =
                (client.clone(), stop.clone(), by_instance.clone(), failures.clone());
            tokio::spawn(async move {
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    match client.owner(i).await {
                        Ok(port) => *by_instance.lock().unwrap().entry(port).or_default() += 1,
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                    i += 16;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let victim = providers[1].port;
    providers[1].kill().await;
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let by_instance = by_instance.lock().unwrap().clone();
    let failures = failures.lock().unwrap().clone();
    let ok: u64 = by_instance.values().sum();
    eprintln!(
        "MEASURED provider SIGKILLed under load (16 workers, fail_over): {ok} calls ok, {} failed, by instance {by_instance:?}, {:?} after the kill",
        failures.len(),
        killed.elapsed()
    );
    assert!(
        failures.is_empty(),
        "calls failed: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert_eq!(by_instance.len(), 3, "the victim served calls before it died");
    assert!(by_instance.contains_key(&victim.to_string()));
    assert!(ok > 500, "only {ok} calls in 4 s");
    consumer.close().await;
}
