//! Per-service and per-method limits over real TCP: a method's concurrency limit refuses the
//! calls beyond it at once (other methods unaffected), a service's rate limit admits a
//! second's worth and then its rate, the YAML that sets them is checked, and a registered
//! provider follows its rules' limits and shedding live (against etcd). A caller without a
//! token spends no limit: authentication comes before admission.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use waypost_core::auth::{BearerToken, BearerTokens};
use waypost_core::config::{CallLimits, RpcConfig, ServiceLimits};
use waypost_core::server::{RunningServer, ServerBuilder};
use waypost_core::{Channel, ErrorKind};
use waypost_tests::{TestServiceClient, TestServiceImpl, TestServiceServer};

async fn serve(builder: ServerBuilder) -> (RunningServer, TestServiceClient, String) {
    let server = builder
        .add_service(TestServiceServer::new(TestServiceImpl::default()))
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = server.local_addr().expect("addr").to_string();
    let channel = Channel::direct(&addr).expect("channel");
    (server, TestServiceClient::new(channel).expect("client"), addr)
}

#[tokio::test]
async fn a_method_concurrency_limit_refuses_calls_beyond_it_and_spares_other_methods() {
    let limits = ServiceLimits {
        methods: BTreeMap::from([(
            "sleep_echo".to_owned(),
            CallLimits {
                max_concurrent: Some(2),
                rate_per_sec: None,
            },
        )]),
        ..ServiceLimits::default()
    };
    let (_server, client, addr) = serve(ServerBuilder::new().limit("TestService:1.0", limits)).await;
    let calls: Vec<_> = (0..6)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move { client.sleep_echo(n, 300).await })
        })
        .collect();
    // While they run, another method is served, and HTTP callers of the limited one get 429.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(client.echo(7).await.expect("echo is not limited"), 7);
    let url = format!("http://{addr}/TestService/sleep_echo");
    let http = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "-X", "POST", "--data", "[1, 1]", &url])
            .output()
            .expect("curl (scripts/setup installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .expect("curl");
    let (body, status) = http.rsplit_once('\n').expect("a status line");
    assert_eq!(status, "429", "{body}");
    assert!(
        body.contains("overloaded") && body.contains("method concurrency limit"),
        "{body}"
    );
    let mut ok = 0;
    for call in calls {
        match call.await.expect("task") {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Overloaded, "{e}");
                assert!(e.to_string().contains("overloaded"), "{e}");
            }
        }
    }
    assert_eq!(ok, 2, "two at once");
    // The permits came back with the calls.
    assert_eq!(client.sleep_echo(1, 1).await.expect("admitted again"), 1);
}

#[tokio::test]
async fn a_service_rate_limit_admits_a_seconds_worth_then_its_rate() {
    let limits = ServiceLimits {
        rate_per_sec: Some(20),
        ..ServiceLimits::default()
    };
    let (_server, client, _) = serve(ServerBuilder::new().limit("TestService:1.0", limits)).await;
    let started = Instant::now();
    let mut admitted = 0;
    for n in 0..60 {
        match client.echo(n).await {
            Ok(_) => admitted += 1,
            Err(e) => assert_eq!(e.kind(), ErrorKind::Overloaded, "{e}"),
        }
    }
    // 20 at once, plus what refilled while the 60 calls ran.
    let refill = (started.elapsed().as_secs_f64() * 20.0).ceil() as u32;
    assert!(
        (20..=20 + refill).contains(&admitted),
        "{admitted} admitted (refill {refill})"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut later = 0;
    for n in 0..20 {
        later += u32::from(client.echo(n).await.is_ok());
    }
    assert!((8..=16).contains(&later), "about half a second's worth: {later}");
}

/// Authentication comes before admission: 100 calls without a token, over the binary protocol
/// and over HTTP/JSON, are all refused as unauthenticated and spend none of the method's rate
/// of 5 calls a second, so a caller with the token is served right after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_a_token_spend_none_of_a_methods_rate_limit() {
    let limits = ServiceLimits {
        methods: BTreeMap::from([(
            "echo".to_owned(),
            CallLimits {
                max_concurrent: None,
                rate_per_sec: Some(5),
            },
        )]),
        ..ServiceLimits::default()
    };
    let builder = ServerBuilder::new()
        .interceptor(BearerTokens::new(["s3cret"]))
        .limit("TestService:1.0", limits);
    let (server, without_token, addr) = serve(builder).await;

    for n in 0..100 {
        let error = without_token.echo(n).await.expect_err("no token");
        assert_eq!(error.kind(), ErrorKind::Unauthenticated, "call {n}: {error}");
    }
    let channel = Channel::direct(&addr)
        .expect("channel")
        .with_interceptor(BearerToken::new("s3cret"));
    let with_token = TestServiceClient::new(channel).expect("client");
    assert_eq!(
        with_token.echo(7).await.expect("the caller with the token is served"),
        7
    );

    let url = format!("http://{addr}/TestService/echo");
    let mut without = vec![
        "-X".to_owned(),
        "POST".to_owned(),
        "--data".to_owned(),
        "[1]".to_owned(),
    ];
    for _ in 0..100 {
        without.extend(["-o".to_owned(), "/dev/null".to_owned(), url.clone()]);
    }
    let statuses = curl_statuses(without).await;
    assert_eq!(
        statuses,
        vec![401; 100],
        "every call without a token is unauthenticated"
    );
    let with = [
        "-X",
        "POST",
        "--data",
        "[8]",
        "-H",
        "authorization: Bearer s3cret",
        "-o",
        "/dev/null",
        &url,
    ];
    let with = with.map(str::to_owned);
    assert_eq!(
        curl_statuses(with.to_vec()).await,
        [200],
        "the caller with the token is served"
    );
    server.shutdown().await;
}

/// The HTTP status of each request curl makes with `args` (each URL after its own
/// `-o /dev/null`), in order.
async fn curl_statuses(args: Vec<String>) -> Vec<u16> {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("curl")
            .args(["-s", "-w", "%{http_code}\n"])
            .args(&args)
            .output()
            .expect("curl (scripts/setup installs it)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| line.parse().unwrap_or(0))
            .collect()
    })
    .await
    .expect("curl")
}

#[test]
fn limits_come_from_yaml_and_a_zero_names_its_field() {
    let yaml = r#"
rpc:
  server:
    limits:
      "TestService:1.0":
        rate_per_sec: 100
        methods:
          sleep_echo: { max_concurrent: 4 }
"#;
    let config = RpcConfig::from_yaml(yaml).expect("loads");
    let limits = &config.server.limits["TestService:1.0"];
    assert_eq!(limits.rate_per_sec, Some(100));
    assert_eq!(limits.methods["sleep_echo"].max_concurrent, Some(4));
    let zero = yaml.replace("max_concurrent: 4", "max_concurrent: 0");
    let error = RpcConfig::from_yaml(&zero).expect_err("a zero limit").to_string();
    assert!(
        error.contains("rpc.server.limits.TestService:1.0.methods.sleep_echo.max_concurrent"),
        "{error}"
    );
    let unknown = yaml.replace("rate_per_sec: 100", "rate: 100");
    let error = RpcConfig::from_yaml(&unknown)
        .expect_err("an unknown field")
        .to_string();
    assert!(error.contains("rate"), "{error}");
}

/// Starts `count` concurrent `sleep_echo` calls of 300 ms; answers how many were refused
/// overloaded (each other one must succeed).
async fn refused_of(client: &TestServiceClient, count: u64) -> usize {
    let calls: Vec<_> = (0..count)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move { client.sleep_echo(n, 300).await })
        })
        .collect();
    let mut refused = 0;
    for call in calls {
        match call.await.expect("joined") {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Overloaded, "{e}");
                refused += 1;
            }
        }
    }
    refused
}

#[tokio::test]
async fn a_providers_limits_and_shedding_follow_its_rules_live() {
    use waypost_core::registry::Registry;
    use waypost_tests::servers::etcd_config;

    let Some(config) = etcd_config("limit-rules") else {
        return;
    };
    let builder =
        ServerBuilder::from_config(&config.server).add_service(TestServiceServer::new(TestServiceImpl::default()));
    let provider = waypost::serve(&config, builder).await.expect("provider");
    let addr = provider.instances()[0].address();
    let client = TestServiceClient::new(Channel::direct(&addr).expect("channel")).expect("client");
    let operator: Arc<dyn Registry> = waypost_registry::connect(&config.registry).await.expect("operator");
    assert_eq!(refused_of(&client, 6).await, 0, "no limit configured");

    // A rule limits the method to two calls at once: within a watch round trip, four of six
    // are refused.
    let rule = r#"{"limits": {"methods": {"sleep_echo": {"max_concurrent": 2}}}}"#;
    operator.put_rules("TestService:1.0", rule).await.expect("put");
    let deadline = Instant::now() + Duration::from_secs(10);
    while refused_of(&client, 6).await != 4 {
        assert!(Instant::now() < deadline, "the rule's limit never applied");
    }

    // An invalid text is ignored: the last valid limit stays.
    operator
        .put_rules("TestService:1.0", r#"{"limits": {"max_concurrent": 0}}"#)
        .await
        .expect("put");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(refused_of(&client, 6).await, 4, "the last valid rules stay in force");

    // Shedding turned on by a rule: its limit starts at 8 calls in flight.
    operator
        .put_rules("TestService:1.0", r#"{"shedding": true}"#)
        .await
        .expect("put");
    while refused_of(&client, 20).await != 12 {
        assert!(
            Instant::now() < deadline + Duration::from_secs(10),
            "shedding never applied"
        );
    }

    // Deleting the rules restores the configuration: nothing limited.
    operator.delete_rules("TestService:1.0").await.expect("delete");
    while refused_of(&client, 20).await != 0 {
        assert!(
            Instant::now() < deadline + Duration::from_secs(20),
            "the rules' removal never applied"
        );
    }
}
