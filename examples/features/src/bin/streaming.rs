//! Streaming methods: server streaming, client streaming and both ways, with flow control.
//!
//! `Sensors::readings` streams readings to the caller, `Sensors::upload` takes a stream of
//! readings and answers their count, `Sensors::echo` answers each message of a stream as it
//! comes. The consumer finds the provider through the registry like any call.
//!
//! `cargo run -p waypost-examples --bin streaming`

use serde::{Deserialize, Serialize};
use waypost::server::ServerBuilder;
use waypost::stream::StreamExt;
use waypost::Streaming;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub sensor: String,
    pub celsius: f64,
}

#[waypost::service]
pub trait Sensors {
    /// Server streaming: `count` readings of `sensor`.
    async fn readings(&self, sensor: String, count: u32) -> Streaming<Reading>;
    /// Client streaming: the stream is the last argument.
    async fn upload(&self, readings: Streaming<Reading>) -> u32;
    /// Both ways: each message answered as it arrives.
    async fn echo(&self, messages: Streaming<String>) -> Streaming<String>;
}

struct Station;

impl Sensors for Station {
    async fn readings(&self, sensor: String, count: u32) -> Streaming<Reading> {
        Streaming::from_iter((0..count).map(move |i| Reading {
            sensor: sensor.clone(),
            celsius: 20.0 + f64::from(i) / 10.0,
        }))
    }

    async fn upload(&self, mut readings: Streaming<Reading>) -> u32 {
        let mut count = 0;
        while let Some(Ok(_reading)) = readings.next().await {
            count += 1;
        }
        count
    }

    async fn echo(&self, messages: Streaming<String>) -> Streaming<String> {
        Streaming::from_stream(messages.filter_map(|m| async move { m.ok().map(|m| m.to_uppercase()) }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = waypost_examples::config()?;
    let services = ServerBuilder::from_config(&config.server).add_service(SensorsServer::new(Station));
    let provider = waypost::serve(&config, services).await?;
    let consumer = waypost::consumer(&config).await?;
    let sensors = SensorsClient::new(consumer.channel())?;

    // The outer Result says whether the stream started; each item is a Result of its own.
    let mut readings = sensors.readings("greenhouse".into(), 5).await?;
    let mut received = Vec::new();
    while let Some(reading) = readings.next().await {
        received.push(reading?);
    }
    println!("server stream: {} readings, last {:?}", received.len(), received.last());
    if received.len() != 5 {
        return Err(waypost_examples::unexpected("five readings", received.len()));
    }

    let uploaded = sensors.upload(waypost::stream::iter(received)).await?;
    println!("client stream: the provider counted {uploaded} readings");
    if uploaded != 5 {
        return Err(waypost_examples::unexpected("five readings uploaded", uploaded));
    }

    let words = ["north", "south", "east"].map(String::from);
    let mut answers = sensors.echo(waypost::stream::iter(words)).await?;
    let mut echoed = Vec::new();
    while let Some(answer) = answers.next().await {
        echoed.push(answer?);
    }
    println!("both ways: {echoed:?}");
    if echoed != ["NORTH", "SOUTH", "EAST"] {
        return Err(waypost_examples::unexpected("each word answered in capitals", echoed));
    }

    consumer.close().await;
    provider.shutdown().await;
    Ok(())
}
