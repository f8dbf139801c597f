//! The `#[service]` attribute macro. Use it as `waypost::service` (or `waypost_core::service`); see the
//! waypost-core docs for a runnable example.
//!
//! On a trait of `async fn`s taking `&self` it emits:
//! * the trait, with each method rewritten to return `impl Future<Output = R> + Send` (so the
//!   server can run calls on any worker thread) and `Send + Sync + 'static` added as
//!   supertraits; implement it with plain `async fn`s;
//! * `{Trait}Client`, a typed client whose methods mirror the trait's and return
//!   `Result<T, RpcError<E>>` for a method returning `Result<T, E>`, else `Result<R, RpcError>`;
//! * `{Trait}Server<T>`, the adapter that serves any `T: Trait` through `waypost_core::server`.
//!
//! Arguments and results declared as `Vec<u8>`, `Bytes` or `String` (spelled so, or with their
//! paths `std::vec::Vec<u8>`, `bytes::Bytes`, `std::string::String`) are encoded as one byte
//! string (a string as one where the format writes both alike), and large ones are shared
//! with the frame instead of copied (see `waypost_core::byte_string`).
//!
//! Methods may carry `#[idempotent]` to mark them safe to run twice (retry policies use it).

#![deny(missing_docs)]

mod model;
mod render;
mod root;

use proc_macro::TokenStream;

/// Turns a trait into an RPC service: see the crate docs.
///
/// Attributes: `name = "..."` (defaults to the trait's name) and `version = "..."` (defaults to
/// `"1.0"`); the service key is `name:version`.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    match model::ServiceDef::parse(attr.into(), item.into()) {
        Ok(def) => render::render(&def).into(),
        Err(e) => e.to_compile_error().into(),
    }
}
