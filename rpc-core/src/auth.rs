//! Caller authentication and authorization, as [interceptors](crate::interceptor) on the
//! call context.
//!
//! * [`BearerTokens`] (server): a call must carry `authorization: Bearer <token>` metadata
//!   with one of the configured tokens, or it is refused as `Unauthenticated`.
//! * [`BearerToken`] (client): puts the token into every call's metadata.
//! * [`AllowList`] (server, with mTLS): per service, the client identities that may call it
//!   (a certificate's common name, DNS or URI name); any other verified client is refused as
//!   `PermissionDenied`, a client without a certificate as `Unauthenticated`.
//!
//! A refused call never reaches the handler and is never retried. Tokens are compared in
//! constant time. They travel in the request's metadata: use TLS so they are not sent in the
//! clear.

use std::collections::HashMap;

use crate::context::{CallContext, Side};
use crate::error::RpcError;
use crate::interceptor::Interceptor;

/// The metadata key of credentials.
pub const AUTHORIZATION: &str = "authorization";

/// The scheme prefix of a bearer token in [`AUTHORIZATION`].
const BEARER: &str = "Bearer ";

/// Server interceptor: refuses calls without one of these bearer tokens.
pub struct BearerTokens {
    tokens: Vec<Vec<u8>>,
}

impl BearerTokens {
    /// An interceptor accepting any of `tokens`.
    pub fn new<T: AsRef<str>>(tokens: impl IntoIterator<Item = T>) -> Self {
        Self {
            tokens: tokens.into_iter().map(|t| t.as_ref().as_bytes().to_vec()).collect(),
        }
    }
}

impl Interceptor for BearerTokens {
    fn on_request(&self, ctx: &mut CallContext) -> Result<(), RpcError> {
        if ctx.side() != Side::Server {
            return Ok(());
        }
        let Some(value) = ctx.metadata().get(AUTHORIZATION) else {
            return Err(RpcError::Unauthenticated(
                "a bearer token is required (metadata \"authorization: Bearer <token>\")".into(),
            ));
        };
        let Some(token) = value.strip_prefix(BEARER) else {
            return Err(RpcError::Unauthenticated(
                "the authorization metadata is not a bearer token".into(),
            ));
        };
        // Every token is compared, whichever matches, so timing tells nothing.
        let matched = self
            .tokens
            .iter()
            .fold(false, |found, known| constant_time_eq(known, token.as_bytes()) | found);
        if matched {
            Ok(())
        } else {
            Err(RpcError::Unauthenticated("the bearer token is not valid".into()))
        }
    }
}

impl std::fmt::Debug for BearerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BearerTokens({} tokens)", self.tokens.len())
    }
}

/// Client interceptor: sends `token` as a bearer token with every call.
pub struct BearerToken {
    value: String,
}

impl BearerToken {
    /// An interceptor sending `token`.
    pub fn new(token: impl AsRef<str>) -> Self {
        Self {
            value: format!("{BEARER}{}", token.as_ref()),
        }
    }
}

impl Interceptor for BearerToken {
    fn on_request(&self, ctx: &mut CallContext) -> Result<(), RpcError> {
        if ctx.side() == Side::Client {
            ctx.metadata_mut().insert(AUTHORIZATION, self.value.clone());
        }
        Ok(())
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(***)")
    }
}

/// Server interceptor: per service, the client identities that may call it (see the module docs).
#[derive(Debug, Default)]
pub struct AllowList {
    by_service: HashMap<String, Vec<String>>,
}

impl AllowList {
    /// An interceptor allowing, for each service key, the identities listed.
    pub fn new<K: Into<String>, N: Into<String>>(allow: impl IntoIterator<Item = (K, Vec<N>)>) -> Self {
        Self {
            by_service: allow
                .into_iter()
                .map(|(service, names)| (service.into(), names.into_iter().map(Into::into).collect()))
                .collect(),
        }
    }
}

impl Interceptor for AllowList {
    fn on_request(&self, ctx: &mut CallContext) -> Result<(), RpcError> {
        if ctx.side() != Side::Server {
            return Ok(());
        }
        let Some(allowed) = self.by_service.get(ctx.service()) else {
            return Ok(());
        };
        match ctx.peer_identity() {
            Some(identity) if allowed.iter().any(|name| identity.is(name)) => Ok(()),
            Some(identity) => Err(RpcError::PermissionDenied(format!(
                "{identity} may not call {}",
                ctx.service()
            ))),
            None => Err(RpcError::Unauthenticated(format!(
                "{} requires a verified client certificate",
                ctx.service()
            ))),
        }
    }
}

/// Equality in time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::context::{Metadata, PeerIdentity};
    use crate::error::ErrorKind;

    fn server_call(service: &'static str, authorization: Option<&str>, identity: Option<PeerIdentity>) -> CallContext {
        let mut metadata = Metadata::new();
        if let Some(value) = authorization {
            metadata.insert(AUTHORIZATION, value);
        }
        let mut ctx = CallContext::server(
            Bytes::from_static(service.as_bytes()),
            Bytes::from_static(b"m"),
            metadata,
            None,
            None,
            1,
            tokio::time::Instant::now(),
        );
        ctx.set_peer_identity(identity.map(Arc::new));
        ctx
    }

    fn refusal(interceptor: &dyn Interceptor, mut ctx: CallContext) -> Option<(ErrorKind, String)> {
        interceptor
            .on_request(&mut ctx)
            .err()
            .map(|r| (r.kind(), r.wire_message()))
    }

    #[test]
    fn tokens_are_required_and_checked() {
        let layer = BearerTokens::new(["alpha", "beta"]);
        assert_eq!(refusal(&layer, server_call("S:1", Some("Bearer beta"), None)), None);
        let (kind, message) = refusal(&layer, server_call("S:1", None, None)).unwrap();
        assert_eq!(kind, ErrorKind::Unauthenticated);
        assert!(message.contains("required"), "{message}");
        let (_, message) = refusal(&layer, server_call("S:1", Some("Bearer gamma"), None)).unwrap();
        assert_eq!(message, "the bearer token is not valid");
        assert!(refusal(&layer, server_call("S:1", Some("Basic alpha"), None)).is_some());
        assert!(refusal(&layer, server_call("S:1", Some("Bearer alph"), None)).is_some());
    }

    #[test]
    fn the_client_interceptor_sends_the_token() {
        let mut ctx = CallContext::client(
            Bytes::from_static(b"S:1"),
            Bytes::from_static(b"m"),
            Metadata::new(),
            None,
        );
        BearerToken::new("alpha").on_request(&mut ctx).unwrap();
        assert_eq!(ctx.metadata().get(AUTHORIZATION), Some("Bearer alpha"));
        assert!(!format!("{:?}", BearerToken::new("alpha")).contains("alpha"));
    }

    #[test]
    fn allow_lists_name_identities_per_service() {
        let layer = AllowList::new([("S:1", vec!["client-a", "spiffe://corp/b"])]);
        let a = PeerIdentity::new(Some("client-a".into()), vec![], vec![]);
        let b = PeerIdentity::new(Some("other".into()), vec![], vec!["spiffe://corp/b".into()]);
        let c = PeerIdentity::new(Some("client-c".into()), vec!["c.corp".into()], vec![]);
        assert_eq!(refusal(&layer, server_call("S:1", None, Some(a))), None);
        assert_eq!(refusal(&layer, server_call("S:1", None, Some(b))), None);
        let (kind, message) = refusal(&layer, server_call("S:1", None, Some(c.clone()))).unwrap();
        assert_eq!(
            (kind, message.as_str()),
            (ErrorKind::PermissionDenied, "client-c may not call S:1")
        );
        let (kind, _) = refusal(&layer, server_call("S:1", None, None)).unwrap();
        assert_eq!(kind, ErrorKind::Unauthenticated);
        assert_eq!(
            refusal(&layer, server_call("Other:1", None, Some(c))),
            None,
            "unlisted services are open"
        );
    }
}
