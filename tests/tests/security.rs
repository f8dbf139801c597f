//! TLS, mTLS and caller authentication over real TCP with certificates made at run time:
//! identities reach the handler, refused calls never do, and every misconfiguration fails
//! fast with an error that names its cause.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use waypost_core::auth::{AllowList, BearerToken, BearerTokens};
use waypost_core::client::ClientOptions;
use waypost_core::config::{ClientTlsConfig, ServerTlsConfig};
use waypost_core::context::CallContext;
use waypost_core::error::ErrorKind;
use waypost_core::interceptor::Interceptor;
use waypost_core::server::{RunningServer, ServerBuilder};
use waypost_core::tls::{ClientTls, ServerTls};
use waypost_core::Channel;
use waypost_core::RpcError;
use waypost_testkit::pki::{CertFiles, Leaf, TestCa, TestPki, CLIENT_NAME};
use waypost_tests::process::ProviderProcess;
use waypost_tests::TestServiceClient;

/// Says who called.
#[waypost_core::service(name = "Whoami", version = "1.0")]
pub trait Whoami {
    /// The caller's certificate names, empty without one.
    async fn whoami(&self) -> Vec<String>;
}

/// A second service, for per-service allow-lists.
#[waypost_core::service(name = "Vault", version = "1.0")]
pub trait Vault {
    /// Counts the calls that reached it.
    async fn open(&self) -> u32;
}

struct WhoamiImpl;

impl Whoami for WhoamiImpl {
    async fn whoami(&self) -> Vec<String> {
        waypost_core::context::current()
            .peer_identity()
            .map(|id| id.names().map(str::to_owned).collect())
            .unwrap_or_default()
    }
}

#[derive(Clone, Default)]
struct VaultImpl {
    opened: Arc<AtomicUsize>,
}

impl Vault for VaultImpl {
    async fn open(&self) -> u32 {
        self.opened.fetch_add(1, Ordering::SeqCst) as u32 + 1
    }
}

/// Counts the requests that arrive, outside every other layer.
#[derive(Clone, Default)]
struct Arrivals(Arc<AtomicUsize>);

impl Interceptor for Arrivals {
    fn on_request(&self, _ctx: &mut CallContext) -> Result<(), RpcError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Short enough that a hang shows, long enough for a loaded machine.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn server_tls_config(server: &CertFiles, client_ca: Option<&std::path::Path>) -> ServerTlsConfig {
    ServerTlsConfig {
        cert: server.cert.clone(),
        key: server.key.clone(),
        client_ca: client_ca.map(ToOwned::to_owned),
        handshake_timeout_ms: 2_000,
        reload_check_ms: 0,
    }
}

async fn tls_server(builder: ServerBuilder, config: &ServerTlsConfig) -> RunningServer {
    let tls = ServerTls::load(config).await.expect("load the server's TLS files");
    builder.tls(tls).bind("127.0.0.1:0").await.expect("bind")
}

fn whoami_server() -> ServerBuilder {
    ServerBuilder::new().add_service(WhoamiServer::new(WhoamiImpl))
}

async fn client_options(config: ClientTlsConfig) -> ClientOptions {
    ClientOptions {
        connect_timeout: CONNECT_TIMEOUT,
        tls: Some(ClientTls::load(&config).await.expect("load the client's TLS files")),
        ..ClientOptions::default()
    }
}

fn tls_client(pki: &TestPki, client: Option<&CertFiles>) -> ClientTlsConfig {
    ClientTlsConfig {
        ca: Some(pki.ca.ca()),
        cert: client.map(|c| c.cert.clone()),
        key: client.map(|c| c.key.clone()),
        server_name: None,
    }
}

fn addr(server: &RunningServer) -> String {
    server.local_addr().expect("local addr").to_string()
}

/// One call to `whoami` at `addr` with `options`: its result and how long it took.
async fn call_whoami(addr: &str, options: ClientOptions) -> (Result<Vec<String>, waypost_core::RpcError>, Duration) {
    let started = Instant::now();
    let client = WhoamiClient::new(Channel::direct_with(addr, options).expect("channel")).expect("client");
    let result = client.whoami().await;
    (result, started.elapsed())
}

/// Fails unless `result` failed with `kind` within the connect timeout, with a message that
/// contains `cause`.
fn assert_fails_fast<T: std::fmt::Debug>(
    what: &str,
    (result, took): (Result<T, waypost_core::RpcError>, Duration),
    kind: ErrorKind,
    cause: &str,
) {
    let error = result.expect_err(what);
    let message = error.to_string();
    assert_eq!(error.kind(), kind, "{what}: {message}");
    assert!(
        message.to_lowercase().contains(&cause.to_lowercase()),
        "{what}: {message:?} does not name {cause:?}"
    );
    // Every case here is TLS refusing the peer: nothing hints at a protocol mismatch.
    assert!(!message.contains("protocol version"), "{what}: {message:?}");
    assert!(took < CONNECT_TIMEOUT, "{what}: took {took:?}");
}

#[tokio::test]
async fn mtls_calls_carry_the_verified_client_identity() {
    let pki = TestPki::new();
    let spiffe = pki.ca.issue(
        "spiffe",
        &Leaf::new("billing", &["billing.internal"]).with_uri("spiffe://example.org/billing"),
    );
    let server = tls_server(whoami_server(), &server_tls_config(&pki.server, Some(&pki.ca.ca()))).await;

    let (names, _) = call_whoami(
        &addr(&server),
        client_options(tls_client(&pki, Some(&pki.client))).await,
    )
    .await;
    assert_eq!(names.expect("an mTLS call"), vec![CLIENT_NAME.to_owned()]);

    let (names, _) = call_whoami(&addr(&server), client_options(tls_client(&pki, Some(&spiffe))).await).await;
    assert_eq!(
        names.expect("an mTLS call"),
        ["billing", "billing.internal", "spiffe://example.org/billing"]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn tls_without_client_certificates_serves_anyone_with_the_ca() {
    let pki = TestPki::new();
    let server = tls_server(whoami_server(), &server_tls_config(&pki.server, None)).await;
    let (names, _) = call_whoami(&addr(&server), client_options(tls_client(&pki, None)).await).await;
    assert_eq!(
        names.expect("a TLS call"),
        Vec::<String>::new(),
        "no identity without a certificate"
    );
    server.shutdown().await;
}

/// Every way a TLS setup can be wrong fails within the connect timeout and says why.
#[tokio::test]
async fn misconfigured_tls_fails_fast_and_names_the_cause() {
    let pki = TestPki::new();
    let mtls = tls_server(whoami_server(), &server_tls_config(&pki.server, Some(&pki.ca.ca()))).await;
    let plain = whoami_server().bind("127.0.0.1:0").await.expect("bind");

    assert_fails_fast(
        "a plain client to a TLS port",
        call_whoami(&addr(&mtls), ClientOptions::default()).await,
        ErrorKind::Unsupported,
        "requires TLS",
    );
    assert_fails_fast(
        "a TLS client to a plain port",
        call_whoami(&addr(&plain), client_options(tls_client(&pki, Some(&pki.client))).await).await,
        ErrorKind::Connect,
        "does it serve TLS",
    );

    let other_ca = TestCa::new("another CA");
    let stranger = other_ca.issue("stranger", &Leaf::new("stranger", &[]));
    let trusts_other_ca = ClientTlsConfig {
        ca: Some(other_ca.ca()),
        ..tls_client(&pki, Some(&pki.client))
    };
    assert_fails_fast(
        "a server certificate from an unknown CA",
        call_whoami(&addr(&mtls), client_options(trusts_other_ca).await).await,
        ErrorKind::Connect,
        "UnknownIssuer",
    );
    let wrong_name = ClientTlsConfig {
        server_name: Some("payments.internal".to_owned()),
        ..tls_client(&pki, Some(&pki.client))
    };
    assert_fails_fast(
        "a server certificate for another name",
        call_whoami(&addr(&mtls), client_options(wrong_name).await).await,
        ErrorKind::Connect,
        "not valid for name \"payments.internal\"",
    );
    assert_fails_fast(
        "no client certificate under mTLS",
        call_whoami(&addr(&mtls), client_options(tls_client(&pki, None)).await).await,
        ErrorKind::ConnectionClosed,
        "CertificateRequired",
    );
    assert_fails_fast(
        "a client certificate from an unknown CA",
        call_whoami(&addr(&mtls), client_options(tls_client(&pki, Some(&stranger))).await).await,
        ErrorKind::ConnectionClosed,
        "UnknownCA",
    );

    let expired = pki
        .ca
        .issue("expired", &Leaf::new("localhost", &["127.0.0.1"]).expired());
    let expired_server = tls_server(whoami_server(), &server_tls_config(&expired, None)).await;
    assert_fails_fast(
        "an expired server certificate",
        call_whoami(&addr(&expired_server), client_options(tls_client(&pki, None)).await).await,
        ErrorKind::Connect,
        "Expired",
    );
    let expired_client = pki.ca.issue("expired-client", &Leaf::new(CLIENT_NAME, &[]).expired());
    assert_fails_fast(
        "an expired client certificate",
        call_whoami(
            &addr(&mtls),
            client_options(tls_client(&pki, Some(&expired_client))).await,
        )
        .await,
        ErrorKind::ConnectionClosed,
        "CertificateExpired",
    );

    // The server served none of them and still serves a good client.
    let (names, _) = call_whoami(&addr(&mtls), client_options(tls_client(&pki, Some(&pki.client))).await).await;
    assert_eq!(
        names.expect("a good client after the bad ones"),
        vec![CLIENT_NAME.to_owned()]
    );
    for server in [mtls, plain, expired_server] {
        server.shutdown().await;
    }
}

/// Missing, malformed and mismatched files are start-up errors naming the field and the file.
#[tokio::test]
async fn unusable_tls_files_are_errors_naming_the_field_and_the_file() {
    let pki = TestPki::new();
    let garbage = pki.ca.dir().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let empty = pki.ca.dir().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let missing = pki.ca.dir().join("missing.pem");
    let other = pki.ca.issue("other", &Leaf::new("other", &[]));

    let server_cases = [
        (
            "rpc.server.tls.cert",
            missing.clone(),
            ServerTlsConfig {
                cert: missing.clone(),
                ..server_tls_config(&pki.server, None)
            },
        ),
        (
            "rpc.server.tls.key",
            empty.clone(),
            ServerTlsConfig {
                key: empty.clone(),
                ..server_tls_config(&pki.server, None)
            },
        ),
        (
            "rpc.server.tls.client_ca",
            garbage.clone(),
            server_tls_config(&pki.server, Some(&garbage)),
        ),
        (
            "rpc.server.tls.key",
            other.key.clone(),
            ServerTlsConfig {
                key: other.key.clone(),
                ..server_tls_config(&pki.server, None)
            },
        ),
    ];
    for (field, file, config) in server_cases {
        let message = ServerTls::load(&config).await.expect_err(field).to_string();
        assert!(message.contains(field), "{message:?} does not name {field}");
        assert!(
            message.contains(&file.display().to_string()),
            "{message:?} does not name {}",
            file.display()
        );
    }

    let client_cases = [
        (
            "rpc.consumer.tls.ca",
            missing.clone(),
            ClientTlsConfig {
                ca: Some(missing.clone()),
                ..tls_client(&pki, None)
            },
        ),
        (
            "rpc.consumer.tls.cert",
            garbage.clone(),
            ClientTlsConfig {
                cert: Some(garbage.clone()),
                ..tls_client(&pki, Some(&pki.client))
            },
        ),
    ];
    for (field, file, config) in client_cases {
        let message = ClientTls::load(&config).await.expect_err(field).to_string();
        assert!(message.contains(field), "{message:?} does not name {field}");
        assert!(
            message.contains(&file.display().to_string()),
            "{message:?} does not name {}",
            file.display()
        );
    }
}

/// Bearer tokens: a call without the right one is refused as unauthenticated before any
/// handler runs, and is not retried.
#[tokio::test]
async fn bearer_tokens_refuse_unknown_callers_before_the_handler() {
    let pki = TestPki::new();
    let vault = VaultImpl::default();
    let arrivals = Arrivals::default();
    let server = tls_server(
        ServerBuilder::new()
            .add_service(VaultServer::new(vault.clone()))
            .outer_interceptor(BearerTokens::new(["old-token", "new-token"]))
            .outer_interceptor(arrivals.clone()),
        &server_tls_config(&pki.server, None),
    )
    .await;
    let options = client_options(tls_client(&pki, None)).await;
    let client = |token: Option<&str>| {
        let channel = Channel::direct_with(addr(&server), options.clone()).expect("channel");
        let channel = match token {
            Some(token) => channel.with_interceptor(BearerToken::new(token)),
            None => channel,
        };
        VaultClient::new(channel).expect("client")
    };

    assert_eq!(client(Some("new-token")).open().await.expect("a known token"), 1);
    assert_eq!(
        client(Some("old-token")).open().await.expect("the other known token"),
        2
    );
    for (token, cause) in [(Some("stolen"), "not valid"), (None, "bearer token is required")] {
        let started = Instant::now();
        let error = client(token).open().await.expect_err("refused");
        assert_eq!(error.kind(), ErrorKind::Unauthenticated, "{error}");
        assert!(error.to_string().contains(cause), "{error}");
        assert!(started.elapsed() < CONNECT_TIMEOUT);
    }
    assert_eq!(
        vault.opened.load(Ordering::SeqCst),
        2,
        "refused calls never reach the handler"
    );
    assert_eq!(
        arrivals.0.load(Ordering::SeqCst),
        4,
        "each refused call arrived once: no retry"
    );
    server.shutdown().await;
}

/// With mTLS, a per-service allow-list: listed identities call, others are denied, services
/// not listed stay open to every verified client.
#[tokio::test]
async fn the_allow_list_admits_listed_client_identities_per_service() {
    let pki = TestPki::new();
    let reporting = pki.ca.issue("reporting", &Leaf::new("reporting", &[]));
    let vault = VaultImpl::default();
    let server = tls_server(
        ServerBuilder::new()
            .add_service(VaultServer::new(vault.clone()))
            .add_service(WhoamiServer::new(WhoamiImpl))
            .outer_interceptor(AllowList::new([("Vault:1.0", vec![CLIENT_NAME])])),
        &server_tls_config(&pki.server, Some(&pki.ca.ca())),
    )
    .await;
    let vault_client = |cert: &CertFiles| {
        let cert = cert.clone();
        let pki = &pki;
        let addr = addr(&server);
        async move {
            let options = client_options(tls_client(pki, Some(&cert))).await;
            VaultClient::new(Channel::direct_with(addr, options).expect("channel")).expect("client")
        }
    };

    assert_eq!(vault_client(&pki.client).await.open().await.expect("listed"), 1);
    let error = vault_client(&reporting).await.open().await.expect_err("not listed");
    assert_eq!(error.kind(), ErrorKind::PermissionDenied, "{error}");
    assert!(
        error.to_string().contains("reporting may not call Vault:1.0"),
        "{error}"
    );
    assert_eq!(
        vault.opened.load(Ordering::SeqCst),
        1,
        "the denied call never reached the handler"
    );

    let (names, _) = call_whoami(&addr(&server), client_options(tls_client(&pki, Some(&reporting))).await).await;
    assert_eq!(
        names.expect("an unlisted service is open"),
        vec!["reporting".to_owned()]
    );
    server.shutdown().await;
}

/// Reloading changed files: new connections get the new certificate, open ones keep theirs.
#[tokio::test]
async fn reloaded_certificates_serve_new_connections() {
    let old_pki = TestPki::new();
    let new_pki = TestPki::new();
    let config = server_tls_config(&old_pki.server, None);
    let tls = ServerTls::load(&config).await.expect("load");
    let server = whoami_server()
        .tls(tls.clone())
        .bind("127.0.0.1:0")
        .await
        .expect("bind");

    let old_client = WhoamiClient::new(
        Channel::direct_with(addr(&server), client_options(tls_client(&old_pki, None)).await).expect("channel"),
    )
    .expect("client");
    old_client.whoami().await.expect("the old certificate");

    assert!(!tls.reload_if_changed().await.expect("check"), "nothing changed yet");
    // Renew on disk: the new CA's certificate and key take the old files' place.
    std::fs::copy(&new_pki.server.cert, &old_pki.server.cert).unwrap();
    std::fs::copy(&new_pki.server.key, &old_pki.server.key).unwrap();
    assert!(
        tls.reload_if_changed().await.expect("reload"),
        "the renewed files are seen"
    );
    assert!(!tls.reload_if_changed().await.expect("check"), "and loaded once");

    let (names, _) = call_whoami(&addr(&server), client_options(tls_client(&new_pki, None)).await).await;
    names.expect("a new connection gets the new certificate");
    assert_fails_fast(
        "a client that trusts only the old CA",
        call_whoami(&addr(&server), client_options(tls_client(&old_pki, None)).await).await,
        ErrorKind::Connect,
        "invalid peer certificate",
    );
    old_client.whoami().await.expect("the open connection keeps working");

    // A reload that fails keeps the running certificate.
    std::fs::write(&old_pki.server.key, "not a key").unwrap();
    let error = tls.reload().await.expect_err("a broken key");
    assert!(error.to_string().contains("rpc.server.tls.key"), "{error}");
    let (names, _) = call_whoami(&addr(&server), client_options(tls_client(&new_pki, None)).await).await;
    names.expect("still the last good certificate");
    server.shutdown().await;
}

/// 1,000 connections that never finish their handshake neither stall other clients nor hold
/// the provider (a process of its own, configured by YAML with mTLS and a token): they are
/// closed at the handshake timeout and its memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_the_handshake_do_not_stall_others() {
    let pki = TestPki::new();
    let yaml = format!(
        "rpc:\n  registry: {{ type: memory, root: /handshake-flood }}\n  server:\n    host: 127.0.0.1\n    port: 0\n    \
         tls: {{ cert: {}, key: {}, client_ca: {}, handshake_timeout_ms: 2000 }}\n    auth: {{ tokens: [flood-token] }}\n",
        pki.server.cert.display(),
        pki.server.key.display(),
        pki.ca.ca().display()
    );
    let provider = ProviderProcess::start(Path::new(env!("CARGO_BIN_EXE_test-provider")), &yaml).await;
    let target = format!("127.0.0.1:{}", provider.port);
    let client = TestServiceClient::new(
        Channel::direct_with(&target, client_options(tls_client(&pki, Some(&pki.client))).await)
            .expect("channel")
            .with_interceptor(BearerToken::new("flood-token")),
    )
    .expect("client");
    assert_eq!(client.echo(1).await.expect("a call before the flood"), 1);
    let (before, _) = provider.memory_kib();

    let mut stalled = Vec::with_capacity(1000);
    for i in 0..1000 {
        let mut stream = tokio::net::TcpStream::connect(&target).await.expect("connect");
        if i % 2 == 0 {
            // Half start a handshake (a TLS record header promising more) and stop.
            tokio::io::AsyncWriteExt::write_all(&mut stream, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                .await
                .expect("write");
        }
        stalled.push(stream);
    }
    let started = Instant::now();
    for i in 0..20 {
        // Each on a new connection, to be handshaken among the stalled ones. The bound is on
        // all 20 (below), not on each call's default deadline: on a loaded machine one
        // handshake may take longer than the default 3 s while the 20 still finish in time.
        let fresh = TestServiceClient::new(
            Channel::direct_with(&target, client_options(tls_client(&pki, Some(&pki.client))).await)
                .expect("channel")
                .with_interceptor(BearerToken::new("flood-token"))
                .with_timeout(CONNECT_TIMEOUT),
        )
        .expect("client");
        assert_eq!(fresh.echo(i).await.expect("a real client among the stalled ones"), i);
    }
    let served_in = started.elapsed();
    let (during, _) = provider.memory_kib();
    let grown = during.saturating_sub(before);
    assert!(served_in < CONNECT_TIMEOUT, "20 calls took {served_in:?}");
    assert!(
        grown < 64 * 1024,
        "1000 stalled handshakes grew the provider by {grown} KiB"
    );

    // The provider closes them at the handshake timeout (2 s): each read ends.
    let closed_by = Instant::now() + Duration::from_secs(15);
    for mut stream in stalled {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout_at(closed_by.into(), tokio::io::AsyncReadExt::read(&mut stream, &mut byte))
            .await
            .expect("the provider closes a stalled handshake");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    let all_closed_after = started.elapsed();
    assert_eq!(client.echo(2).await.expect("the first connection still serves"), 2);
    eprintln!(
        "RELIABILITY {{\"scenario\":\"tls handshake flood\",\"figures\":{{\"stalled_connections\":1000,\"handshake_timeout_ms\":2000,\"new_connections_served_meanwhile\":20,\"their_calls_took_ms\":{},\"provider_memory_growth_kib\":{grown},\"all_stalled_closed_after_ms\":{}}}}}",
        served_in.as_millis(),
        all_closed_after.as_millis()
    );
}

/// A provider picks up certificate files renewed on disk by itself (cert-manager, a
/// Kubernetes secret), within its check period, without a signal.
#[tokio::test]
async fn a_provider_reloads_certificate_files_that_change_on_disk() {
    let (old, new) = (TestPki::new(), TestPki::new());
    let yaml = format!(
        "rpc:\n  registry: {{ type: memory, root: /tls-files }}\n  server:\n    host: 127.0.0.1\n    port: 0\n    \
         tls: {{ cert: {}, key: {}, reload_check_ms: 200 }}\n",
        old.server.cert.display(),
        old.server.key.display()
    );
    let provider = ProviderProcess::start(Path::new(env!("CARGO_BIN_EXE_test-provider")), &yaml).await;
    let target = format!("127.0.0.1:{}", provider.port);
    let echo = |pki: &TestPki| {
        let target = target.clone();
        let config = tls_client(pki, None);
        async move {
            let channel = Channel::direct_with(target, client_options(config).await).expect("channel");
            TestServiceClient::new(channel).expect("client").echo(7).await
        }
    };
    assert_eq!(echo(&old).await.expect("the first certificate"), 7);

    std::fs::copy(&new.server.cert, &old.server.cert).unwrap();
    std::fs::copy(&new.server.key, &old.server.key).unwrap();
    let renewed = Instant::now();
    waypost_tests::wait_until(
        Duration::from_secs(10),
        "the provider serves the renewed certificate",
        || {
            let attempt = echo(&new);
            async move { attempt.await.is_ok() }
        },
    )
    .await;
    assert!(echo(&old).await.is_err(), "the old CA no longer verifies the provider");
    eprintln!("renewed certificate served after {:?}", renewed.elapsed());
}
