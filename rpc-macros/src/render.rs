//! Code generation from a validated [`ServiceDef`].

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::model::{byte_string, ByteString, MethodDef, Output, ServiceDef};

pub fn render(def: &ServiceDef) -> TokenStream {
    let trait_tokens = render_trait(def);
    let client = render_client(def);
    let server = render_server(def);
    quote! {
        #trait_tokens
        #client
        #server
    }
}

fn render_trait(def: &ServiceDef) -> TokenStream {
    let item = &def.item;
    let attrs = &item.attrs;
    let vis = &item.vis;
    let ident = &item.ident;
    let supertraits = item.supertraits.iter();
    let methods = def.methods.iter().map(|m| {
        let attrs = &m.attrs;
        let name = &m.ident;
        let args = m
            .args
            .iter()
            .map(|(n, t)| quote!(#n: #t))
            .chain(m.input.iter().map(|input| {
                let (n, t) = (&input.ident, &input.declared);
                quote!(#n: #t)
            }));
        let declared = m.output.declared();
        quote! {
            #(#attrs)*
            fn #name(&self, #(#args),*)
                -> impl ::core::future::Future<Output = #declared> + ::core::marker::Send;
        }
    });
    quote! {
        #(#attrs)*
        #vis trait #ident: #(#supertraits +)* ::core::marker::Send + ::core::marker::Sync + 'static {
            #(#methods)*
        }
    }
}

fn client_ident(def: &ServiceDef) -> syn::Ident {
    format_ident!("{}Client", def.item.ident)
}

fn render_client(def: &ServiceDef) -> TokenStream {
    let rpc = crate::root::path();
    let vis = &def.item.vis;
    let trait_ident = &def.item.ident;
    let client = client_ident(def);
    let builder = format_ident!("{}ClientBuilder", trait_ident);
    let server = format_ident!("{}Server", trait_ident);
    let (name, version, key) = (&def.name, &def.version, def.key());
    let doc = format!("Typed client of the [`{trait_ident}`] service (`{key}`).");
    let builder_doc = format!("Builds a [`{client}`]: an optional local implementation for `fail_back` and `mock`.");
    let descriptors = def.methods.iter().map(|m| render_descriptor(&key, m));
    let methods = def.methods.iter().enumerate().map(|(i, m)| render_client_method(i, m));
    let schema_methods = def.methods.iter().map(render_schema_method);
    quote! {
        #[doc = #doc]
        ///
        /// Cloning it is one reference count: clone it into every task that calls.
        #[derive(Clone)]
        #vis struct #client {
            inner: #rpc::__private::Arc<#rpc::__private::ClientParts>,
        }

        impl ::core::fmt::Debug for #client {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(::core::stringify!(#client))
                    .field("service", &Self::SERVICE_KEY)
                    .field("channel", &self.inner.channel)
                    .finish_non_exhaustive()
            }
        }

        impl #client {
            /// The service name.
            pub const SERVICE_NAME: &'static str = #name;
            /// The service version.
            pub const SERVICE_VERSION: &'static str = #version;
            /// The service key, `name:version`.
            pub const SERVICE_KEY: &'static str = #key;
            /// What the call path knows of each method, in declaration order.
            pub const METHODS: &'static [#rpc::client::MethodDescriptor] = &[#(#descriptors),*];

            /// What the service's methods take and return (their types' shapes), as its
            /// providers publish it.
            pub fn schema() -> #rpc::schema::ServiceSchema {
                #rpc::schema::SchemaBuilder::new(#name, #version)
                    #(#schema_methods)*
                    .build()
            }

            /// A client that calls through `channel`, with no local implementation; fails when
            /// the channel's configuration asks for one (`fail_back`, `mock`) or for `fail_safe`
            /// on a method whose result has no default.
            pub fn new(channel: #rpc::client::Channel) -> ::core::result::Result<Self, #rpc::ClientBuildError> {
                Self::builder(channel).build()
            }

            /// A builder, to add a local implementation for `fail_back` and `mock`.
            pub fn builder(channel: #rpc::client::Channel) -> #builder {
                #builder { channel, local: ::core::option::Option::None }
            }

            /// The same client with one timeout for every call, overriding the configured ones.
            pub fn with_timeout(&self, timeout: ::core::time::Duration) -> Self {
                self.with_channel(self.inner.channel.clone().with_timeout(timeout))
            }

            /// The same client routing every call by `key` under `consistent_hash`.
            pub fn with_hash_key(&self, key: impl ::core::convert::AsRef<[u8]>) -> Self {
                self.with_channel(self.inner.channel.clone().with_hash_key(key))
            }

            /// The same client encoding calls with another serializer.
            pub fn with_serializer(&self, serializer: #rpc::SerializerKind) -> Self {
                self.with_channel(self.inner.channel.clone().with_serializer(serializer))
            }

            /// The same client sending `key: value` in the metadata of every call (the handler
            /// reads it with `waypost_core::context::current().metadata().get(key)`).
            pub fn with_metadata(
                &self,
                key: impl ::core::convert::Into<::std::string::String>,
                value: impl ::core::convert::Into<::std::string::String>,
            ) -> Self {
                self.with_channel(self.inner.channel.clone().with_metadata(key, value))
            }

            /// The same client sending every entry of `entries` in the metadata of every call.
            pub fn with_metadata_map<K, V>(&self, entries: impl ::core::iter::IntoIterator<Item = (K, V)>) -> Self
            where
                K: ::core::convert::Into<::std::string::String>,
                V: ::core::convert::Into<::std::string::String>,
            {
                self.with_channel(self.inner.channel.clone().with_metadata_map(entries))
            }

            /// The channel calls go through.
            pub fn channel(&self) -> &#rpc::client::Channel {
                &self.inner.channel
            }

            /// The policy each method's calls run under, resolved from the channel's configuration.
            pub fn policy(&self, method: &str) -> ::core::option::Option<&#rpc::fault::MethodPolicy> {
                Self::METHODS.iter().position(|m| m.name == method).map(|i| &self.inner.policies[i])
            }

            fn with_channel(&self, channel: #rpc::client::Channel) -> Self {
                Self {
                    inner: #rpc::__private::Arc::new(#rpc::__private::ClientParts {
                        channel,
                        policies: self.inner.policies.clone(),
                        local: self.inner.local.clone(),
                    }),
                }
            }

            #(#methods)*
        }

        #[doc = #builder_doc]
        #vis struct #builder {
            channel: #rpc::client::Channel,
            local: ::core::option::Option<#rpc::client::LocalService>,
        }

        impl #builder {
            /// Calls `implementation` in this process when a call fails under `fail_back`, and
            /// instead of the network in `mock` mode.
            pub fn fallback<T: #trait_ident>(mut self, implementation: T) -> Self {
                self.local = ::core::option::Option::Some(#rpc::__private::Arc::new(#server::new(implementation)));
                self
            }

            /// Resolves each method's policy and checks the client can honour it.
            pub fn build(self) -> ::core::result::Result<#client, #rpc::ClientBuildError> {
                self.channel.check_method_overrides(#client::SERVICE_KEY, #client::METHODS)?;
                self.channel.declare_schema(#client::SERVICE_KEY, #client::schema);
                let mut policies = ::std::vec::Vec::with_capacity(#client::METHODS.len());
                for method in #client::METHODS {
                    let policy = self.channel.policy(method.service, method.name, method.idempotent);
                    #rpc::__private::validate_policy(method, &policy, self.local.is_some())?;
                    policies.push(policy);
                }
                ::core::result::Result::Ok(#client {
                    inner: #rpc::__private::Arc::new(#rpc::__private::ClientParts {
                        channel: self.channel,
                        policies: policies.into(),
                        local: self.local,
                    }),
                })
            }
        }
    }
}

/// A method's descriptor: its names, `#[idempotent]`, and how to encode its default value
/// (the `fail_safe` answer) when its result type has one.
fn render_descriptor(key: &str, m: &MethodDef) -> TokenStream {
    let rpc = crate::root::path();
    let name = m.ident.to_string();
    let idempotent = m.idempotent;
    let Some(ty) = default_type(&m.output) else {
        // A stream has no default value.
        return quote! {
            #rpc::client::MethodDescriptor {
                service: #key,
                name: #name,
                idempotent: #idempotent,
                default_reply: |_| ::core::option::Option::None,
            }
        };
    };
    let wire = wire_value(ty, quote!(value));
    quote! {
        #rpc::client::MethodDescriptor {
            service: #key,
            name: #name,
            idempotent: #idempotent,
            default_reply: {
                fn default_reply(serializer: #rpc::SerializerKind) -> ::core::option::Option<#rpc::Reply> {
                    #[allow(unused_imports)]
                    use #rpc::__private::{ViaDefault as _, ViaNone as _};
                    // The double borrow selects `ViaDefault` when the type has a `Default`.
                    #[allow(clippy::needless_borrow)]
                    let value = (&&#rpc::__private::DefaultProbe::<#ty>::new()).default_value();
                    value.map(|value| #rpc::Reply::ok(serializer, &#wire))
                }
                default_reply
            },
        }
    }
}

/// One method's entry in the service's schema: its argument tuple, names and result types.
fn render_schema_method(m: &MethodDef) -> TokenStream {
    let name = m.ident.to_string();
    let rpc = crate::root::path();
    // A streamed argument is recorded by its items' type, last.
    let arg_names = m
        .args
        .iter()
        .map(|(n, _)| n.to_string())
        .chain(m.input.iter().map(|i| i.ident.to_string()));
    // Traced as they are decoded: a byte string as one (`Bytes` has no serde of its own).
    let arg_types = m
        .args
        .iter()
        .map(|(_, t)| wire_type(t))
        .chain(m.input.iter().map(|i| wire_type(&i.item)));
    let idempotent = m.idempotent;
    let (ok, err) = match &m.output {
        Output::Value(ty) => (ty, None),
        Output::Result { ok, err } => (ok, Some(err)),
        Output::Stream { item, err, .. } => (item, err.as_ref()),
    };
    let ok = wire_type(ok);
    let method = match err {
        None => quote! {
            .method::<(#(#arg_types,)*), #ok>(#name, &[#(#arg_names),*], #idempotent)
        },
        Some(err) => quote! {
            .fallible_method::<(#(#arg_types,)*), #ok, #err>(#name, &[#(#arg_names),*], #idempotent)
        },
    };
    match m.stream_shape() {
        Some(shape) => {
            let shape = format_ident!("{}", shape);
            quote!(#method .streaming(#rpc::StreamShape::#shape))
        }
        None => method,
    }
}

/// The type whose `Default` gives a method's fail-safe value: the method's result, or for
/// `Result<T, E>` the `T` (the fail-safe value is then `Ok(T::default())`).
fn default_type(output: &Output) -> Option<&syn::Type> {
    match output {
        Output::Value(ty) => Some(ty),
        Output::Result { ok, .. } => Some(ok),
        Output::Stream { .. } => None,
    }
}

/// What a client method does with its (non-streamed) arguments.
struct ClientArgs {
    /// `name: Type`, each.
    params: Vec<TokenStream>,
    /// A byte string moved into its wire form (one byte string, shared when large); the other
    /// arguments are encoded by reference.
    to_wire: Vec<TokenStream>,
    /// `&name`, each: the tuple that is encoded.
    refs: Vec<TokenStream>,
    /// The first argument, hashed under `consistent_hash`.
    first: TokenStream,
}

impl ClientArgs {
    fn of(m: &MethodDef) -> Self {
        Self {
            params: m.args.iter().map(|(n, t)| quote!(#n: #t)).collect(),
            to_wire: m
                .args
                .iter()
                .filter(|(_, t)| byte_string(t).is_some())
                .map(|(n, t)| {
                    let value = wire_value(t, quote!(#n));
                    quote!(let #n = #value;)
                })
                .collect(),
            refs: m.args.iter().map(|(n, _)| quote!(&#n)).collect(),
            first: match m.args.first() {
                Some((n, _)) => quote!(::core::option::Option::Some(&#n)),
                None => quote!(::core::option::Option::None::<&()>),
            },
        }
    }
}

fn render_client_method(index: usize, m: &MethodDef) -> TokenStream {
    if m.stream_shape().is_some() {
        return render_client_stream_method(index, m);
    }
    let rpc = crate::root::path();
    let attrs = m.attrs.iter().filter(|a| a.path().is_ident("doc"));
    let name = &m.ident;
    let ClientArgs {
        params,
        to_wire,
        refs,
        first,
    } = ClientArgs::of(m);
    // What differs between `-> T` and `-> Result<T, E>`: the return type, how a framework error
    // is returned, and how the reply is decoded.
    let (returns, typed_error, decode) = match &m.output {
        Output::Stream { .. } => return render_client_stream_method(index, m),
        Output::Value(ty) => {
            let wire = wire_type(ty);
            let unwrap = unwrap_wire(ty);
            (
                quote!(::core::result::Result<#ty, #rpc::RpcError>),
                quote!(error),
                quote!(reply.into_value::<#wire>(self.inner.channel.serializer())#unwrap),
            )
        }
        Output::Result { ok, err } => {
            let wire = wire_type(ok);
            let unwrap = unwrap_wire(ok);
            (
                quote!(::core::result::Result<#ok, #rpc::RpcError<#err>>),
                quote!(error.into_typed()),
                quote!(reply.into_result::<#wire, #err>(self.inner.channel.serializer())#unwrap),
            )
        }
    };
    quote! {
        #(#attrs)*
        pub async fn #name(&self, #(#params),*) -> #returns {
            #(#to_wire)*
            let outcome = self
                .inner
                .channel
                .call(&Self::METHODS[#index], &(#(#refs,)*), #first, &self.inner.policies[#index], self.inner.local.as_ref())
                .await;
            match outcome {
                ::core::result::Result::Ok(reply) => #decode,
                ::core::result::Result::Err(error) => ::core::result::Result::Err(#typed_error),
            }
        }
    }
}

/// A streaming method's client: opens the stream, sends a streamed argument's items from any
/// `Stream`, and returns the server's items as a `Streaming` (or, for a method that takes a
/// stream and returns a value, that value once the stream ends).
fn render_client_stream_method(index: usize, m: &MethodDef) -> TokenStream {
    let rpc = crate::root::path();
    let attrs = m.attrs.iter().filter(|a| a.path().is_ident("doc"));
    let name = &m.ident;
    let ClientArgs {
        mut params,
        to_wire,
        refs,
        first,
    } = ClientArgs::of(m);
    let input = match &m.input {
        Some(input) => {
            let (n, item) = (&input.ident, &input.item);
            params.push(quote!(#n: impl #rpc::__private::Stream<Item = #item> + ::core::marker::Send + 'static));
            let item_wire = wire_value(item, quote!(item));
            quote! {
                ::core::option::Option::Some(#rpc::stream::encode_input(
                    #n,
                    self.inner.channel.serializer(),
                    |item: #item| #item_wire,
                ))
            }
        }
        None => quote!(::core::option::Option::None),
    };
    let err_ty = match &m.output {
        Output::Result { err, .. } => Some(err),
        Output::Stream { err, .. } => err.as_ref(),
        Output::Value(_) => None,
    };
    let typed = match err_ty {
        Some(_) => quote!(.map_err(#rpc::RpcError::into_typed)),
        None => TokenStream::new(),
    };
    let serializer = quote!(self.inner.channel.serializer());
    let (returns, answer) = match &m.output {
        Output::Stream { item, err, .. } => {
            let wire = wire_type(item);
            let from_wire = match byte_string(item) {
                Some(_) => quote!(|wire: #wire| wire.0),
                None => quote!(|wire: #wire| wire),
            };
            match err {
                Some(err) => (
                    quote!(::core::result::Result<#rpc::Streaming<#item, #err>, #rpc::RpcError<#err>>),
                    quote!(::core::result::Result::Ok(#rpc::Streaming::decoding_fallible(raw, #serializer, #from_wire))),
                ),
                None => (
                    quote!(::core::result::Result<#rpc::Streaming<#item>, #rpc::RpcError>),
                    quote!(::core::result::Result::Ok(#rpc::Streaming::decoding(raw, #serializer, #from_wire))),
                ),
            }
        }
        Output::Value(ty) => {
            let wire = wire_type(ty);
            let unwrap = unwrap_wire(ty);
            (
                quote!(::core::result::Result<#ty, #rpc::RpcError>),
                quote! {
                    let reply = #rpc::stream::finish(raw).await?;
                    reply.into_value::<#wire>(#serializer)#unwrap
                },
            )
        }
        Output::Result { ok, err } => {
            let wire = wire_type(ok);
            let unwrap = unwrap_wire(ok);
            (
                quote!(::core::result::Result<#ok, #rpc::RpcError<#err>>),
                quote! {
                    let reply = #rpc::stream::finish(raw).await.map_err(#rpc::RpcError::into_typed)?;
                    reply.into_result::<#wire, #err>(#serializer)#unwrap
                },
            )
        }
    };
    quote! {
        #(#attrs)*
        pub async fn #name(&self, #(#params),*) -> #returns {
            #(#to_wire)*
            let input = #input;
            let raw = self
                .inner
                .channel
                .open_stream(&Self::METHODS[#index], &(#(#refs,)*), #first, &self.inner.policies[#index], input)
                .await
                #typed?;
            #answer
        }
    }
}

fn render_server(def: &ServiceDef) -> TokenStream {
    let rpc = crate::root::path();
    let vis = &def.item.vis;
    let trait_ident = &def.item.ident;
    let client = client_ident(def);
    let server = format_ident!("{}Server", trait_ident);
    let doc = format!("Serves any implementation of [`{trait_ident}`]; add it to a `ServerBuilder`.");
    let method_names = def.methods.iter().map(|m| m.ident.to_string());
    let arms = def
        .methods
        .iter()
        .filter(|m| m.stream_shape().is_none())
        .map(|m| render_server_arm(trait_ident, m));
    let streams: Vec<&MethodDef> = def.methods.iter().filter(|m| m.stream_shape().is_some()).collect();
    let stream_names: Vec<String> = streams.iter().map(|m| m.ident.to_string()).collect();
    let shapes = streams.iter().map(|m| {
        let name = m.ident.to_string();
        let shape = format_ident!("{}", m.stream_shape().unwrap_or("Server"));
        quote!(#name => ::core::option::Option::Some(#rpc::StreamShape::#shape),)
    });
    let stream_arms = streams.iter().map(|m| render_stream_arm(trait_ident, m));
    let unary_only = match stream_names.is_empty() {
        true => TokenStream::new(),
        false => quote! {
            #(#stream_names)|* => {
                let reply = #rpc::Reply::failure(
                    #rpc::protocol::Status::Unsupported,
                    ::std::format!("{}/{} is a streaming method; call it with a client that streams", #client::SERVICE_KEY, method),
                );
                ::std::boxed::Box::pin(::core::future::ready(reply))
            }
        },
    };
    quote! {
        #[doc = #doc]
        #vis struct #server<T> {
            inner: #rpc::__private::Arc<T>,
        }

        impl<T: #trait_ident> #server<T> {
            /// Serves `service`.
            pub fn new(service: T) -> Self {
                Self { inner: #rpc::__private::Arc::new(service) }
            }

            /// Serves a shared `service`.
            pub fn from_arc(service: #rpc::__private::Arc<T>) -> Self {
                Self { inner: service }
            }
        }

        impl<T> ::core::clone::Clone for #server<T> {
            fn clone(&self) -> Self {
                Self { inner: #rpc::__private::Arc::clone(&self.inner) }
            }
        }

        impl<T: #trait_ident> #rpc::server::Service for #server<T> {
            fn name(&self) -> &str {
                #client::SERVICE_NAME
            }

            fn version(&self) -> &str {
                #client::SERVICE_VERSION
            }

            fn key(&self) -> &str {
                #client::SERVICE_KEY
            }

            fn methods(&self) -> &[&'static str] {
                &[#(#method_names),*]
            }

            fn schema(&self) -> ::core::option::Option<#rpc::schema::ServiceSchema> {
                ::core::option::Option::Some(#client::schema())
            }

            fn call(
                &self,
                method: &str,
                serializer: #rpc::SerializerKind,
                args: #rpc::Body,
            ) -> #rpc::BoxFuture<'static, #rpc::Reply> {
                match method {
                    #(#arms)*
                    #unary_only
                    other => {
                        let reply = #rpc::Reply::method_not_found(#client::SERVICE_KEY, other);
                        ::std::boxed::Box::pin(::core::future::ready(reply))
                    }
                }
            }

            fn stream_shape(&self, method: &str) -> ::core::option::Option<#rpc::StreamShape> {
                match method {
                    #(#shapes)*
                    _ => ::core::option::Option::None,
                }
            }

            fn call_stream(
                &self,
                method: &str,
                serializer: #rpc::SerializerKind,
                args: #rpc::Body,
                input: ::core::option::Option<#rpc::stream::RawStream>,
            ) -> #rpc::BoxFuture<'static, #rpc::server::StreamAnswer> {
                let _ = (&serializer, &args, &input);
                match method {
                    #(#stream_arms)*
                    other => {
                        let reply = #rpc::Reply::method_not_found(#client::SERVICE_KEY, other);
                        ::std::boxed::Box::pin(::core::future::ready(#rpc::server::StreamAnswer::Reply(reply)))
                    }
                }
            }
        }
    }
}

/// A streaming method's arm of the server adapter: decodes the arguments, hands the handler
/// the client's items (decoded) when it takes a stream, and answers the items it returns
/// (encoded) or the value it returns.
fn render_stream_arm(trait_ident: &syn::Ident, m: &MethodDef) -> TokenStream {
    let rpc = crate::root::path();
    let name = &m.ident;
    let method = name.to_string();
    let arg_names: Vec<_> = m.args.iter().map(|(n, _)| n).collect();
    let decode_args = decode_args(
        m,
        |e| quote!(#rpc::server::StreamAnswer::Reply(#rpc::Reply::decode_failed(#e))),
    );
    let mut call_args: Vec<TokenStream> = arg_names.iter().map(|n| quote!(#n)).collect();
    let take_input = match &m.input {
        Some(input) => {
            let (n, item) = (&input.ident, &input.item);
            let wire = wire_type(item);
            let from_wire = match byte_string(item) {
                Some(_) => quote!(|wire: #wire| wire.0),
                None => quote!(|wire: #wire| wire),
            };
            call_args.push(quote!(#n));
            quote! {
                    let ::core::option::Option::Some(#n) = input else {
                        let reply = #rpc::Reply::failure(#rpc::protocol::Status::InternalError, "the server gave a streaming method no input");
                        return #rpc::server::StreamAnswer::Reply(reply);
                    };
                    let #n = #rpc::Streaming::decoding(#n, serializer, #from_wire);
            }
        }
        None => quote!(let _ = input;),
    };
    let answer = match &m.output {
        Output::Stream { item, err, .. } => {
            let item_wire = wire_value(item, quote!(item));
            let encode = match err {
                Some(_) => quote!(encode_fallible_items),
                None => quote!(encode_items),
            };
            quote! {
                #rpc::server::StreamAnswer::Items(#rpc::stream::#encode(out, serializer, |item: #item| #item_wire))
            }
        }
        output => {
            let reply = encode_reply(output);
            quote!(#rpc::server::StreamAnswer::Reply(#reply))
        }
    };
    quote! {
        #method => {
            let inner = #rpc::__private::Arc::clone(&self.inner);
            ::std::boxed::Box::pin(async move {
                #decode_args
                #take_input
                let out = <T as #trait_ident>::#name(&inner, #(#call_args),*).await;
                #answer
            })
        }
    }
}

fn render_server_arm(trait_ident: &syn::Ident, m: &MethodDef) -> TokenStream {
    let rpc = crate::root::path();
    let name = &m.ident;
    let method = name.to_string();
    let arg_names: Vec<_> = m.args.iter().map(|(n, _)| n).collect();
    let decode_args = decode_args(m, |e| quote!(#rpc::Reply::decode_failed(#e)));
    let encode = encode_reply(&m.output);
    quote! {
        #method => {
            let inner = #rpc::__private::Arc::clone(&self.inner);
            ::std::boxed::Box::pin(async move {
                #decode_args
                let out = <T as #trait_ident>::#name(&inner, #(#arg_names),*).await;
                #encode
            })
        }
    }
}

/// The statements that decode a method's arguments into variables of their names (`failed`
/// makes what the handler's future returns when they cannot be decoded, from the error). The
/// tuple is spanned by the arguments' types so a missing serde impl points at the argument; a
/// byte string is decoded as one (`Bytes` sharing the frame's memory), then unwrapped.
fn decode_args(m: &MethodDef, failed: impl Fn(TokenStream) -> TokenStream) -> TokenStream {
    let arg_names = m.args.iter().map(|(n, _)| n);
    let arg_types = m.args.iter().map(|(_, t)| wire_type(t));
    let unwrap_bytes = m
        .args
        .iter()
        .filter(|(_, t)| byte_string(t).is_some())
        .map(|(n, _)| quote!(let #n = #n.0;));
    let failed = failed(quote!(e));
    quote! {
        let (#(#arg_names,)*): (#(#arg_types,)*) = match serializer.decode_body(args) {
            ::core::result::Result::Ok(decoded) => decoded,
            ::core::result::Result::Err(e) => return #failed,
        };
        #(#unwrap_bytes)*
    }
}

/// The reply of a handler's result `out`: its value, or its error (a method returning
/// `Result`). A stream's items are encoded by `render_stream_arm` instead.
fn encode_reply(output: &Output) -> TokenStream {
    let rpc = crate::root::path();
    let reply_ok = |ty: &syn::Type, value: TokenStream| {
        let value = wire_value(ty, value);
        quote_spanned!(ty.span()=> #rpc::Reply::ok(serializer, &#value))
    };
    match output {
        Output::Value(ty) => reply_ok(ty, quote!(out)),
        Output::Result { ok, err } => {
            let ok_reply = reply_ok(ok, quote!(value));
            let err_reply = quote_spanned!(err.span()=> #rpc::Reply::application_error(serializer, &error));
            quote! {
                match out {
                    ::core::result::Result::Ok(value) => #ok_reply,
                    ::core::result::Result::Err(error) => #err_reply,
                }
            }
        }
        Output::Stream { .. } => TokenStream::new(),
    }
}

/// `value` (of type `ty`) as it is encoded: a byte string moved into its wire form, anything
/// else as it is.
fn wire_value(ty: &syn::Type, value: TokenStream) -> TokenStream {
    let rpc = crate::root::path();
    match byte_string(ty) {
        Some(ByteString::Vec) => quote!(#rpc::__private::WireBytes::from_vec(#value)),
        Some(ByteString::Bytes) => quote!(#rpc::__private::WireBytes::from_bytes(#value)),
        Some(ByteString::Text) => quote!(#rpc::__private::WireText::from_string(#value)),
        None => value,
    }
}

/// The type a value of type `ty` is decoded as (spanned by `ty`, so that a missing serde
/// implementation points at it).
fn wire_type(ty: &syn::Type) -> TokenStream {
    let rpc = crate::root::path();
    match byte_string(ty) {
        Some(ByteString::Vec) => quote!(#rpc::__private::ByteVec),
        Some(ByteString::Bytes) => quote!(#rpc::__private::ByteSlice),
        Some(ByteString::Text) => quote!(#rpc::__private::TextString),
        None => quote_spanned!(ty.span()=> #ty),
    }
}

/// What turns a decoded [`wire_type`] (in a `Result`) back into `ty`.
fn unwrap_wire(ty: &syn::Type) -> TokenStream {
    match byte_string(ty) {
        Some(_) => quote!(.map(|bytes| bytes.0)),
        None => TokenStream::new(),
    }
}
