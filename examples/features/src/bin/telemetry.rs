//! OpenTelemetry: a two-hop call exported as one trace.
//!
//! `Frontend::checkout` calls `Payments::charge`; with `rpc.telemetry.otlp_endpoint` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, the four call spans (client and server of each hop) and
//! the application's `checkout` span go to the collector as one trace. Without an endpoint,
//! export is off and the program still runs: the log lines carry the trace id.
//!
//! ```sh
//! docker run -d -p 16686:16686 -p 4317:4317 jaegertracing/all-in-one
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 cargo run -p waypost-examples --bin telemetry
//! # http://127.0.0.1:16686: service waypost-examples, operation Frontend/checkout
//! ```

use tracing::Instrument;
use waypost::server::ServerBuilder;

#[waypost::service]
pub trait Payments {
    async fn charge(&self, cents: u64) -> String;
}

#[waypost::service]
pub trait Frontend {
    async fn checkout(&self, cents: u64) -> String;
}

struct Bank;

impl Payments for Bank {
    async fn charge(&self, cents: u64) -> String {
        tracing::info!(cents, "charging");
        format!("charged {cents} cents")
    }
}

struct Shop {
    payments: PaymentsClient,
}

impl Frontend for Shop {
    async fn checkout(&self, cents: u64) -> String {
        // A call from inside a handler continues the handler's trace.
        self.payments
            .charge(cents)
            .await
            .unwrap_or_else(|e| format!("payment failed: {e}"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = waypost_examples::config()?;
    let telemetry = waypost::telemetry::init(&config)?;

    let payments = waypost::serve(
        &config,
        ServerBuilder::from_config(&config.server).add_service(PaymentsServer::new(Bank)),
    )
    .await?;
    let consumer = waypost::consumer(&config).await?;
    let shop = Shop {
        payments: PaymentsClient::new(consumer.channel())?,
    };
    let frontend = waypost::serve(
        &config,
        ServerBuilder::from_config(&config.server).add_service(FrontendServer::new(shop)),
    )
    .await?;

    let client = FrontendClient::new(consumer.channel())?;
    let answer = client
        .checkout(1250)
        .instrument(tracing::info_span!("checkout", user = "ada"))
        .await?;
    println!("{answer}");
    if answer != "charged 1250 cents" {
        return Err(waypost_examples::unexpected("the payment's answer", answer));
    }

    consumer.close().await;
    frontend.shutdown().await;
    payments.shutdown().await;
    telemetry.shutdown().await;
    Ok(())
}
