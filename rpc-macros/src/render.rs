//! Code generation from a validated [`ServiceDef`].

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::model::{MethodDef, Output, ServiceDef};

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
        let args = m.args.iter().map(|(n, t)| quote!(#n: #t));
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
    let vis = &def.item.vis;
    let trait_ident = &def.item.ident;
    let client = client_ident(def);
    let (name, version, key) = (&def.name, &def.version, def.key());
    let doc = format!("Typed client of the [`{trait_ident}`] service (`{key}`).");
    let methods = def.methods.iter().map(render_client_method);
    quote! {
        #[doc = #doc]
        #[derive(Clone, Debug)]
        #vis struct #client {
            channel: ::rpc_core::client::Channel,
        }

        impl #client {
            /// The service name.
            pub const SERVICE_NAME: &'static str = #name;
            /// The service version.
            pub const SERVICE_VERSION: &'static str = #version;
            /// The service key, `name:version`.
            pub const SERVICE_KEY: &'static str = #key;

            /// A client that calls through `channel`.
            pub fn new(channel: ::rpc_core::client::Channel) -> Self {
                Self { channel }
            }

            /// The same client with another per-call timeout.
            pub fn with_timeout(&self, timeout: ::core::time::Duration) -> Self {
                Self { channel: self.channel.clone().with_timeout(timeout) }
            }

            /// The same client encoding calls with another serializer.
            pub fn with_serializer(&self, serializer: ::rpc_core::SerializerKind) -> Self {
                Self { channel: self.channel.clone().with_serializer(serializer) }
            }

            /// The channel calls go through.
            pub fn channel(&self) -> &::rpc_core::client::Channel {
                &self.channel
            }

            #(#methods)*
        }
    }
}

fn render_client_method(m: &MethodDef) -> TokenStream {
    let attrs = m.attrs.iter().filter(|a| a.path().is_ident("doc"));
    let name = &m.ident;
    let method = name.to_string();
    let idempotent = m.idempotent;
    let params = m.args.iter().map(|(n, t)| quote!(#n: #t));
    let refs = m.args.iter().map(|(n, _)| quote!(&#n));
    let invoke = quote! {
        self.channel
            .invoke(Self::SERVICE_KEY, #method, &(#(#refs,)*), #idempotent)
            .await
    };
    match &m.output {
        Output::Value(ty) => quote! {
            #(#attrs)*
            pub async fn #name(&self, #(#params),*) -> ::core::result::Result<#ty, ::rpc_core::RpcError> {
                let reply = #invoke?;
                reply.into_value::<#ty>(self.channel.serializer())
            }
        },
        Output::Result { ok, err } => quote! {
            #(#attrs)*
            pub async fn #name(&self, #(#params),*) -> ::core::result::Result<#ok, ::rpc_core::RpcError<#err>> {
                let reply = #invoke.map_err(::rpc_core::RpcError::into_typed)?;
                reply.into_result::<#ok, #err>(self.channel.serializer())
            }
        },
    }
}

fn render_server(def: &ServiceDef) -> TokenStream {
    let vis = &def.item.vis;
    let trait_ident = &def.item.ident;
    let client = client_ident(def);
    let server = format_ident!("{}Server", trait_ident);
    let doc = format!("Serves any implementation of [`{trait_ident}`]; add it to a `ServerBuilder`.");
    let method_names = def.methods.iter().map(|m| m.ident.to_string());
    let arms = def.methods.iter().map(|m| render_server_arm(trait_ident, m));
    quote! {
        #[doc = #doc]
        #vis struct #server<T> {
            inner: ::rpc_core::__private::Arc<T>,
        }

        impl<T: #trait_ident> #server<T> {
            /// Serves `service`.
            pub fn new(service: T) -> Self {
                Self { inner: ::rpc_core::__private::Arc::new(service) }
            }

            /// Serves a shared `service`.
            pub fn from_arc(service: ::rpc_core::__private::Arc<T>) -> Self {
                Self { inner: service }
            }
        }

        impl<T> ::core::clone::Clone for #server<T> {
            fn clone(&self) -> Self {
                Self { inner: ::rpc_core::__private::Arc::clone(&self.inner) }
            }
        }

        impl<T: #trait_ident> ::rpc_core::server::Service for #server<T> {
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

            fn call(
                &self,
                method: &str,
                serializer: ::rpc_core::SerializerKind,
                args: ::rpc_core::__private::Bytes,
            ) -> ::rpc_core::server::BoxFuture<'static, ::rpc_core::Reply> {
                match method {
                    #(#arms)*
                    other => {
                        let reply = ::rpc_core::Reply::method_not_found(#client::SERVICE_KEY, other);
                        ::std::boxed::Box::pin(::core::future::ready(reply))
                    }
                }
            }
        }
    }
}

fn render_server_arm(trait_ident: &syn::Ident, m: &MethodDef) -> TokenStream {
    let name = &m.ident;
    let method = name.to_string();
    let arg_names: Vec<_> = m.args.iter().map(|(n, _)| n).collect();
    // Span the argument tuple by its types so a missing serde impl points at the argument.
    let arg_types = m.args.iter().map(|(_, t)| quote_spanned!(t.span()=> #t));
    let encode = match &m.output {
        Output::Value(ty) => quote_spanned! {ty.span()=>
            ::rpc_core::Reply::ok(serializer, &out)
        },
        Output::Result { ok, err } => {
            let ok_reply = quote_spanned!(ok.span()=> ::rpc_core::Reply::ok(serializer, &value));
            let err_reply = quote_spanned!(err.span()=> ::rpc_core::Reply::application_error(serializer, &error));
            quote! {
                match out {
                    ::core::result::Result::Ok(value) => #ok_reply,
                    ::core::result::Result::Err(error) => #err_reply,
                }
            }
        }
    };
    quote! {
        #method => {
            let inner = ::rpc_core::__private::Arc::clone(&self.inner);
            ::std::boxed::Box::pin(async move {
                let (#(#arg_names,)*): (#(#arg_types,)*) = match serializer.decode(&args) {
                    ::core::result::Result::Ok(decoded) => decoded,
                    ::core::result::Result::Err(e) => return ::rpc_core::Reply::decode_failed(e),
                };
                let out = <T as #trait_ident>::#name(&inner, #(#arg_names),*).await;
                #encode
            })
        }
    }
}
