//! The routing prefix of request bodies: service key and method name.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::error::{ProtocolError, RpcError};
use crate::serializer::SerializerKind;

/// A decoded request body: where it goes and the still-encoded arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBody {
    /// `name:version` of the target service.
    pub service: Bytes,
    /// Name of the method.
    pub method: Bytes,
    /// The arguments, encoded with the frame's serializer.
    pub args: Bytes,
}

impl RequestBody {
    /// Splits a request body into routing prefix and arguments without copying.
    pub fn parse(mut body: Bytes) -> Result<Self, ProtocolError> {
        let service = take_str(&mut body, "service key")?;
        let method = take_str(&mut body, "method name")?;
        Ok(Self {
            service,
            method,
            args: body,
        })
    }

    /// The service key as text.
    pub fn service_str(&self) -> Result<&str, ProtocolError> {
        std::str::from_utf8(&self.service).map_err(|_| ProtocolError::Malformed("service key is not UTF-8"))
    }

    /// The method name as text.
    pub fn method_str(&self) -> Result<&str, ProtocolError> {
        std::str::from_utf8(&self.method).map_err(|_| ProtocolError::Malformed("method name is not UTF-8"))
    }
}

fn take_str(body: &mut Bytes, what: &'static str) -> Result<Bytes, ProtocolError> {
    if body.len() < 2 {
        return Err(ProtocolError::Truncated(what));
    }
    let len = body.get_u16() as usize;
    if body.len() < len {
        return Err(ProtocolError::Truncated(what));
    }
    Ok(body.split_to(len))
}

/// Encodes a request body: routing prefix, then `args` with `serializer`.
///
/// `args` is the tuple of the method's arguments.
pub fn encode_request_body<A: Serialize + ?Sized>(
    service: &str,
    method: &str,
    serializer: SerializerKind,
    args: &A,
) -> Result<Bytes, RpcError> {
    let mut buf = BytesMut::with_capacity(4 + service.len() + method.len() + 32);
    put_str(&mut buf, service, "service key")?;
    put_str(&mut buf, method, "method name")?;
    serializer.encode_into(args, &mut buf)?;
    Ok(buf.freeze())
}

fn put_str(buf: &mut BytesMut, s: &str, what: &str) -> Result<(), RpcError> {
    let len = u16::try_from(s.len()).map_err(|_| RpcError::Encode(format!("{what} longer than 65535 bytes")))?;
    buf.put_u16(len);
    buf.put_slice(s.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_routing_prefix() {
        let body = encode_request_body("UserService:1.0", "get_user", SerializerKind::Bincode, &(7u64,)).unwrap();
        let parsed = RequestBody::parse(body).unwrap();
        assert_eq!(parsed.service_str().unwrap(), "UserService:1.0");
        assert_eq!(parsed.method_str().unwrap(), "get_user");
        let (id,): (u64,) = SerializerKind::Bincode.decode(&parsed.args).unwrap();
        assert_eq!(id, 7);
    }

    #[test]
    fn truncated_prefix_is_an_error() {
        assert!(RequestBody::parse(Bytes::from_static(&[0])).is_err());
        assert!(RequestBody::parse(Bytes::from_static(&[0, 10, b'a'])).is_err());
        assert!(RequestBody::parse(Bytes::from_static(&[0, 1, b'a', 0, 5, b'b'])).is_err());
    }
}
