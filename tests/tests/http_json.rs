//! The HTTP/JSON ingress, called by clients no one here wrote: curl over HTTP/1.1 and HTTP/2
//! (prior knowledge), and Python's standard library; every bad input gets a clear 4xx, and the
//! port keeps speaking the RPC protocol.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use waypost_core::auth::BearerTokens;
use waypost_core::server::{RunningServer, ServerBuilder};
use waypost_core::Channel;
use waypost_tests::{TestServiceClient, TestServiceImpl, TestServiceServer};

async fn start(builder: ServerBuilder) -> (RunningServer, String) {
    let server = builder
        .add_service(TestServiceServer::new(TestServiceImpl::default()))
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = server.local_addr().unwrap().to_string();
    (server, addr)
}

/// What curl got: the HTTP status, the body, and the protocol it spoke.
struct Answer {
    status: u16,
    body: String,
    version: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

/// Runs curl with `args` (plus `-s`, and a trailer line with the status and HTTP version).
async fn curl(args: Vec<String>) -> Answer {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code} %{http_version}"])
            .args(&args)
            .output()
            .expect("curl (scripts/setup installs it)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, trailer) = text.rsplit_once('\n').unwrap_or(("", &text));
        let (status, version) = trailer.split_once(' ').unwrap_or((trailer, ""));
        Answer {
            status: status.parse().unwrap_or(0),
            body: body.to_owned(),
            version: version.to_owned(),
        }
    })
    .await
    .unwrap()
}

async fn post(url: String, body: &str, extra: &[&str]) -> Answer {
    let mut args = vec![
        "-X".to_owned(),
        "POST".to_owned(),
        "-H".to_owned(),
        "content-type: application/json".to_owned(),
        "--data-binary".to_owned(),
        body.to_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(url);
    curl(args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_calls_over_http1_and_h2c_on_the_rpc_port() {
    let (server, addr) = start(ServerBuilder::new()).await;
    let echo = post(format!("http://{addr}/TestService/echo"), "[7]", &[]).await;
    assert_eq!(
        (echo.status, echo.body.as_str(), echo.version.as_str()),
        (200, "7", "1.1")
    );

    // HTTP/2 with prior knowledge, the versioned path, arguments by name (`d` is optional).
    let concat = post(
        format!("http://{addr}/TestService:1.0/concat"),
        r#"{"a": "x", "b": 1, "c": [1, 2]}"#,
        &["--http2-prior-knowledge"],
    )
    .await;
    assert_eq!((concat.status, concat.version.as_str()), (200, "2"), "{}", concat.body);
    assert_eq!(concat.json(), json!("x|1|[1, 2]|None"));

    // The method's own error: 422 with its value.
    let refused = post(format!("http://{addr}/TestService/fallible"), "[7]", &[]).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(refused.json(), json!({"error": {"Refused": {"code": 7}}}));

    // The same port still speaks the RPC protocol.
    let client = TestServiceClient::new(Channel::direct(&addr).unwrap()).unwrap();
    assert_eq!(client.echo(3).await.unwrap(), 3);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_and_nothing_else_is_affected() {
    let builder = ServerBuilder::new()
        .max_frame_len(4096)
        .frame_timeout(Duration::from_millis(500));
    let (server, addr) = start(builder).await;
    let url = |path: &str| format!("http://{addr}{path}");
    let cases: Vec<(Answer, u16, &str, &str)> = vec![
        (
            post(url("/Nope/echo"), "[1]", &[]).await,
            404,
            "not_found",
            "no service Nope",
        ),
        (
            post(url("/TestService/nope"), "[1]", &[]).await,
            404,
            "not_found",
            "nope",
        ),
        (
            post(url("/TestService/echo"), "[1", &[]).await,
            400,
            "invalid_argument",
            "",
        ),
        (
            post(url("/TestService/echo"), "[\"x\"]", &[]).await,
            400,
            "invalid_argument",
            "expected u64",
        ),
        (
            post(url("/TestService/echo"), "7", &[]).await,
            400,
            "invalid_argument",
            "JSON array",
        ),
        (
            post(url("/TestService/concat"), r#"{"a": "x"}"#, &[]).await,
            400,
            "invalid_argument",
            "missing argument `b`",
        ),
        (
            post(url("/TestService/echo"), r#"{"value": 1, "extra": 2}"#, &[]).await,
            400,
            "invalid_argument",
            "no argument `extra`",
        ),
        (
            post(url("/TestService/echo"), &format!("[{}]", "1".repeat(5000)), &[]).await,
            413,
            "invalid_argument",
            "over the limit",
        ),
        (
            post(
                url("/TestService/sleep_echo"),
                "[1, 2000]",
                &["-H", "rpc-timeout-ms: 100"],
            )
            .await,
            504,
            "deadline_exceeded",
            "",
        ),
        (
            post(url("/TestService/echo"), "[1]", &["-H", "rpc-timeout-ms: soon"]).await,
            400,
            "invalid_argument",
            "rpc-timeout-ms",
        ),
        (
            curl(vec!["-X".into(), "DELETE".into(), url("/TestService")]).await,
            405,
            "invalid_argument",
            "DELETE",
        ),
    ];
    for (answer, status, code, needle) in &cases {
        assert_eq!(answer.status, *status, "{}", answer.body);
        let error = answer.json();
        assert_eq!(error["code"], *code, "{error}");
        assert!(
            error["message"].as_str().is_some_and(|m| m.contains(needle)),
            "{needle:?} not in {error}"
        );
    }

    // A sender that stops halfway through its body: 408, the connection closed.
    let slow = tokio::task::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
        socket
            .write_all(b"POST /TestService/echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n[1")
            .await
            .unwrap();
        let mut answer = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_string(&mut answer)).await;
        answer
    });
    let answer = slow.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A path that names nothing: 404, and the RPC side is untouched.
    let nothing = curl(vec![format!("http://{}/", server.local_addr().unwrap())]).await;
    assert_eq!(nothing.status, 404, "{}", nothing.body);
    let client = TestServiceClient::new(Channel::direct(server.local_addr().unwrap().to_string()).unwrap()).unwrap();
    assert_eq!(client.echo(5).await.unwrap(), 5);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_token_comes_from_the_authorization_header() {
    let (server, addr) = start(ServerBuilder::new().interceptor(BearerTokens::new(["s3cret"]))).await;
    let url = format!("http://{addr}/TestService/echo");
    let without = post(url.clone(), "[1]", &[]).await;
    assert_eq!(
        (without.status, without.json()["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let wrong = post(url.clone(), "[1]", &["-H", "authorization: Bearer nope"]).await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let right = post(url, "[1]", &["-H", "authorization: Bearer s3cret"]).await;
    assert_eq!((right.status, right.body.as_str()), (200, "1"));
    server.shutdown().await;
}

/// Python's standard library: the OpenAPI document (checked by a real validator,
/// openapi-spec-validator), the service's description, a call by parameter name, an error.
const PYTHON: &str = r#"
import json, sys, urllib.request, urllib.error
from openapi_spec_validator import validate
base = sys.argv[1]
doc = json.load(urllib.request.urlopen(base + "/openapi.json"))
assert doc["openapi"] == "3.1.0", doc["openapi"]
validate(doc)
assert "/TestService:1.0/echo" in doc["paths"], sorted(doc["paths"])
described = json.load(urllib.request.urlopen(base + "/TestService"))
names = sorted(m["name"] for m in described["methods"])
request = urllib.request.Request(base + "/TestService:1.0/concat", method="POST",
    data=json.dumps({"a": "py", "b": 2, "c": [3], "d": True}).encode(),
    headers={"content-type": "application/json"})
result = json.load(urllib.request.urlopen(request))
try:
    urllib.request.urlopen(urllib.request.Request(base + "/TestService/echo", method="POST", data=b"[-1]"))
    status = 200
except urllib.error.HTTPError as e:
    status = e.code
    error = json.load(e)
print(json.dumps({"names": names, "result": result, "status": status, "code": error["code"]}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_reads_the_openapi_document_and_calls() {
    // scripts/test points at the validator scripts/setup installed; without it, only a
    // validator already importable will do (under CI=true the test then fails, naming it).
    let python_path = std::env::var("RPC_TEST_PYTHONPATH").unwrap_or_default();
    let (server, addr) = start(ServerBuilder::new()).await;
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", PYTHON, &format!("http://{addr}")])
            .env("PYTHONPATH", python_path)
            .output()
            .expect("python3 (scripts/setup installs it)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(seen["result"], json!("py|2|[3]|Some(true)"));
    assert_eq!(seen["status"], 400);
    assert_eq!(seen["code"], "invalid_argument");
    let names = seen["names"].as_array().unwrap();
    assert!(
        names.contains(&json!("echo")) && names.contains(&json!("fallible")),
        "{names:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn each_instance_advertises_its_http_endpoint() {
    use waypost_core::registry::{HttpEndpoint, Registry};
    use waypost_core::server::Registration;
    let registry: std::sync::Arc<dyn Registry> = std::sync::Arc::new(waypost_registry::memory::MemoryRegistry::shared(
        &waypost_tests::servers::unique_root("http"),
    ));
    let (mut server, addr) = start(ServerBuilder::new()).await;
    let registration = Registration {
        host: "127.0.0.1".into(),
        weight: 1,
        metadata: Default::default(),
    };
    let instances = server.register(registry.clone(), &registration).await.unwrap();
    let port = server.local_addr().unwrap().port();
    assert_eq!(instances[0].http, Some(HttpEndpoint { port, tls: false }));
    assert!(
        instances[0]
            .to_json()
            .contains(&format!("\"http\":{{\"port\":{port}}}")),
        "{addr}"
    );
    assert_eq!(
        registry.discover("TestService:1.0").await.unwrap()[0].http,
        Some(HttpEndpoint { port, tls: false })
    );
    server.shutdown().await;
}

/// Over TLS, a client that asks for HTTP by ALPN (curl does: `h2`, or `http/1.1`) gets
/// HTTP/JSON, and the RPC client, which asks for none, gets the RPC protocol, on one port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_by_alpn_and_rpc_over_tls_share_the_port() {
    use waypost_core::client::ClientOptions;
    use waypost_core::config::{ClientTlsConfig, ServerTlsConfig};
    use waypost_core::tls::{ClientTls, ServerTls};
    use waypost_testkit::pki::TestPki;

    let pki = TestPki::new();
    let tls = ServerTls::load(&ServerTlsConfig {
        cert: pki.server.cert.clone(),
        key: pki.server.key.clone(),
        client_ca: None,
        handshake_timeout_ms: 2_000,
        reload_check_ms: 0,
    })
    .await
    .expect("load the server's TLS files");
    let (server, addr) = start(ServerBuilder::new().tls(tls)).await;
    let port = server.local_addr().unwrap().port();
    let url = format!("https://localhost:{port}/TestService/echo");
    let ca = pki.ca.ca().display().to_string();
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let answer = post(url.clone(), "[9]", &["--cacert", &ca, flag]).await;
        assert_eq!(
            (answer.status, answer.body.as_str(), answer.version.as_str()),
            (200, "9", version)
        );
    }
    let options = ClientOptions {
        tls: Some(
            ClientTls::load(&ClientTlsConfig {
                ca: Some(pki.ca.ca()),
                cert: None,
                key: None,
                server_name: None,
            })
            .await
            .unwrap(),
        ),
        ..ClientOptions::default()
    };
    let client = TestServiceClient::new(Channel::direct_with(&addr, options).unwrap()).unwrap();
    assert_eq!(client.echo(4).await.unwrap(), 4);
    server.shutdown().await;
}

/// The curl session of the guide's HTTP/JSON section (docs/protocol.md), run against a
/// UserService provider (the guide's `127.0.0.1:9001` replaced by the provider's address):
/// every command prints what the guide says it prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guide_curl_examples_print_what_the_guide_says() {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md")).unwrap();
    let section = guide
        .split("## HTTP/JSON")
        .nth(1)
        .expect("the guide has an HTTP/JSON section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the section's sh block");
    // Each `$ command` with the lines it prints.
    let mut examples: Vec<(String, Vec<String>)> = Vec::new();
    for line in block.lines() {
        match line.strip_prefix("$ ") {
            Some(command) => examples.push((command.to_owned(), Vec::new())),
            None => examples
                .last_mut()
                .expect("output after a command")
                .1
                .push(line.to_owned()),
        }
    }
    assert!(examples.len() >= 4, "{examples:?}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = ServerBuilder::new()
        .add_service(waypost_example_api::UserServiceServer::new(
            waypost_example_api::InMemoryUsers::new(addr.clone()),
        ))
        .serve_listener(listener);
    for (command, expected) in examples {
        let command = command.replace("127.0.0.1:9001", &addr);
        let out = tokio::task::spawn_blocking(move || Command::new("sh").args(["-c", &command]).output())
            .await
            .unwrap()
            .expect("sh");
        let printed = String::from_utf8_lossy(&out.stdout).trim_end().to_owned();
        let expected = expected.join("\n").replace("127.0.0.1:9001", &addr);
        assert_eq!(printed, expected, "the guide's example printed something else");
    }
    server.shutdown().await;
}
