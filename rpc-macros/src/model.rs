//! Parsing and validation of a `#[service]` trait into a [`ServiceDef`].

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{
    Attribute, Error, Expr, FnArg, GenericArgument, Ident, ItemTrait, Lit, Meta, Pat, PathArguments, Result,
    ReturnType, Token, TraitItem, Type,
};

/// A validated service trait.
pub struct ServiceDef {
    pub item: ItemTrait,
    pub name: String,
    pub version: String,
    pub methods: Vec<MethodDef>,
}

/// One validated method.
pub struct MethodDef {
    pub ident: Ident,
    pub attrs: Vec<Attribute>,
    /// The arguments sent with the request (without a streamed last argument).
    pub args: Vec<(Ident, Type)>,
    /// A last argument `Streaming<T>`: its name, its declared type and `T`.
    pub input: Option<StreamedArg>,
    pub output: Output,
    pub idempotent: bool,
}

/// A streamed argument.
pub struct StreamedArg {
    pub ident: Ident,
    pub declared: Type,
    pub item: Type,
}

impl MethodDef {
    /// `Server`, `Client` or `Bidi` for a streaming method.
    pub fn stream_shape(&self) -> Option<&'static str> {
        match (&self.input, &self.output) {
            (Some(_), Output::Stream { .. }) => Some("Bidi"),
            (Some(_), _) => Some("Client"),
            (None, Output::Stream { .. }) => Some("Server"),
            (None, _) => None,
        }
    }
}

/// What a method returns.
#[allow(clippy::large_enum_variant)] // built once per method at compile time
pub enum Output {
    /// Any serde value (`()` when the method declares no return type).
    Value(Type),
    /// `Result<T, E>`: `E` is delivered to callers as `RpcError::Application(E)`.
    Result { ok: Type, err: Type },
    /// `Streaming<T>` or `Streaming<Result<T, E>>`: items `T`, an `E` ending the stream.
    Stream {
        declared: Type,
        item: Type,
        err: Option<Type>,
    },
}

impl Output {
    pub fn declared(&self) -> TokenStream {
        match self {
            Output::Value(t) => quote::quote!(#t),
            Output::Result { ok, err } => quote::quote!(::core::result::Result<#ok, #err>),
            Output::Stream { declared, .. } => quote::quote!(#declared),
        }
    }
}

impl ServiceDef {
    pub fn parse(attr: TokenStream, item: TokenStream) -> Result<Self> {
        let item: ItemTrait = syn::parse2(item)?;
        let mut name = item.ident.to_string();
        let mut version = "1.0".to_owned();
        let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr)?;
        for meta in metas {
            let Meta::NameValue(nv) = &meta else {
                return Err(Error::new(
                    meta.span(),
                    "expected `name = \"...\"` or `version = \"...\"`",
                ));
            };
            let value = match &nv.value {
                Expr::Lit(lit) => match &lit.lit {
                    Lit::Str(s) => s.value(),
                    other => return Err(Error::new(other.span(), "expected a string literal")),
                },
                other => return Err(Error::new(other.span(), "expected a string literal")),
            };
            if value.is_empty() || value.contains(['/', ':']) || value.chars().any(char::is_whitespace) {
                return Err(Error::new(
                    nv.value.span(),
                    "must be non-empty, without `/`, `:` or white space (it is part of a registry path)",
                ));
            }
            if nv.path.is_ident("name") {
                name = value;
            } else if nv.path.is_ident("version") {
                version = value;
            } else {
                return Err(Error::new(
                    nv.path.span(),
                    "unknown attribute; expected `name` or `version`",
                ));
            }
        }
        if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
            return Err(Error::new(item.generics.span(), "a #[service] trait cannot be generic"));
        }
        let mut methods = Vec::new();
        for trait_item in &item.items {
            match trait_item {
                TraitItem::Fn(f) => methods.push(parse_method(f)?),
                other => {
                    return Err(Error::new(
                        other.span(),
                        "a #[service] trait may only contain `async fn` methods",
                    ))
                }
            }
        }
        Ok(Self {
            item,
            name,
            version,
            methods,
        })
    }

    pub fn key(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }
}

fn parse_method(f: &syn::TraitItemFn) -> Result<MethodDef> {
    let sig = &f.sig;
    if sig.asyncness.is_none() {
        return Err(Error::new(sig.fn_token.span(), "#[service] methods must be `async fn`"));
    }
    if let Some(body) = &f.default {
        return Err(Error::new(body.span(), "#[service] methods cannot have a default body"));
    }
    if sig.ident.to_string().starts_with("__") {
        return Err(Error::new(
            sig.ident.span(),
            "method names starting with `__` are reserved for the framework's built-in methods (`__health`)",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(Error::new(
            sig.generics.span(),
            "#[service] methods cannot be generic; use concrete argument and result types",
        ));
    }
    if let Some(unsafety) = &sig.unsafety {
        return Err(Error::new(unsafety.span(), "#[service] methods cannot be `unsafe`"));
    }
    if let Some(abi) = &sig.abi {
        return Err(Error::new(abi.span(), "#[service] methods cannot declare an ABI"));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(Error::new(variadic.span(), "#[service] methods cannot be variadic"));
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() && r.colon_token.is_none() => {}
        Some(FnArg::Receiver(r)) if r.reference.is_none() && r.colon_token.is_none() => {
            return Err(Error::new(
                r.span(),
                "#[service] methods must take `&self`, not `self` by value",
            ))
        }
        Some(FnArg::Receiver(r)) if r.mutability.is_some() => {
            return Err(Error::new(
                r.span(),
                "#[service] methods must take `&self`, not `&mut self`",
            ))
        }
        Some(other) => return Err(Error::new(other.span(), "#[service] methods must take `&self` first")),
        None => {
            return Err(Error::new(
                sig.paren_token.span.join(),
                "#[service] methods must take `&self` first",
            ))
        }
    }
    let mut args = Vec::new();
    let mut streamed = None;
    let count = sig.inputs.len() - 1;
    for (i, input) in inputs.enumerate() {
        let FnArg::Typed(pt) = input else {
            return Err(Error::new(input.span(), "unexpected receiver"));
        };
        let Pat::Ident(pat) = &*pt.pat else {
            return Err(Error::new(
                pt.pat.span(),
                "#[service] method arguments must be plain names",
            ));
        };
        if pat.by_ref.is_some() || pat.subpat.is_some() {
            return Err(Error::new(
                pt.pat.span(),
                "#[service] method arguments must be plain names",
            ));
        }
        check_arg_type(&pt.ty)?;
        if let Some(item) = streaming_item(&pt.ty) {
            if i + 1 != count {
                return Err(Error::new(
                    pt.ty.span(),
                    "only the last argument of a #[service] method may be a `Streaming<T>`",
                ));
            }
            streamed = Some(StreamedArg {
                ident: pat.ident.clone(),
                declared: (*pt.ty).clone(),
                item,
            });
            continue;
        }
        args.push((pat.ident.clone(), (*pt.ty).clone()));
    }
    let output = match &sig.output {
        ReturnType::Default => Output::Value(syn::parse_quote!(())),
        ReturnType::Type(_, ty) => {
            check_no_impl_trait(
                ty,
                "`impl Trait` results are not supported in #[service] methods; use a concrete type",
            )?;
            match streaming_item(ty) {
                Some(item) => match split_result(&item) {
                    Some(Output::Result { ok, err }) => Output::Stream {
                        declared: (**ty).clone(),
                        item: ok,
                        err: Some(err),
                    },
                    _ => Output::Stream {
                        declared: (**ty).clone(),
                        item,
                        err: None,
                    },
                },
                None => split_result(ty).unwrap_or_else(|| Output::Value((**ty).clone())),
            }
        }
    };
    let mut idempotent = false;
    let mut attrs = Vec::new();
    for attr in &f.attrs {
        if attr.path().is_ident("idempotent") {
            attr.meta.require_path_only()?;
            idempotent = true;
        } else {
            attrs.push(attr.clone());
        }
    }
    Ok(MethodDef {
        ident: sig.ident.clone(),
        attrs,
        args,
        input: streamed,
        output,
        idempotent,
    })
}

/// The `T` of `Streaming<T>` (any path ending in `Streaming` with one type argument).
fn streaming_item(ty: &Type) -> Option<Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Streaming" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match (args.args.len(), args.args.first()) {
        (1, Some(GenericArgument::Type(item))) => Some(item.clone()),
        _ => None,
    }
}

fn check_arg_type(ty: &Type) -> Result<()> {
    check_no_impl_trait(
        ty,
        "`impl Trait` arguments are not supported in #[service] methods; use a concrete type",
    )?;
    if let Type::Reference(r) = ty {
        return Err(Error::new(
            r.span(),
            "#[service] method arguments must be owned types (the server decodes them); use e.g. `String` instead of `&str`",
        ));
    }
    Ok(())
}

fn check_no_impl_trait(ty: &Type, message: &str) -> Result<()> {
    struct Finder(Option<proc_macro2::Span>);
    impl<'ast> Visit<'ast> for Finder {
        fn visit_type_impl_trait(&mut self, node: &'ast syn::TypeImplTrait) {
            self.0.get_or_insert(node.span());
        }
    }
    let mut finder = Finder(None);
    finder.visit_type(ty);
    match finder.0 {
        Some(span) => Err(Error::new(span, message)),
        None => Ok(()),
    }
}

/// Recognises `Result<T, E>` (any path ending in `Result` with two type arguments).
fn split_result(ty: &Type) -> Option<Output> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|a| match a {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    });
    let (ok, err) = (types.next()?, types.next()?);
    if types.next().is_some() || args.args.len() != 2 {
        return None;
    }
    Some(Output::Result { ok, err })
}

/// A type the generated code moves as one byte string (see `waypost_core::byte_string`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteString {
    /// `Vec<u8>`, spelled bare or as `std::vec::Vec<u8>` / `alloc::vec::Vec<u8>`.
    Vec,
    /// `Bytes`, spelled bare or as `bytes::Bytes`: received as a slice of the frame.
    Bytes,
    /// `String`, spelled bare or as `std::string::String` / `alloc::string::String`: sent as
    /// its bytes where the format writes strings and byte strings alike.
    Text,
}

/// Whether `ty` is spelled as a byte string the generated code knows. An alias is not
/// recognized; it still works, through its own serde implementation.
pub fn byte_string(ty: &Type) -> Option<ByteString> {
    let Type::Path(path) = ty else { return None };
    if path.qself.is_some() {
        return None;
    }
    let names: Vec<String> = path.path.segments.iter().map(|s| s.ident.to_string()).collect();
    let last = path.path.segments.last()?;
    match names.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["Bytes"] | ["bytes", "Bytes"] => match last.arguments {
            syn::PathArguments::None => Some(ByteString::Bytes),
            _ => None,
        },
        ["String"] | ["std", "string", "String"] | ["alloc", "string", "String"] => match last.arguments {
            syn::PathArguments::None => Some(ByteString::Text),
            _ => None,
        },
        ["Vec"] | ["std", "vec", "Vec"] | ["alloc", "vec", "Vec"] => {
            let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
                return None;
            };
            let of_u8 = args.args.len() == 1
                && matches!(args.args.first(), Some(syn::GenericArgument::Type(Type::Path(inner)))
                    if inner.qself.is_none() && inner.path.is_ident("u8"));
            of_u8.then_some(ByteString::Vec)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_strings_are_recognized_by_their_spelling() {
        let kind = |ty: &str| byte_string(&syn::parse_str(ty).unwrap());
        for yes in [
            "Vec<u8>",
            "std::vec::Vec<u8>",
            "::std::vec::Vec<u8>",
            "alloc::vec::Vec<u8>",
        ] {
            assert_eq!(kind(yes), Some(ByteString::Vec), "{yes}");
        }
        for yes in ["Bytes", "bytes::Bytes", "::bytes::Bytes"] {
            assert_eq!(kind(yes), Some(ByteString::Bytes), "{yes}");
        }
        for yes in ["String", "std::string::String", "alloc::string::String"] {
            assert_eq!(kind(yes), Some(ByteString::Text), "{yes}");
        }
        for no in [
            "Vec<i8>",
            "Vec<u16>",
            "Vec<Vec<u8>>",
            "my::Vec<u8>",
            "my::Bytes",
            "Bytes<u8>",
            "Box<[u8]>",
            "Vec<u8, A>",
            "&[u8]",
            "my::String",
            "&str",
        ] {
            assert_eq!(kind(no), None, "{no}");
        }
    }
}
