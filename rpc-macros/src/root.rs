//! Which path the generated code names the runtime by.
//!
//! An application depends on the facade crate `rpc` alone; the framework's own crates and
//! tests depend on `rpc-core`. The generated code names whichever the crate being compiled
//! depends on (rpc-core first, as it is the nearer; either under the name the manifest gives
//! it), so `#[rpc::service]` and `#[rpc_core::service]` both expand to code that resolves.
//! rpc-core itself is `::rpc_core` too (it declares `extern crate self as rpc_core`), since its
//! integration tests and doc tests, which share its manifest, see it under that name.

use proc_macro2::{Span, TokenStream};
use proc_macro_crate::{crate_name, FoundCrate};
use quote::quote;

/// `::rpc_core`, `::rpc`, or the name the manifest gives either.
pub fn path() -> TokenStream {
    for package in ["rpc-core", "rpc"] {
        match crate_name(package) {
            Ok(FoundCrate::Itself) => {
                let ident = syn::Ident::new(&package.replace('-', "_"), Span::call_site());
                return quote!(::#ident);
            }
            Ok(FoundCrate::Name(name)) => {
                let ident = syn::Ident::new(&name, Span::call_site());
                return quote!(::#ident);
            }
            Err(_) => continue,
        }
    }
    // Neither found (a manifest proc-macro-crate cannot read): the facade's name.
    quote!(::rpc)
}
