//! The steps every front end's request takes before its handler, written once.
//!
//! A front end (the binary protocol in `connection`, HTTP/JSON in `http`) reads its request
//! in its own way: a frame or an HTTP request, its metadata, its deadline. From there the
//! decisions are the same for all of them and are made here, in the order the design
//! documents ("Middleware: tower on both sides"):
//!
//! 1. [`Shared::route`]: the server still takes calls (else `ShuttingDown`) and the service
//!    serves the method (else `MethodNotFound`). Both are counted in
//!    `rpc_server_rejected_total`. The front end then checks what only it knows (the shape of
//!    a streaming method against how it was called).
//! 2. [`Shared::admit`]: the call's context is made (peer, identity, deadline, trace), then the
//!    interceptors see it: metrics and tracing first, then authentication and authorization.
//!    A caller they refuse spends nothing that is shared: no concurrency permit, no rate
//!    token, no shedding slot. Then a call encoded with a fixed-schema serializer whose
//!    caller's types differ from this server's is refused (`SchemaMismatch`, see
//!    [`crate::schema::SCHEMA_METADATA`]). Only then do the limits and the shedder admit the
//!    call, and a call they refuse is told to the interceptors (metrics count it) and counted
//!    as rejected.
//!
//! What follows admission (decoding the arguments, then the user's tower layers and the
//! handler with its deadline and panic catching) may still fail the call; [`Admitted::refused`]
//! ends an admitted call with a reply so that the interceptors always see its end.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::debug;

use super::limits::CallPermit;
use super::Shared;
use crate::context::{CallContext, Metadata, PeerIdentity};
use crate::error::{RpcError, SchemaMismatch};
use crate::interceptor::Outcome;
use crate::metrics;
use crate::protocol::Status;
use crate::reply::Reply;
use crate::schema::SCHEMA_METADATA;
use crate::serializer::SerializerKind;
use crate::service::Service;

/// What a front end knows of a request when it asks to run it.
pub(crate) struct Arrival {
    /// The service's name as the request spelled it (the context keeps it).
    pub(crate) service_name: Bytes,
    /// The method's name.
    pub(crate) method: Bytes,
    pub(crate) metadata: Metadata,
    pub(crate) deadline: Option<Instant>,
    pub(crate) peer: SocketAddr,
    pub(crate) identity: Option<Arc<PeerIdentity>>,
    pub(crate) request_id: u64,
    /// When the request arrived.
    pub(crate) now: Instant,
    /// Whether it opens a stream (streams take their own limits, and shedding spares them).
    pub(crate) streaming: bool,
    /// How its arguments are encoded.
    pub(crate) serializer: SerializerKind,
}

/// A call that passed admission: its context, as the interceptors left it, and its share of
/// the limits, held until the call ends.
pub(crate) struct Admitted {
    pub(crate) ctx: CallContext,
    pub(crate) permit: CallPermit,
    /// Whether there are interceptors, which then see the call's end.
    pub(crate) intercepted: bool,
}

impl Admitted {
    /// Ends an admitted call that fails with `status` before its handler runs (its arguments
    /// do not decode, its body cannot be read): the interceptors see the failure, and the
    /// permit goes back.
    pub(crate) fn refused(self, shared: &Shared, status: Status) {
        if self.intercepted {
            shared.interceptors.on_response(&self.ctx, Outcome::from_status(status));
        }
    }
}

/// A reply that refuses a request without running it, counted in `rpc_server_rejected_total`
/// by its status; every front end's refusals go through here.
pub(crate) fn rejected(refusal: Reply) -> Reply {
    metrics::server_rejected(refusal.status);
    refusal
}

impl Shared {
    /// Whether a call encoded with `serializer` reads as its caller wrote it: always for a
    /// serializer that reads by name; for a fixed-schema one, when the caller's fingerprint of
    /// the method's types, if it sent one, is this server's (see [`crate::schema::SCHEMA_METADATA`]).
    fn same_types(
        &self,
        service_key: &str,
        ctx: &CallContext,
        serializer: SerializerKind,
    ) -> Result<(), Box<SchemaMismatch>> {
        if serializer.tolerates_additive_changes() {
            return Ok(());
        }
        match (self.prints.get(service_key), ctx.metadata().get(SCHEMA_METADATA)) {
            (Some(prints), Some(caller)) => prints.check(ctx.method(), caller),
            _ => Ok(()),
        }
    }

    /// Step 1: whether the server takes calls and `service` serves `method`; the refusal
    /// otherwise (counted as rejected).
    pub(crate) fn route(&self, service: &dyn Service, method: &str) -> Result<(), Reply> {
        let refusal = if self.draining.is_cancelled() {
            Reply::failure(Status::ShuttingDown, "server is shutting down")
        } else if !service.methods().contains(&method) {
            Reply::method_not_found(service.key(), method)
        } else {
            return Ok(());
        };
        Err(rejected(refusal))
    }

    /// Step 2: the call's context and its interceptors, then the limits of `service_key`. The
    /// reply that refuses the call otherwise.
    pub(crate) fn admit(&self, service_key: &str, arrival: Arrival) -> Result<Admitted, Reply> {
        let Arrival {
            service_name,
            method,
            metadata,
            deadline,
            peer,
            identity,
            request_id,
            now,
            streaming,
            serializer,
        } = arrival;
        let mut ctx = CallContext::server(service_name, method, metadata, deadline, Some(peer), request_id, now);
        ctx.set_peer_identity(identity);
        if let Err(refusal) = self.interceptors.on_request(&mut ctx) {
            debug!(service = ctx.service(), method = ctx.method(), %refusal, "an interceptor refused the call");
            return Err(Reply::from_error(&refusal));
        }
        let intercepted = !self.interceptors.is_empty();
        if let Err(mismatch) = self.same_types(service_key, &ctx, serializer) {
            debug!(service = ctx.service(), method = ctx.method(), %mismatch, "refused: the caller's types differ");
            let refusal = Reply::from_error(&RpcError::SchemaMismatch(mismatch));
            if intercepted {
                self.interceptors
                    .on_response(&ctx, Outcome::from_status(refusal.status));
            }
            return Err(rejected(refusal));
        }
        match self.limits.admit(service_key, ctx.method(), streaming) {
            Ok(permit) => Ok(Admitted {
                ctx,
                permit,
                intercepted,
            }),
            Err(limited) => {
                let refusal = Reply::failure(Status::Overloaded, limited.message);
                if intercepted {
                    self.interceptors
                        .on_response(&ctx, Outcome::from_status(refusal.status));
                }
                Err(rejected(refusal))
            }
        }
    }
}
