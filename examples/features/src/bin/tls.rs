//! TLS with client certificates (mTLS): the provider sees who calls.
//!
//! `tls CERT_DIR`: the directory holds `ca.pem`, `server.pem`/`server.key` (for `localhost` and
//! `127.0.0.1`) and `client.pem`/`client.key`; `cargo run -p waypost-tests --bin make-certs DIR`
//! writes a throw-away set (in production: your CA, cert-manager, SPIFFE). The provider asks
//! every client for a certificate signed by the CA, and its handler reads the verified name
//! from the call context; a client without a certificate is turned away at the handshake.
//! The same settings in YAML are `rpc.server.tls` and `rpc.consumer.tls` (docs/security.md).
//!
//! `cargo run -p waypost-examples --bin tls -- CERT_DIR`

use std::path::PathBuf;

use waypost::config::{ClientTlsConfig, ServerTlsConfig};
use waypost::server::ServerBuilder;

#[waypost::service]
pub trait Vault {
    /// Who the provider thinks is calling.
    async fn whoami(&self) -> String;
}

struct Guard;

impl Vault for Guard {
    async fn whoami(&self) -> String {
        let ctx = waypost::context::current();
        ctx.peer_identity()
            .map_or_else(|| "nobody".to_owned(), |identity| identity.to_string())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: tls CERT_DIR (see make-certs)")?);
    let mut config = waypost_examples::config()?;
    config.server.tls = Some(ServerTlsConfig {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_ca: Some(dir.join("ca.pem")),
        handshake_timeout_ms: 10_000,
        reload_check_ms: 0, // only on request; a period picks renewed files up by itself
    });
    config.consumer.tls = Some(ClientTlsConfig {
        ca: Some(dir.join("ca.pem")),
        cert: Some(dir.join("client.pem")),
        key: Some(dir.join("client.key")),
        server_name: Some("localhost".into()),
    });
    let services = ServerBuilder::from_config(&config.server).add_service(VaultServer::new(Guard));
    let provider = waypost::serve(&config, services).await?;

    let consumer = waypost::consumer(&config).await?;
    let vault = VaultClient::new(consumer.channel())?;
    let caller = vault.whoami().await?;
    println!("over mTLS, the provider sees: {caller}");
    if !caller.contains("consumer-a") {
        return Err(waypost_examples::unexpected("the client certificate's name", caller));
    }

    // Without a client certificate the handshake fails, naming why.
    let mut anonymous = config.clone();
    if let Some(tls) = anonymous.consumer.tls.as_mut() {
        tls.cert = None;
        tls.key = None;
    }
    let stranger = waypost::consumer(&anonymous).await?;
    match VaultClient::new(stranger.channel())?.whoami().await {
        Ok(name) => return Err(waypost_examples::unexpected("a refused handshake", name)),
        Err(e) => println!("without a certificate: {e}"),
    }

    stranger.close().await;
    consumer.close().await;
    provider.shutdown().await;
    Ok(())
}
