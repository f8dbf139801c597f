//! Which path the generated code names the runtime by.
//!
//! An application depends on the facade crate `waypost` alone; the framework's own crates and
//! tests depend on `waypost-core`. The generated code names whichever the crate being compiled
//! depends on (waypost-core first, as it is the nearer; either under the name the manifest gives
//! it), so `#[waypost::service]` and `#[waypost_core::service]` both expand to code that resolves.
//! waypost-core itself is `::waypost_core` too (it declares `extern crate self as waypost_core`), since its
//! integration tests and doc tests, which share its manifest, see it under that name.

use proc_macro2::{Span, TokenStream};
use proc_macro_crate::{crate_name, FoundCrate};
use quote::quote;

/// `::waypost_core`, `::waypost`, or the name the manifest gives either.
pub fn path() -> TokenStream {
    for package in ["waypost-core", "waypost"] {
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
    quote!(::waypost)
}
