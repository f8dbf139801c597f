//! HTTP/JSON on the RPC port: any HTTP client can call, and read an OpenAPI description.
//!
//! A provider of `Catalog` serves the RPC protocol and HTTP on one port. This program plays the
//! other language's client with nothing but a TCP socket and HTTP/1.1 text: it calls a method
//! with a JSON array and with an object by parameter name, gets the method's own error as
//! `422`, and reads `GET /openapi.json`. (`scripts/demo polyglot` does the same from Python,
//! with discovery through etcd; docs/protocol.md shows curl.)
//!
//! `cargo run -p waypost-examples --bin http_json`

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use waypost::server::ServerBuilder;

#[derive(Debug, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub price_cents: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum CatalogError {
    Unknown(String),
}

#[waypost::service]
pub trait Catalog {
    async fn item(&self, sku: String) -> Result<Item, CatalogError>;
    async fn total(&self, skus: Vec<String>, discount_percent: Option<u64>) -> u64;
}

struct Shelf;

impl Shelf {
    fn price(sku: &str) -> Option<u64> {
        match sku {
            "tea" => Some(450),
            "mug" => Some(1200),
            _ => None,
        }
    }
}

impl Catalog for Shelf {
    async fn item(&self, sku: String) -> Result<Item, CatalogError> {
        match Self::price(&sku) {
            Some(price_cents) => Ok(Item { sku, price_cents }),
            None => Err(CatalogError::Unknown(sku)),
        }
    }

    async fn total(&self, skus: Vec<String>, discount_percent: Option<u64>) -> u64 {
        let sum: u64 = skus.iter().filter_map(|s| Self::price(s)).sum();
        sum * (100 - discount_percent.unwrap_or(0).min(100)) / 100
    }
}

/// One HTTP/1.1 request on a connection of its own: the status code and the body.
async fn http(addr: &str, method: &str, path: &str, body: &str) -> Result<(u16, String), Box<dyn std::error::Error>> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| waypost_examples::unexpected("an HTTP status line", &response))?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    // The framework answers with Content-Length or chunks; a short body comes in one chunk.
    let body = match body.split_once("\r\n") {
        Some((size, rest)) if usize::from_str_radix(size, 16).is_ok() => rest.split("\r\n").next().unwrap_or(""),
        _ => body,
    };
    Ok((status, body.to_owned()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = waypost_examples::config()?;
    let services = ServerBuilder::from_config(&config.server).add_service(CatalogServer::new(Shelf));
    let provider = waypost::serve(&config, services).await?;
    let addr = provider.local_addr()?.to_string();

    let checks = [
        (
            "POST",
            "/Catalog/item",
            r#"["tea"]"#,
            200,
            r#"{"sku":"tea","price_cents":450}"#,
        ),
        ("POST", "/Catalog:1.0/total", r#"{"skus": ["tea", "mug"]}"#, 200, "1650"),
        ("POST", "/Catalog/total", r#"[["mug"], 50]"#, 200, "600"),
        (
            "POST",
            "/Catalog/item",
            r#"["cake"]"#,
            422,
            r#"{"error":{"Unknown":"cake"}}"#,
        ),
    ];
    for (method, path, body, want_status, want_body) in checks {
        let (status, answer) = http(&addr, method, path, body).await?;
        println!("{method} {path} {body} -> {status} {answer}");
        if (status, answer.as_str()) != (want_status, want_body) {
            return Err(waypost_examples::unexpected(
                &format!("{want_status} {want_body}"),
                (status, answer),
            ));
        }
    }

    let (status, openapi) = http(&addr, "GET", "/openapi.json", "").await?;
    println!("GET /openapi.json -> {status}, {} bytes", openapi.len());
    if status != 200 || !openapi.contains("\"/Catalog:1.0/item\"") {
        return Err(waypost_examples::unexpected(
            "an OpenAPI document naming /Catalog:1.0/item",
            (status, openapi),
        ));
    }

    provider.shutdown().await;
    Ok(())
}
