//! Feeds arbitrary bytes as an HTTP/JSON request's body to the server's argument decoding: an
//! array as it is, an object reordered by parameter name without a JSON tree. Whatever it
//! accepts must be a JSON array of exactly the method's arguments; then the arguments are
//! decoded into the method's types as the handler would.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use waypost_core::schema::ServiceSchema;
use waypost_core::SerializerKind;

#[derive(Debug, Serialize, Deserialize)]
pub struct Filter {
    pub name: Option<String>,
    pub tags: Vec<String>,
}

#[waypost_core::service(name = "Users", version = "1.0")]
pub trait Users {
    /// Three arguments, the last optional.
    async fn find(&self, id: u64, filter: Filter, limit: Option<u32>) -> Vec<String>;
}

fn schema() -> &'static ServiceSchema {
    static SCHEMA: OnceLock<ServiceSchema> = OnceLock::new();
    SCHEMA.get_or_init(UsersClient::schema)
}

fuzz_target!(|data: &[u8]| {
    let object = data.first().is_some_and(|b| *b == b'{');
    let Ok(arguments) = waypost_core::fuzzing::http_json_arguments(schema(), "find", data) else {
        return;
    };
    if object {
        let array: Vec<serde_json::Value> = serde_json::from_slice(&arguments).expect("an array of JSON values");
        assert_eq!(array.len(), 3, "one value per argument");
    }
    let _ = SerializerKind::Json.decode::<(u64, Filter, Option<u32>)>(&arguments);
});
