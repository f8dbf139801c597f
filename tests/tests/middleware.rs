//! Tower middleware over real TCP: tower's own layers on the server (timeout, concurrency
//! limit with load shedding), a user's async server layer that awaits before deciding and hands
//! the handler a typed extension, client layers that see every call and its reply, and every
//! error kind taken through every path (a server layer, a server interceptor, the client).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::RwLock;
use tower::{Layer, Service, ServiceBuilder};
use waypost_core::client::{ClientCall, ClientStack};
use waypost_core::context::{self, CallContext};
use waypost_core::interceptor::Interceptor;
use waypost_core::protocol::Status;
use waypost_core::server::{RunningServer, ServerBuilder, ServerCall, ServerLayers};
use waypost_core::{BoxError, BoxFuture, Channel, ErrorKind, Reply, RpcError};
use waypost_tests::wait_until;

/// The tenant a server layer resolved, handed to the handler as a typed extension.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tenant(String);

#[waypost_core::service(name = "Work", version = "1.0")]
pub trait Work {
    /// The tenant the handler finds in its context's extensions.
    async fn whose(&self) -> String;
    /// Holds for `ms` milliseconds, then returns them.
    async fn hold(&self, ms: u64) -> u64;
    /// Fails with its own error when `code` is not 0.
    async fn check(&self, code: u32) -> Result<u32, String>;
}

#[derive(Clone, Default)]
struct Worker {
    holding: Arc<AtomicUsize>,
    held: Arc<AtomicUsize>,
}

impl Work for Worker {
    async fn whose(&self) -> String {
        match context::current().extensions().get::<Tenant>() {
            Some(Tenant(name)) => name.clone(),
            None => "nobody".to_owned(),
        }
    }

    async fn hold(&self, ms: u64) -> u64 {
        self.holding.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.held.fetch_add(1, Ordering::SeqCst);
        ms
    }

    async fn check(&self, code: u32) -> Result<u32, String> {
        match code {
            0 => Ok(0),
            other => Err(format!("code {other}")),
        }
    }
}

async fn serve<L: ServerLayers>(builder: ServerBuilder<L>) -> (RunningServer, WorkClient) {
    let server = builder.bind("127.0.0.1:0").await.expect("bind");
    let channel = Channel::direct(server.local_addr().expect("addr").to_string()).expect("channel");
    (server, WorkClient::new(channel).expect("client"))
}

fn client_of(server: &RunningServer) -> Channel {
    Channel::direct(server.local_addr().expect("addr").to_string()).expect("channel")
}

#[tokio::test]
async fn a_timeout_layer_ends_a_slow_handler_with_deadline_exceeded() {
    let worker = Worker::default();
    let (server, client) = serve(
        ServerBuilder::new()
            .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(100)))
            .add_service(WorkServer::new(worker.clone())),
    )
    .await;
    assert_eq!(client.hold(5).await.expect("a fast call passes"), 5);
    let started = Instant::now();
    let error = client.hold(3_000).await.expect_err("the layer ends it");
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "ended by the layer: {:?}",
        started.elapsed()
    );
    // The handler's future was dropped: it never finished.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(worker.held.load(Ordering::SeqCst), 1, "only the fast call finished");
    server.shutdown().await;
}

#[tokio::test]
async fn a_concurrency_limit_with_load_shedding_refuses_the_excess_as_overloaded() {
    let worker = Worker::default();
    let (server, client) = serve(
        ServerBuilder::new()
            .layer(ServiceBuilder::new().load_shed().concurrency_limit(2))
            .add_service(WorkServer::new(worker.clone())),
    )
    .await;
    let admitted: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.hold(600).await })
        })
        .collect();
    let holding = worker.holding.clone();
    wait_until(Duration::from_secs(5), "both admitted calls run", || {
        let holding = holding.clone();
        async move { holding.load(Ordering::SeqCst) == 2 }
    })
    .await;
    for _ in 0..3 {
        let error = client.hold(1).await.expect_err("over the limit");
        assert_eq!(error.kind(), ErrorKind::Overloaded, "{error}");
    }
    for call in admitted {
        assert_eq!(call.await.expect("task").expect("admitted calls complete"), 600);
    }
    assert_eq!(worker.held.load(Ordering::SeqCst), 2, "the refused calls never ran");
    assert_eq!(client.hold(1).await.expect("capacity is back"), 1);
    server.shutdown().await;
}

/// A user's async server layer: looks the call's tenant up in a directory (an await) before
/// deciding, refuses calls without a known one, and hands the handler the tenant.
#[derive(Clone)]
struct RequireTenant {
    known: Arc<RwLock<HashSet<String>>>,
}

impl<S> Layer<S> for RequireTenant {
    type Service = RequireTenantService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireTenantService {
            inner,
            known: self.known.clone(),
        }
    }
}

#[derive(Clone)]
struct RequireTenantService<S> {
    inner: S,
    known: Arc<RwLock<HashSet<String>>>,
}

impl<S> Service<ServerCall> for RequireTenantService<S>
where
    S: Service<ServerCall, Response = Reply> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    type Response = Reply;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Reply, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut call: ServerCall) -> Self::Future {
        // The clone that was made ready serves this call; a fresh clone stays for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let known = self.known.clone();
        Box::pin(async move {
            let Some(tenant) = call.context().metadata().get("tenant").map(str::to_owned) else {
                return Err(RpcError::permission_denied("a tenant is required").into());
            };
            tokio::task::yield_now().await;
            if !known.read().await.contains(&tenant) {
                return Err(RpcError::permission_denied(format!("unknown tenant {tenant}")).into());
            }
            call.context_mut().extensions_mut().insert(Tenant(tenant));
            inner.call(call).await.map_err(Into::into)
        })
    }
}

#[tokio::test]
async fn an_async_server_layer_awaits_refuses_and_hands_the_handler_an_extension() {
    let known = Arc::new(RwLock::new(HashSet::from(["acme".to_owned()])));
    let (server, client) = serve(
        ServerBuilder::new()
            .layer(RequireTenant { known: known.clone() })
            .add_service(WorkServer::new(Worker::default())),
    )
    .await;
    match client.whose().await {
        Err(RpcError::PermissionDenied(message)) => assert_eq!(message, "a tenant is required"),
        other => panic!("expected permission denied, got {other:?}"),
    }
    match client.with_metadata("tenant", "mallory").whose().await {
        Err(RpcError::PermissionDenied(message)) => assert_eq!(message, "unknown tenant mallory"),
        other => panic!("expected permission denied, got {other:?}"),
    }
    assert_eq!(
        client.with_metadata("tenant", "acme").whose().await.expect("known"),
        "acme"
    );
    known.write().await.insert("globex".to_owned());
    assert_eq!(
        client
            .with_metadata("tenant", "globex")
            .whose()
            .await
            .expect("known now"),
        "globex"
    );
    server.shutdown().await;
}

/// What a client layer saw: each call's method and tenant on the way in, and its reply's
/// status or error kind on the way out.
type Seen = Arc<Mutex<Vec<(String, Option<String>, Result<Status, ErrorKind>)>>>;

/// A user's client layer: stamps every call with a tenant and records every call and reply.
#[derive(Clone, Default)]
struct CountCalls {
    seen: Seen,
}

impl<S> Layer<S> for CountCalls {
    type Service = CountCallsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountCallsService {
            inner,
            seen: self.seen.clone(),
        }
    }
}

#[derive(Clone)]
struct CountCallsService<S> {
    inner: S,
    seen: Seen,
}

impl<S> Service<ClientCall> for CountCallsService<S>
where
    S: Service<ClientCall, Response = Reply, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Reply;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Reply, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: ClientCall) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let seen = self.seen.clone();
        Box::pin(async move {
            let method = call.method().name.to_owned();
            let tenant = call.context().metadata().get("tenant").map(str::to_owned);
            call.context_mut().metadata_mut().insert("tenant", "acme");
            let result = inner.call(call).await;
            let end = match &result {
                Ok(reply) => Ok(reply.status),
                Err(error) => Err(error
                    .downcast_ref::<RpcError>()
                    .map_or(ErrorKind::Internal, RpcError::kind)),
            };
            seen.lock().unwrap().push((method, tenant, end));
            result
        })
    }
}

#[tokio::test]
async fn a_client_layer_sees_every_call_and_its_reply_and_what_it_sets_is_sent() {
    let known = Arc::new(RwLock::new(HashSet::from(["acme".to_owned()])));
    let server = ServerBuilder::new()
        .layer(RequireTenant { known })
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(100)))
        .add_service(WorkServer::new(Worker::default()))
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let counter = CountCalls::default();
    let client = WorkClient::new(client_of(&server).layer(counter.clone())).expect("client");
    // The tenant the client layer sets is the one the server's layer and handler see.
    assert_eq!(client.whose().await.expect("stamped by the layer"), "acme");
    assert_eq!(client.check(0).await.expect("ok"), 0);
    assert!(matches!(client.check(7).await, Err(RpcError::Application(e)) if e == "code 7"));
    assert_eq!(
        client.hold(1_000).await.expect_err("server timeout").kind(),
        ErrorKind::Timeout
    );
    let seen = counter.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            ("whose".to_owned(), None, Ok(Status::Ok)),
            ("check".to_owned(), None, Ok(Status::Ok)),
            ("check".to_owned(), None, Ok(Status::ApplicationError)),
            ("hold".to_owned(), None, Err(ErrorKind::Timeout)),
        ]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_timeout_layer_gives_the_caller_a_timeout() {
    let (server, client) = serve(ServerBuilder::new().add_service(WorkServer::new(Worker::default()))).await;
    let client = WorkClient::new(
        client
            .channel()
            .clone()
            .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(50))),
    )
    .expect("client");
    let started = Instant::now();
    assert_eq!(client.hold(2_000).await.expect_err("ended").kind(), ErrorKind::Timeout);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(client.hold(1).await.expect("fast calls pass"), 1);
    server.shutdown().await;
}

/// An error of each kind a server can answer, by its label.
fn sample(label: &str) -> Option<RpcError> {
    Some(match label {
        "connect" => RpcError::Connect {
            addr: "db:5432".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        },
        "timeout" => RpcError::Timeout(Duration::from_millis(3)),
        "service_not_found" => RpcError::ServiceNotFound("Other:1.0".into()),
        "method_not_found" => RpcError::MethodNotFound {
            service: "Other:1.0".into(),
            method: "m".into(),
        },
        "encode" => RpcError::Encode("cannot encode".into()),
        "decode" => RpcError::Decode("cannot decode".into()),
        "protocol" => RpcError::Protocol(waypost_core::ProtocolError::Rejected("bad".into())),
        "connection_closed" => RpcError::ConnectionClosed {
            addr: "db:5432".into(),
            reason: "reset".into(),
            sent: true,
        },
        "overloaded" => RpcError::Overloaded,
        "shutting_down" => RpcError::ShuttingDown,
        "no_instances" => RpcError::NoInstances("Other:1.0".into()),
        "registry" => RpcError::Registry("etcd down".into()),
        "internal" => RpcError::internal("broken"),
        "unauthenticated" => RpcError::Unauthenticated("who are you".into()),
        "permission_denied" => RpcError::PermissionDenied("not you".into()),
        "invalid_metadata" => RpcError::InvalidMetadata("bad entry".into()),
        "refused" => RpcError::Refused("not today".into()),
        "unsupported" => RpcError::Unsupported("not here".into()),
        "schema_mismatch" => RpcError::SchemaMismatch(Box::new(waypost_core::SchemaMismatch {
            service: "Work:1.0".into(),
            method: "whose".into(),
            caller: "0123456789abcdef".into(),
            provider: "fedcba9876543210".into(),
            difference: None,
            provider_schema: serde_json::json!({"name": "Work"}),
        })),
        _ => return None,
    })
}

/// A server layer failing each call with the error its `fail-with` metadata names.
#[derive(Clone)]
struct FailWith<S> {
    inner: S,
}

impl<S> Service<ServerCall> for FailWith<S>
where
    S: Service<ServerCall, Response = Reply> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    type Response = Reply;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Reply, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, call: ServerCall) -> Self::Future {
        let failure = call.context().metadata().get("fail-with").and_then(sample);
        let future = self.inner.call(call);
        Box::pin(async move {
            match failure {
                Some(error) => Err(error.into()),
                None => future.await.map_err(Into::into),
            }
        })
    }
}

/// The same, as a server interceptor (only on calls that ask with `intercept`).
struct FailWithInterceptor;

impl Interceptor for FailWithInterceptor {
    fn on_request(&self, ctx: &mut CallContext) -> Result<(), RpcError> {
        match (
            ctx.metadata().get("intercept"),
            ctx.metadata().get("fail-with").and_then(sample),
        ) {
            (Some(_), Some(error)) => Err(error),
            _ => Ok(()),
        }
    }
}

#[tokio::test]
async fn every_error_kind_reaches_the_caller_as_the_table_says_from_a_layer_and_an_interceptor() {
    let (server, client) = serve(
        ServerBuilder::new()
            .interceptor(FailWithInterceptor)
            .layer(tower::layer::layer_fn(|inner| FailWith { inner }))
            .add_service(WorkServer::new(Worker::default())),
    )
    .await;
    let mut checked = 0;
    for &kind in ErrorKind::ALL {
        let Some(error) = sample(kind.as_str()) else {
            assert_eq!(kind, ErrorKind::Application, "every other kind has a sample");
            continue;
        };
        // A server answers kinds only a client makes (no connection, no instance) as internal.
        let expected = ErrorKind::from_status(kind.status());
        for intercept in [false, true] {
            let mut caller = client.with_metadata("fail-with", kind.as_str());
            if intercept {
                caller = caller.with_metadata("intercept", "yes");
            }
            let got = caller.whose().await.expect_err("refused");
            assert_eq!(got.kind(), expected, "{kind:?} (interceptor: {intercept}): {got}");
            if let RpcError::Unauthenticated(m) | RpcError::PermissionDenied(m) | RpcError::Refused(m) = &got {
                assert_eq!(*m, error.wire_message(), "the server's message reaches the caller");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * (ErrorKind::ALL.len() - 1));
    assert_eq!(client.whose().await.expect("no failure asked"), "nobody");
    server.shutdown().await;
}

/// Client layers never see their stack type named in user code; this one is built from the
/// boxed stack directly to show the type is public and nameable.
#[tokio::test]
async fn a_client_layer_can_be_a_closure_over_the_boxed_stack() {
    let (server, client) = serve(ServerBuilder::new().add_service(WorkServer::new(Worker::default()))).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let channel = client
        .channel()
        .clone()
        .layer(tower::layer::layer_fn(move |inner: ClientStack| {
            let counted = counted.clone();
            tower::util::MapRequest::new(inner, move |call: ClientCall| {
                counted.fetch_add(1, Ordering::SeqCst);
                call
            })
        }));
    let client = WorkClient::new(channel).expect("client");
    for n in 0..5 {
        assert_eq!(client.check(0).await.expect("ok"), 0, "call {n}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    server.shutdown().await;
}
