//! waypost against the shared etcd (scripts/test) and two UserService providers of this
//! process: listings, calls, watch, rules, health, and every error as one line with exit 1.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use waypost::config::RpcConfig;
use waypost::server::ServerBuilder;
use waypost_example_api::{InMemoryUsers, UserServiceServer};
use waypost_tests::process::lines;
use waypost_tests::servers::shared_etcd;

/// A configuration file for a fresh registry root.
struct Setup {
    yaml: String,
    file: PathBuf,
}

impl Setup {
    fn new(endpoint: &str, name: &str) -> Self {
        Self::with_sections(endpoint, name, "", "")
    }

    /// With `server_extra` inside the server section and `more` (whole sections) after it.
    fn with_sections(endpoint: &str, name: &str, server_extra: &str, more: &str) -> Self {
        let root = format!("/ctl-{name}-{}-{}", std::process::id(), nanos());
        Self::from_yaml(
            name,
            format!(
                "rpc:\n  server: {{ host: 127.0.0.1, port: 0, deregister_quiet_ms: 0{server_extra} }}\n  registry: {{ type: etcd, endpoints: [\"{endpoint}\"], root: \"{root}\" }}\n{more}"
            ),
        )
    }

    fn from_yaml(name: &str, yaml: String) -> Self {
        let file = std::env::temp_dir().join(format!("waypost-ctl-{name}-{}-{}.yaml", std::process::id(), nanos()));
        std::fs::write(&file, &yaml).unwrap();
        Self { yaml, file }
    }

    fn config(&self) -> RpcConfig {
        RpcConfig::from_yaml(&self.yaml).unwrap()
    }

    /// Runs waypost with `args` after `--config FILE`: (exit code, stdout, stderr).
    async fn run(&self, args: &[&str]) -> (i32, String, String) {
        let file = self.file.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let out = Command::new(env!("CARGO_BIN_EXE_waypost"))
                .arg("--config")
                .arg(&file)
                .args(&args)
                .output()
                .unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .await
        .unwrap()
    }

    /// Asserts that `args` fail with exit 1 and one stderr line containing every needle.
    async fn fails(&self, args: &[&str], needles: &[&str]) {
        let (code, _, stderr) = self.run(args).await;
        assert_eq!(code, 1, "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line, got {stderr:?}");
        for needle in needles {
            assert!(
                lines[0].contains(needle),
                "{args:?}: {needle:?} missing from {:?}",
                lines[0]
            );
        }
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// A UserService provider registered with `setup`'s configuration.
async fn provider(setup: &Setup) -> waypost::Provider {
    let config = setup.config();
    let listener = waypost::server::listen("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let builder =
        ServerBuilder::from_config(&config.server).add_service(UserServiceServer::new(InMemoryUsers::new(addr)));
    waypost::serve_listener(&config, builder, listener).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_calls_and_checks_health() {
    let Some(endpoints) = shared_etcd() else { return };
    let endpoint = &endpoints[0];
    let setup = Setup::new(endpoint, "list");
    let providers = [provider(&setup).await, provider(&setup).await];
    let addresses: Vec<String> = providers.iter().map(|p| p.instances()[0].address()).collect();

    let (code, stdout, _) = setup.run(&["services"]).await;
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), format!("{:<40} 2 instances", "UserService:1.0"));
    let (_, stdout, _) = setup.run(&["--json", "services"]).await;
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        listed,
        serde_json::json!([{"service": "UserService:1.0", "instances": 2}])
    );

    let (code, stdout, _) = setup.run(&["instances", "UserService:1.0"]).await;
    assert_eq!(code, 0);
    assert!(stdout.starts_with("ADDRESS"), "{stdout}");
    for address in &addresses {
        assert!(stdout.contains(address.as_str()), "{stdout}");
    }
    let (_, stdout, _) = setup.run(&["instances", "UserService:1.0", "--json"]).await;
    let instances: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(instances.len(), 2);
    assert_eq!(instances[0]["weight"], 1);

    let (code, stdout, stderr) = setup.run(&["call", "UserService:1.0", "get_user", "[1]"]).await;
    assert_eq!(code, 0, "{stderr}");
    let user: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((user["id"].as_u64(), user["name"].as_str()), (Some(1), Some("Barbara")));
    assert!(addresses.iter().any(|a| user["served_by"] == a.as_str()), "{user}");
    let (code, stdout, _) = setup.run(&["call", "UserService:1.0", "whoami", "[]", "--json"]).await;
    assert_eq!(code, 0);
    assert!(
        addresses.iter().any(|a| stdout.trim() == format!("\"{a}\"")),
        "{stdout}"
    );

    let (code, stdout, _) = setup.run(&["health", "UserService:1.0"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        stdout.lines().filter(|l| l.ends_with(" serving")).count(),
        2,
        "{stdout}"
    );

    // Errors: one line, exit 1.
    setup
        .fails(
            &["call", "UserService:1.0", "get_user", "[99]"],
            &["get_user returned an error", "NotFound"],
        )
        .await;
    setup
        .fails(
            &["call", "UserService:1.0", "get_user", "[\"x\"]"],
            &["the provider could not decode the arguments", "expected u64"],
        )
        .await;
    setup
        .fails(&["call", "UserService:1.0", "get_user", "1"], &["is not a JSON array"])
        .await;
    setup
        .fails(
            &["call", "UserService:1.0", "absent", "[]"],
            &["unknown method", "absent"],
        )
        .await;
    setup
        .fails(
            &["call", "Nope:1.0", "get_user", "[1]"],
            &["unknown service Nope:1.0", "UserService:1.0"],
        )
        .await;
    setup
        .fails(&["instances", "Nope:1.0"], &["unknown service Nope:1.0"])
        .await;

    for p in providers {
        p.shutdown().await;
    }
}

#[tokio::test]
async fn an_unreachable_registry_or_a_bad_file_is_one_line() {
    let unreachable = Setup {
        yaml: String::new(),
        file: std::env::temp_dir().join(format!("waypost-ctl-unreachable-{}.yaml", std::process::id())),
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &unreachable.file,
        format!("rpc:\n  registry: {{ type: etcd, endpoints: [\"127.0.0.1:{port}\"], timeout_ms: 500 }}\n"),
    )
    .unwrap();
    unreachable
        .fails(&["services"], &["etcd", &format!("127.0.0.1:{port}")])
        .await;
    std::fs::write(&unreachable.file, "rpc:\n  registry: { type: consul }\n").unwrap();
    unreachable.fails(&["services"], &["rpc.registry.type", "consul"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_arrivals_and_departures_within_a_second() {
    let Some(endpoints) = shared_etcd() else { return };
    let endpoint = &endpoints[0];
    let setup = Setup::new(endpoint, "watch");
    let first = provider(&setup).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_waypost"))
        .arg("--config")
        .arg(&setup.file)
        .args(["watch", "UserService:1.0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines(child.stdout.take().unwrap());
    let next_line = |within: Duration| lines.recv_timeout(within).expect("a line from waypost watch");
    assert_eq!(
        next_line(Duration::from_secs(10)),
        "watching UserService:1.0: 1 instance(s)"
    );
    assert!(next_line(Duration::from_secs(1)).contains(&first.instances()[0].address()));

    let started = Instant::now();
    let second = provider(&setup).await;
    let address = second.instances()[0].address();
    let arrival = next_line(Duration::from_secs(1));
    assert!(arrival.starts_with(&format!("+ {address} ")), "{arrival}");
    let arrived_in = started.elapsed();

    let started = Instant::now();
    second.shutdown().await;
    let departure = next_line(Duration::from_secs(1));
    assert_eq!(departure, format!("- {address}"));
    println!(
        "arrival shown {arrived_in:?} after registering; departure {:?} after shutdown began",
        started.elapsed()
    );

    // Ctrl-C (SIGINT) ends it with success.
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
    first.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_are_validated_set_shown_and_cleared() {
    let Some(endpoints) = shared_etcd() else { return };
    let endpoint = &endpoints[0];
    let setup = Setup::new(endpoint, "rules");
    let (code, stdout, _) = setup.run(&["rules", "UserService:1.0"]).await;
    assert_eq!(code, 0);
    assert!(stdout.starts_with("UserService:1.0 has no rules"), "{stdout}");

    let file = setup.file.with_extension("rules.json");
    std::fs::write(&file, r#"{"disabled": ["not an address"]}"#).unwrap();
    setup
        .fails(
            &["rules", "UserService:1.0", "--set", file.to_str().unwrap()],
            &["invalid rules", "disabled"],
        )
        .await;
    std::fs::write(&file, r#"{"timeout_ms": 800, "weights": {"127.0.0.1:9001": 5}}"#).unwrap();
    let (code, stdout, _) = setup
        .run(&["rules", "UserService:1.0", "--set", file.to_str().unwrap()])
        .await;
    assert_eq!(code, 0);
    assert!(stdout.starts_with("rules of UserService:1.0 set"), "{stdout}");
    let (_, stdout, _) = setup.run(&["rules", "UserService:1.0", "--json"]).await;
    let shown: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown["rules"]["timeout_ms"], 800);
    assert_eq!(shown["invalid"], Value::Null);
    let (code, _, _) = setup.run(&["rules", "UserService:1.0", "--clear"]).await;
    assert_eq!(code, 0);
    let (_, stdout, _) = setup.run(&["rules", "UserService:1.0"]).await;
    assert!(stdout.starts_with("UserService:1.0 has no rules"), "{stdout}");
    let _ = std::fs::remove_file(&file);
}

/// With mTLS and a bearer token on the providers, waypost calls and probes with the
/// consumer's TLS files and token; a wrong token is refused in one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_probes_providers_over_mtls_with_a_token() {
    let Some(endpoints) = shared_etcd() else { return };
    let pki = waypost_testkit::pki::TestPki::new();
    let server_tls = format!(
        ", tls: {{ cert: {}, key: {}, client_ca: {} }}, auth: {{ tokens: [ctl-token] }}",
        pki.server.cert.display(),
        pki.server.key.display(),
        pki.ca.ca().display()
    );
    let consumer = |token: &str| {
        format!(
            "  consumer: {{ tls: {{ ca: {}, cert: {}, key: {} }}, auth: {{ token: {token} }} }}\n",
            pki.ca.ca().display(),
            pki.client.cert.display(),
            pki.client.key.display()
        )
    };
    let setup = Setup::with_sections(&endpoints[0], "tls", &server_tls, &consumer("ctl-token"));
    let provider = provider(&setup).await;

    let (code, stdout, stderr) = setup.run(&["call", "UserService:1.0", "get_user", "[1]"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"id\": 1"), "{stdout}");
    let (code, stdout, stderr) = setup.run(&["health", "UserService:1.0"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("serving"), "{stdout}");

    let wrong = Setup::from_yaml("tls-wrong", setup.yaml.replace("token: ctl-token", "token: guessed"));
    wrong
        .fails(
            &["call", "UserService:1.0", "get_user", "[1]"],
            &["unauthenticated", "not valid"],
        )
        .await;
    provider.shutdown().await;
}

/// A later UserService whose `get_user` takes a name: incompatible with example-api's.
mod by_name {
    #[waypost::service(name = "UserService", version = "1.0")]
    pub trait UserService {
        async fn get_user(&self, id: String) -> String;
        async fn whoami(&self) -> String;
    }

    pub struct Impl;

    impl UserService for Impl {
        async fn get_user(&self, id: String) -> String {
            id
        }
        async fn whoami(&self) -> String {
            "by-name".into()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describes_a_service_and_compares_the_schemas_in_use() {
    let Some(endpoints) = shared_etcd() else { return };
    let setup = Setup::new(&endpoints[0], "schemas");
    let first = provider(&setup).await;

    let (code, stdout, stderr) = setup.run(&["describe", "UserService:1.0"]).await;
    assert_eq!(code, 0, "{stderr}");
    let fingerprint = waypost_example_api::UserServiceClient::schema().fingerprint();
    assert!(
        stdout.starts_with(&format!(
            "UserService:1.0  schema {fingerprint} on 1 of the instances\n"
        )),
        "{stdout}"
    );
    for line in [
        "  get_user(id: u64) -> Result<User, UserError>  [idempotent]",
        "  whoami() -> String  [idempotent]",
        "  struct User { id: u64, name: String, served_by: String }",
        "  enum UserError { NotFound(u64) }",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line:?} not in\n{stdout}");
    }
    let (code, stdout, _) = setup.run(&["describe", "UserService:1.0", "--json"]).await;
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["fingerprint"], fingerprint.as_str());
    assert_eq!(doc["methods"][0]["name"], "get_user");
    assert_eq!(doc["methods"][0]["arguments"]["required"], serde_json::json!(["id"]));
    assert_eq!(doc["methods"][0]["result"]["$ref"], "#/$defs/User");
    assert_eq!(doc["$defs"]["User"]["properties"]["served_by"]["type"], "string");

    // One schema in use: nothing to compare.
    let (code, stdout, _) = setup.run(&["schemas", "UserService:1.0"]).await;
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.starts_with(&format!("schema {fingerprint}  1 instance(s): ")),
        "{stdout}"
    );

    // A provider of another, incompatible schema joins.
    let config = setup.config();
    let listener = waypost::server::listen("127.0.0.1:0").await.unwrap();
    let builder =
        ServerBuilder::from_config(&config.server).add_service(by_name::UserServiceServer::new(by_name::Impl));
    let second = waypost::serve_listener(&config, builder, listener).await.unwrap();
    let other = by_name::UserServiceClient::schema().fingerprint();
    let (code, stdout, stderr) = setup.run(&["schemas", "UserService:1.0"]).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stderr.contains("UserService:1.0: 2 pair(s) of the schemas in use are incompatible"),
        "{stderr}"
    );
    for line in [
        format!("clients of {fingerprint} calling providers of {other}: INCOMPATIBLE"),
        "  INCOMPATIBLE: get_user(id): written as u64, read as String".to_owned(),
        "  INCOMPATIBLE: get_user result: written as String, read as User".to_owned(),
    ]
    .iter()
    {
        assert!(stdout.lines().any(|l| l == line), "{line:?} not in\n{stdout}");
    }
    let (_, stdout, _) = setup.run(&["schemas", "UserService:1.0", "--json"]).await;
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["schemas"].as_array().map(Vec::len), Some(2));
    assert_eq!(report["pairs"][0]["compatible"], false);

    first.shutdown().await;
    second.shutdown().await;
}

/// A schema text written over a provider's fingerprint key (here: its own schema without
/// `get_user`) is not trusted: consumers ignore it (with a warning) and call `get_user` as
/// before, `waypost schemas` flags it and exits 1, and the provider writes its own again when it
/// registers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_schema_is_flagged_ignored_by_consumers_and_written_again_by_its_provider() {
    use waypost::registry::read_published_schema;
    let Some(endpoints) = shared_etcd() else { return };
    let setup = Setup::new(&endpoints[0], "forged");
    let config = setup.config();
    let first = provider(&setup).await;
    let registry = waypost::connect(&config.registry).await.unwrap();
    let real = waypost_example_api::UserServiceClient::schema();
    let fingerprint = real.fingerprint();
    let mut forged = real.clone();
    forged.methods.retain(|m| m.name != "get_user");
    let forged = serde_json::to_string(&forged).unwrap();
    registry
        .put_schema("UserService:1.0", &fingerprint, &forged)
        .await
        .unwrap();

    let consumer = waypost::consumer(&config).await.unwrap();
    let client = waypost_example_api::UserServiceClient::new(consumer.channel()).unwrap();
    for id in 1..=3 {
        assert_eq!(client.get_user(id).await.expect("get_user is still called").id, id);
    }

    let (code, stdout, stderr) = setup.run(&["schemas", "UserService:1.0"]).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("NOT TRUSTED"), "{stdout}");
    assert!(
        stderr.contains("UserService:1.0: 1 schema key(s) hold a text that is not the schema their fingerprint names"),
        "{stderr}"
    );

    // A provider registering (a restart, another instance) puts the real text back.
    let second = provider(&setup).await;
    let text = registry
        .get_schema("UserService:1.0", &fingerprint)
        .await
        .unwrap()
        .expect("a schema");
    assert_eq!(
        read_published_schema(&fingerprint, &text).expect("the real schema"),
        real
    );
    let (code, _, stderr) = setup.run(&["schemas", "UserService:1.0"]).await;
    assert_eq!(code, 0, "{stderr}");

    consumer.close().await;
    first.shutdown().await;
    second.shutdown().await;
}
