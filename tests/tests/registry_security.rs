//! The whole flow secured, against real registry servers: etcd over TLS with client
//! certificates and authentication, and ZooKeeper digest authentication whose ACLs let only
//! the registering identity change the nodes it created.

use std::time::{Duration, Instant};

use waypost_core::config::RpcConfig;
use waypost_core::registry::Registry;
use waypost_core::server::ServerBuilder;
use waypost_registry::zookeeper::{ZookeeperOptions, ZookeeperRegistry};
use waypost_testkit::pki::TestPki;
use waypost_tests::servers::{shared_zookeeper, unique_root, EtcdServer, ETCD_ROOT};
use waypost_tests::{wait_until, TestServiceClient, TestServiceImpl, TestServiceServer};
use zookeeper_client as zk;

/// The configuration of a secured deployment: etcd over TLS with the client certificate of
/// `pki` and the root user, mTLS between consumer and providers, and a bearer token.
fn secured_config(pki: &TestPki, etcd: &str, root: &str, registry_tls: &str) -> RpcConfig {
    let (user, password) = ETCD_ROOT;
    let (ca, cert, key) = (pki.ca.ca(), &pki.client.cert, &pki.client.key);
    let yaml = format!(
        r#"
rpc:
  registry:
    type: etcd
    endpoints: ["{etcd}"]
    root: {root}
    username: {user}
    password: {password}
    {registry_tls}
  server:
    host: 127.0.0.1
    port: 0
    tls: {{ cert: {server_cert}, key: {server_key}, client_ca: {ca} }}
    auth: {{ tokens: [demo-token] }}
  consumer:
    timeout_ms: 3000
    tls: {{ ca: {ca}, cert: {cert}, key: {key} }}
    auth: {{ token: demo-token }}
"#,
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
        server_cert = pki.server.cert.display(),
        server_key = pki.server.key.display(),
    );
    RpcConfig::from_yaml(&yaml).expect("a valid secured configuration")
}

fn registry_tls(pki: &TestPki) -> String {
    format!(
        "tls: {{ ca: {}, cert: {}, key: {} }}",
        pki.ca.ca().display(),
        pki.client.cert.display(),
        pki.client.key.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_client_certificates_and_auth_carries_the_whole_flow() {
    let pki = TestPki::new();
    let Some(etcd) = EtcdServer::start_with_tls_and_auth(&pki).await else {
        return;
    };
    let config = secured_config(&pki, &etcd.endpoint(), &unique_root("etcd-tls"), &registry_tls(&pki));

    let mut providers = Vec::new();
    for label in ["a", "b"] {
        let builder = ServerBuilder::from_config(&config.server)
            .add_service(TestServiceServer::new(TestServiceImpl::labeled(label.to_owned())));
        providers.push(
            waypost::serve(&config, builder)
                .await
                .expect("a provider over etcd TLS"),
        );
    }
    let consumer = waypost::consumer(&config).await.expect("a consumer over etcd TLS");
    let client = TestServiceClient::new(consumer.channel()).expect("client");
    wait_until(Duration::from_secs(10), "both providers are discovered", || async {
        consumer
            .cache()
            .instances("TestService:1.0")
            .await
            .is_ok_and(|found| found.len() == 2)
    })
    .await;
    let mut owners = std::collections::BTreeSet::new();
    for i in 0..40 {
        owners.insert(client.owner(i).await.expect("a call over mTLS with a token"));
    }
    assert_eq!(owners.len(), 2, "both providers served: {owners:?}");

    // Without TLS, or with a CA file that is not there, the registry is not reached and the
    // error says why.
    let started = Instant::now();
    let plain = secured_config(&pki, &etcd.endpoint().replace("https://", ""), "/plain", "");
    let error = waypost_registry::connect(&plain.registry)
        .await
        .err()
        .expect("plain text to a TLS etcd");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(error.to_string().contains("rpc.registry.tls"), "{error}");
    let missing = pki.ca.dir().join("no-such-ca.pem");
    let broken = secured_config(
        &pki,
        &etcd.endpoint(),
        "/broken",
        &format!(
            "tls: {{ ca: {}, cert: {}, key: {} }}",
            missing.display(),
            pki.client.cert.display(),
            pki.client.key.display()
        ),
    );
    let error = waypost_registry::connect(&broken.registry)
        .await
        .err()
        .expect("a missing CA file")
        .to_string();
    assert!(
        error.contains("rpc.registry.tls.ca") && error.contains(&missing.display().to_string()),
        "{error}"
    );

    for provider in providers {
        provider.shutdown().await;
    }
}

/// With digest credentials the framework's nodes are readable by anyone and writable only by
/// the identity that created them.
#[tokio::test]
async fn zookeeper_nodes_of_an_authenticated_provider_only_it_may_change() {
    let Some(servers) = shared_zookeeper() else { return };
    let root = unique_root("zk-acl");
    let options = |credentials: Option<(&str, &str)>| ZookeeperOptions {
        servers: servers.clone(),
        root: root.clone(),
        session_timeout: Duration::from_secs(10),
        timeout: Duration::from_secs(3),
        credentials: credentials.map(|(u, p)| (u.to_owned(), waypost_core::config::Secret::new(p))),
    };
    let owner = ZookeeperRegistry::connect(options(Some(("alice", "alice-secret"))))
        .await
        .expect("connect with digest auth");
    let instance = waypost_core::registry::ServiceInstance::new("Acl", "1.0", "127.0.0.1", 7100);
    owner.register(&instance).await.expect("register");

    // Anyone reads it.
    let reader = ZookeeperRegistry::connect(options(None))
        .await
        .expect("connect without auth");
    let found = reader.discover("Acl:1.0").await.expect("discover without auth");
    assert_eq!(found.len(), 1, "{found:?}");

    // Nobody else changes or deletes it, with or without other credentials.
    let node = format!("{root}/Acl:1.0/127.0.0.1:7100");
    let anonymous = zk::Client::connect(&servers.join(",")).await.expect("raw client");
    let mallory = zk::Client::connector()
        .with_auth("digest", b"mallory:mallory-secret")
        .connect(&servers.join(","))
        .await
        .expect("raw client with other credentials");
    for (who, client) in [("anonymous", &anonymous), ("mallory", &mallory)] {
        let set = client.set_data(&node, b"{}", None).await;
        assert!(matches!(set, Err(zk::Error::NoAuth)), "{who} set the data: {set:?}");
        let delete = client.delete(&node, None).await;
        assert!(
            matches!(delete, Err(zk::Error::NoAuth)),
            "{who} deleted the node: {delete:?}"
        );
    }
    // The service node itself cannot be filled with forged instances either.
    let forged = anonymous
        .create(
            &format!("{root}/Acl:1.0/127.0.0.1:7666"),
            b"{}",
            &zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all()),
        )
        .await;
    assert!(
        matches!(forged, Err(zk::Error::NoAuth)),
        "anonymous added an instance: {forged:?}"
    );

    // Its owner deregisters as usual.
    owner.deregister(&instance).await.expect("deregister");
    assert!(reader.discover("Acl:1.0").await.expect("discover").is_empty());
}
