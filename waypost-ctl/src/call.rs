//! `call`: one call of any method, arguments and result in JSON.
//!
//! Every provider accepts the json serializer, so no generated client is needed: the
//! arguments go as the JSON array a generated client would send (a method without
//! parameters takes `[]`), through a consumer built from the configuration (its balancer,
//! timeout and retry policy), and the reply body is printed as it came.

use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::Value;
use waypost::client::{Channel, Consumer, MethodDescriptor};
use waypost::config::RpcConfig;
use waypost::fault::MethodPolicy;
use waypost::protocol::Status;
use waypost::registry::Registry;
use waypost::stream::StreamEvent;
use waypost::{SerializerKind, StreamShape};

use crate::error::CtlError;
use crate::{listing, schemas};

/// Calls `key`'s `method` with `args` (a JSON array) and prints the result.
pub async fn run(
    registry: Arc<dyn Registry>,
    config: &RpcConfig,
    key: &str,
    method: &str,
    args: &str,
    json: bool,
) -> Result<(), CtlError> {
    let args = parse_args(args)?;
    listing::registered(&registry, key).await?;
    let streams = schemas::stream_shape(&registry, key, method).await?;
    if streams.is_some_and(StreamShape::client_sends) {
        return Err(CtlError::Arguments(format!(
            "{key}/{method} takes a stream of items as its last argument; waypost call cannot send one"
        )));
    }
    let mut config = config.clone();
    config.serializer = SerializerKind::Json;
    let builder = waypost::secure_consumer(Consumer::builder(&config), &config).await?;
    let consumer = builder.build(registry).await?;
    let channel = consumer.channel();
    let descriptor = MethodDescriptor::dynamic(key, method);
    let policy = channel.policy(key, method, false);
    if streams.is_some() {
        let printed = print_stream(&channel, descriptor, args, &policy, key, method).await;
        consumer.close().await;
        return printed;
    }
    let result = match args {
        // The generated code sends `()` for a method without parameters.
        None => channel.call(descriptor, &(), None::<&()>, &policy, None).await,
        Some(args) => channel.call(descriptor, &args, None::<&()>, &policy, None).await,
    };
    consumer.close().await;
    let reply = result.map_err(|e| CtlError::from_call(key, method, e))?;
    let value = json_of(&reply.body.as_one());
    if reply.status == Status::ApplicationError {
        return Err(CtlError::Application {
            method: method.to_owned(),
            error: value.to_string(),
        });
    }
    let text = if json {
        value.to_string()
    } else {
        serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
    };
    println!("{text}");
    Ok(())
}

/// Opens the stream and prints each item as a line of JSON until its end.
async fn print_stream(
    channel: &Channel,
    descriptor: &'static MethodDescriptor,
    args: Option<Value>,
    policy: &MethodPolicy,
    key: &str,
    method: &str,
) -> Result<(), CtlError> {
    let opened = match args {
        None => channel.open_stream(descriptor, &(), None::<&()>, policy, None).await,
        Some(args) => channel.open_stream(descriptor, &args, None::<&()>, policy, None).await,
    };
    let mut stream = opened.map_err(|e| CtlError::from_call(key, method, e))?;
    while let Some(event) = stream.next().await {
        match event {
            StreamEvent::Item(body) => println!("{}", json_of(&body.as_one())),
            StreamEvent::End(Ok(reply)) if reply.status == Status::ApplicationError => {
                return Err(CtlError::Application {
                    method: method.to_owned(),
                    error: json_of(&reply.body.as_one()).to_string(),
                });
            }
            StreamEvent::End(Ok(_)) => break,
            StreamEvent::End(Err(e)) => return Err(CtlError::from_call(key, method, e)),
        }
    }
    Ok(())
}

/// A JSON body as a value (text that is not JSON as a string).
fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// The arguments to send: `None` for `[]`, the array otherwise.
fn parse_args(text: &str) -> Result<Option<Value>, CtlError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| CtlError::Arguments(format!("{text:?} is not JSON: {e}")))?;
    match value {
        Value::Array(items) if items.is_empty() => Ok(None),
        Value::Array(items) => Ok(Some(Value::Array(items))),
        _ => Err(CtlError::Arguments(format!(
            "{text:?} is not a JSON array; pass one element per argument, e.g. '[1]' or '[]'"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_a_json_array() {
        assert_eq!(parse_args("[]").unwrap(), None);
        assert_eq!(parse_args("[1, \"a\"]").unwrap(), Some(serde_json::json!([1, "a"])));
        assert!(matches!(parse_args("1"), Err(CtlError::Arguments(_))));
        assert!(matches!(parse_args("[1"), Err(CtlError::Arguments(_))));
    }
}
