//! An OpenAPI 3.1 document of services as the HTTP/JSON ingress serves them, so that clients in
//! any language can be generated from it.
//!
//! Each method is `POST /{name}:{version}/{method}` with its arguments as a JSON object by
//! parameter name; `200` carries the result, `422` the method's own error under `"error"`, and
//! any other status a framework error `{"code", "message"}`. A method that returns a stream
//! answers its items as NDJSON (`application/x-ndjson`); one that takes a stream is left out
//! (it is called over the RPC protocol). The types of each service are
//! components named `{service}.{type}`, so two services may each have their own `User`.

use serde_json::{json, Map, Value};

use super::json_schema::Refs;
use super::shape::ServiceSchema;
use crate::stream::StreamShape;

/// The OpenAPI 3.1 document of `services`.
pub fn openapi(services: &[&ServiceSchema]) -> Value {
    let mut paths = Map::new();
    let mut components = Map::new();
    components.insert(
        "RpcError".to_owned(),
        json!({
            "type": "object",
            "properties": {
                "code": {"type": "string", "enum": [
                    "not_found", "invalid_argument", "unauthenticated", "permission_denied",
                    "overloaded", "deadline_exceeded", "unavailable", "internal"
                ]},
                "message": {"type": "string"},
            },
            "required": ["code", "message"],
        }),
    );
    for service in services {
        let prefix = format!("#/components/schemas/{}.", service.name);
        let refs = Refs(&prefix);
        for (name, schema) in refs.types(service) {
            components.insert(format!("{}.{name}", service.name), schema);
        }
        for method in &service.methods {
            // A method that takes a stream is called over the RPC protocol only.
            if method.streaming.is_some_and(StreamShape::client_sends) {
                continue;
            }
            let described = refs.method(method);
            let mut responses = Map::new();
            let result = match method.streaming {
                Some(_) => json!({
                    "description": "The items, one JSON value per line, as the server sends them. An error ends them with a last line: {\"error\": value} for the method's own error, {\"code\", \"message\"} for a framework error.",
                    "content": {"application/x-ndjson": {"schema": described["result"].clone()}},
                }),
                None => response("The result.", described["result"].clone()),
            };
            responses.insert("200".to_owned(), result);
            if let Some(error) = described.get("error") {
                let wrapped = json!({"type": "object", "properties": {"error": error}, "required": ["error"]});
                responses.insert("422".to_owned(), response("The method's own error.", wrapped));
            }
            responses.insert(
                "default".to_owned(),
                response("A framework error.", json!({"$ref": "#/components/schemas/RpcError"})),
            );
            let operation = json!({
                "operationId": format!("{}_{}", service.name, method.name),
                "tags": [service.name],
                "requestBody": {
                    "required": true,
                    "content": {"application/json": {"schema": described["arguments"].clone()}},
                },
                "responses": responses,
            });
            let path = format!("/{}:{}/{}", service.name, service.version, method.name);
            paths.insert(path, json!({ "post": operation }));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "RPC services", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": components},
    })
}

fn response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::schema::SchemaBuilder;

    #[allow(dead_code)]
    #[derive(Deserialize)]
    struct User {
        id: u64,
    }

    #[test]
    fn each_method_is_a_post_with_its_types_as_components() {
        let users = SchemaBuilder::new("Users", "1.0")
            .fallible_method::<(u64,), User, String>("get", &["id"], true)
            .build();
        let doc = openapi(&[&users]);
        assert_eq!(doc["openapi"], "3.1.0");
        let get = &doc["paths"]["/Users:1.0/get"]["post"];
        assert_eq!(get["operationId"], "Users_get");
        assert_eq!(
            get["responses"]["200"]["content"]["application/json"]["schema"],
            json!({"$ref": "#/components/schemas/Users.User"})
        );
        assert_eq!(
            get["requestBody"]["content"]["application/json"]["schema"]["required"],
            json!(["id"])
        );
        assert!(get["responses"]["422"].is_object());
        assert_eq!(doc["components"]["schemas"]["Users.User"]["required"], json!(["id"]));
    }
}
