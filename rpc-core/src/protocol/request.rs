//! The prefix of request bodies: service key, method name and metadata.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::body::Body;
use crate::context::{check_key, Metadata, MetadataError, MetadataLimits};
use crate::error::{ProtocolError, RpcError};
use crate::serializer::SerializerKind;

/// A decoded request body: where it goes, its metadata and the still-encoded arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBody {
    /// `name:version` of the target service (UTF-8).
    pub service: Bytes,
    /// Name of the method (UTF-8).
    pub method: Bytes,
    /// The call's metadata.
    pub metadata: Metadata,
    /// The arguments, encoded with the frame's serializer (decode them with
    /// [`SerializerKind::decode_body`]).
    pub args: Body,
}

impl RequestBody {
    /// Splits a request body into prefix and arguments without copying.
    ///
    /// The metadata block is checked against `limits` from its length and count fields,
    /// before anything is allocated for it ([`ProtocolError::MetadataOverLimit`]); keys must
    /// be valid keys and values UTF-8 ([`ProtocolError::InvalidMetadata`]). A body that
    /// arrived as its head and its final byte string keeps the byte string as the arguments'
    /// own last piece.
    pub fn parse(body: impl Into<Body>, limits: &MetadataLimits) -> Result<Self, ProtocolError> {
        match body.into().into_head_and_tail() {
            Ok((head, tail)) => match Self::parse_one(head.clone(), limits) {
                Ok(mut request) => {
                    request.args = Body::with_tail([request.args.into_one(), tail]);
                    Ok(request)
                }
                // A head too short for the prefix: the body is still whole when joined.
                Err(_) => Self::parse_one(Body::from_parts([head, tail]).into_one(), limits),
            },
            Err(body) => Self::parse_one(body.into_one(), limits),
        }
    }

    fn parse_one(mut body: Bytes, limits: &MetadataLimits) -> Result<Self, ProtocolError> {
        let service = take_utf8(&mut body, "service key")?;
        let method = take_utf8(&mut body, "method name")?;
        if body.len() < 4 {
            return Err(ProtocolError::Truncated("metadata length"));
        }
        let block_len = body.get_u32() as usize;
        if block_len > limits.max_bytes {
            return Err(ProtocolError::MetadataOverLimit {
                what: "bytes",
                len: block_len,
                max: limits.max_bytes,
            });
        }
        if body.len() < block_len {
            return Err(ProtocolError::Truncated("metadata"));
        }
        let metadata = parse_metadata(body.split_to(block_len), limits)?;
        Ok(Self {
            service,
            method,
            metadata,
            args: body.into(),
        })
    }

    /// The service key as text.
    pub fn service_str(&self) -> &str {
        std::str::from_utf8(&self.service).unwrap_or_default()
    }

    /// The method name as text.
    pub fn method_str(&self) -> &str {
        std::str::from_utf8(&self.method).unwrap_or_default()
    }
}

fn parse_metadata(mut block: Bytes, limits: &MetadataLimits) -> Result<Metadata, ProtocolError> {
    if block.len() < 2 {
        return Err(ProtocolError::Truncated("metadata count"));
    }
    let count = block.get_u16() as usize;
    if count > limits.max_entries {
        return Err(ProtocolError::MetadataOverLimit {
            what: "entries",
            len: count,
            max: limits.max_entries,
        });
    }
    if count == 0 {
        return if block.is_empty() {
            Ok(Metadata::new())
        } else {
            Err(ProtocolError::Malformed("bytes after the metadata entries"))
        };
    }
    let mut entries: Vec<(Bytes, Bytes)> = Vec::with_capacity(count);
    for _ in 0..count {
        let key = take_field(&mut block, "metadata key")?;
        check_key(&key).map_err(ProtocolError::InvalidMetadata)?;
        let value = take_utf8(&mut block, "metadata value")?;
        if entries.iter().any(|(k, _)| *k == key) {
            return Err(ProtocolError::InvalidMetadata(MetadataError::DuplicateKey(
                String::from_utf8_lossy(&key).into_owned(),
            )));
        }
        entries.push((key, value));
    }
    if !block.is_empty() {
        return Err(ProtocolError::Malformed("bytes after the metadata entries"));
    }
    Ok(Metadata::from_validated(entries))
}

fn take_field(body: &mut Bytes, what: &'static str) -> Result<Bytes, ProtocolError> {
    if body.len() < 2 {
        return Err(ProtocolError::Truncated(what));
    }
    let len = body.get_u16() as usize;
    if body.len() < len {
        return Err(ProtocolError::Truncated(what));
    }
    Ok(body.split_to(len))
}

fn take_utf8(body: &mut Bytes, what: &'static str) -> Result<Bytes, ProtocolError> {
    let field = take_field(body, what)?;
    match std::str::from_utf8(&field) {
        Ok(_) => Ok(field),
        Err(_) => Err(ProtocolError::NotUtf8(what)),
    }
}

/// Encodes a request body: the prefix, then `args` (the tuple of the method's arguments) with
/// `serializer`. The metadata must have passed [`Metadata::check`].
pub fn encode_request_body<A: Serialize + ?Sized>(
    service: &str,
    method: &str,
    metadata: &Metadata,
    serializer: SerializerKind,
    args: &A,
) -> Result<Body, RpcError> {
    crate::arena::encode_with(
        || Ok(prefix_len(service, method, metadata) + serializer.encoded_size(args)?.unwrap_or(64)),
        |buf, shared| {
            put_prefix(buf, service, method, metadata)?;
            serializer.encode_sharing(args, buf, shared)
        },
    )
}

/// Encodes the prefix of a request body (service key, method name, metadata), for arguments
/// encoded apart (with [`SerializerKind::encode_body`]) and joined after it with
/// [`Body::prepend`]: what a client does when its layers may still change the metadata after
/// the arguments were encoded. The metadata must have passed [`Metadata::check`].
pub fn encode_request_prefix(service: &str, method: &str, metadata: &Metadata) -> Result<Bytes, RpcError> {
    let mut buf = BytesMut::with_capacity(prefix_len(service, method, metadata));
    put_prefix(&mut buf, service, method, metadata)?;
    Ok(buf.freeze())
}

/// The length of the prefix (service key, method name, metadata block) at the start of an
/// encoded request body, read from its length fields; `None` when `start` ends before it.
pub fn request_prefix_len(start: &[u8]) -> Option<usize> {
    let u16_at = |at: usize| Some(usize::from(u16::from_be_bytes(start.get(at..at + 2)?.try_into().ok()?)));
    let method_at = 2 + u16_at(0)?;
    let metadata_at = method_at + 2 + u16_at(method_at)?;
    let block: [u8; 4] = start.get(metadata_at..metadata_at + 4)?.try_into().ok()?;
    let end = metadata_at + 4 + u32::from_be_bytes(block) as usize;
    (end <= start.len()).then_some(end)
}

fn prefix_len(service: &str, method: &str, metadata: &Metadata) -> usize {
    8 + service.len() + method.len() + metadata.encoded_len()
}

fn put_prefix(buf: &mut BytesMut, service: &str, method: &str, metadata: &Metadata) -> Result<(), RpcError> {
    put_field(buf, service.as_bytes(), "service key")?;
    put_field(buf, method.as_bytes(), "method name")?;
    let block_len =
        u32::try_from(metadata.encoded_len()).map_err(|_| RpcError::InvalidMetadata("block too long".to_owned()))?;
    buf.put_u32(block_len);
    let count = u16::try_from(metadata.len()).map_err(|_| RpcError::InvalidMetadata("too many entries".to_owned()))?;
    buf.put_u16(count);
    for (key, value) in metadata.raw() {
        put_field(buf, key, "metadata key")?;
        put_field(buf, value, "metadata value")?;
    }
    Ok(())
}

fn put_field(buf: &mut BytesMut, field: &[u8], what: &str) -> Result<(), RpcError> {
    let len = u16::try_from(field.len()).map_err(|_| RpcError::Encode(format!("{what} longer than 65535 bytes")))?;
    buf.put_u16(len);
    buf.put_slice(field);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> MetadataLimits {
        MetadataLimits::default()
    }

    #[test]
    fn round_trips_prefix_metadata_and_arguments() {
        let metadata: Metadata = [("tenant", "acme"), ("traceparent", "x")].into_iter().collect();
        let body = encode_request_body(
            "UserService:1.0",
            "get_user",
            &metadata,
            SerializerKind::Bincode,
            &(7u64,),
        )
        .unwrap();
        let parsed = RequestBody::parse(body.into_one(), &limits()).unwrap();
        assert_eq!(parsed.service_str(), "UserService:1.0");
        assert_eq!(parsed.method_str(), "get_user");
        assert_eq!(parsed.metadata, metadata);
        let (id,): (u64,) = SerializerKind::Bincode.decode_body(parsed.args).unwrap();
        assert_eq!(id, 7);
    }

    #[test]
    fn arguments_ending_in_a_vector_keep_it_as_their_own_piece() {
        let payload = vec![5u8; 40_000];
        let args = (1u8, crate::byte_string::WireBytes::from_vec(payload.clone()));
        let body = encode_request_body("S:1", "m", &Metadata::new(), SerializerKind::Postcard, &args).unwrap();
        let head_len = body.head_len().unwrap();
        let one = body.into_one();
        let arrived = |at: usize| Body::with_tail([one.slice(..at), Bytes::copy_from_slice(&one[at..])]);
        for at in [head_len, 4] {
            // As sent, and with a head too short for the prefix (then parsed joined).
            let parsed = RequestBody::parse(arrived(at), &limits()).unwrap();
            assert_eq!((parsed.service_str(), parsed.method_str()), ("S:1", "m"));
            assert_eq!(parsed.args.parts().count(), if at == head_len { 2 } else { 1 });
            let (n, back): (u8, crate::byte_string::ByteVec) =
                SerializerKind::Postcard.decode_body(parsed.args).unwrap();
            assert!(n == 1 && back.0 == payload, "split at {at}");
        }
    }

    #[test]
    fn empty_metadata_costs_six_bytes() {
        let body = encode_request_body("S", "m", &Metadata::new(), SerializerKind::Bincode, &()).unwrap();
        assert_eq!(body.len(), 3 + 3 + 4 + 2);
        assert!(RequestBody::parse(body.into_one(), &limits())
            .unwrap()
            .metadata
            .is_empty());
    }

    #[test]
    fn truncated_prefix_is_an_error() {
        assert!(RequestBody::parse(Bytes::from_static(&[0]), &limits()).is_err());
        assert!(RequestBody::parse(Bytes::from_static(&[0, 10, b'a']), &limits()).is_err());
        assert!(RequestBody::parse(Bytes::from_static(&[0, 1, b'a', 0, 5, b'b']), &limits()).is_err());
        assert!(RequestBody::parse(Bytes::from_static(&[0, 1, b'a', 0, 1, b'b', 0, 0]), &limits()).is_err());
    }

    #[test]
    fn limits_are_enforced_from_the_length_fields() {
        // A block that claims 4 GiB: refused from its length, nothing read or reserved.
        let mut body = BytesMut::new();
        body.put_slice(&[0, 1, b's', 0, 1, b'm']);
        body.put_u32(u32::MAX);
        let err = RequestBody::parse(body.freeze(), &limits()).unwrap_err();
        assert!(
            matches!(err, ProtocolError::MetadataOverLimit { what: "bytes", .. }),
            "{err}"
        );

        // 65535 entries claimed in a small block: refused from the count.
        let mut body = BytesMut::new();
        body.put_slice(&[0, 1, b's', 0, 1, b'm']);
        body.put_u32(2);
        body.put_u16(u16::MAX);
        let err = RequestBody::parse(body.freeze(), &limits()).unwrap_err();
        assert_eq!(
            err,
            ProtocolError::MetadataOverLimit {
                what: "entries",
                len: 65535,
                max: 64
            }
        );

        let many: Metadata = (0..5).map(|i| (format!("k{i}"), "v")).collect();
        let body = encode_request_body("S", "m", &many, SerializerKind::Json, &()).unwrap();
        let tight = MetadataLimits {
            max_entries: 4,
            max_bytes: 1000,
        };
        assert!(matches!(
            RequestBody::parse(body.into_one(), &tight),
            Err(ProtocolError::MetadataOverLimit {
                what: "entries",
                len: 5,
                max: 4
            })
        ));
    }

    #[test]
    fn bad_keys_duplicates_and_bad_utf8_are_refused() {
        let encode = |entries: &[(&[u8], &[u8])]| {
            let mut body = BytesMut::new();
            body.put_slice(&[0, 1, b's', 0, 1, b'm']);
            let len: usize = 2 + entries.iter().map(|(k, v)| 4 + k.len() + v.len()).sum::<usize>();
            body.put_u32(len as u32);
            body.put_u16(entries.len() as u16);
            for (k, v) in entries {
                body.put_u16(k.len() as u16);
                body.put_slice(k);
                body.put_u16(v.len() as u16);
                body.put_slice(v);
            }
            RequestBody::parse(body.freeze(), &limits())
        };
        assert!(encode(&[(b"ok", b"v")]).is_ok());
        assert!(matches!(
            encode(&[(b"Bad", b"v")]),
            Err(ProtocolError::InvalidMetadata(_))
        ));
        assert!(matches!(
            encode(&[(b"a", b"1"), (b"a", b"2")]),
            Err(ProtocolError::InvalidMetadata(_))
        ));
        assert_eq!(
            encode(&[(b"a", &[0xff, 0xfe])]),
            Err(ProtocolError::NotUtf8("metadata value"))
        );
    }
}
