//! zstd compression of call bodies, negotiated per connection so that a peer that cannot
//! decode a compressed body is never sent one.
//!
//! # Negotiation (three header flag bits, see [`flags`])
//!
//! * Every response of a server of this build (with the `zstd` feature) carries
//!   [`flags::DECOMPRESSES`]: it decodes compressed request arguments. A client compresses a
//!   request's arguments on a connection only once a response on that connection carried the
//!   bit, so the first call of a connection goes plain and a server of an earlier build, which
//!   never sets it, never gets a compressed request.
//! * A request carries [`flags::DECOMPRESSES`] when its client's compression is on for the
//!   method; only then does a server compress the response.
//! * [`flags::COMPRESSED`] marks a compressed body: on a request, its arguments (the prefix
//!   with the service, method and metadata stays plain, so the server routes, limits and
//!   refuses it without decompressing); on a response, the whole body.
//!
//! Each side compresses bodies of at least `min_bytes` at its `level`, and sends the plain
//! body when compression would not make it smaller. A receiver reads the frame's declared
//! size first and refuses one over its maximum frame size before it allocates anything, so
//! a small compressed frame cannot make it hold more than an uncompressed one could; a body
//! that does not decompress fails that call only (a request: `DecodeError`; a response: a
//! decode error), never the connection. With compression off (the default) nothing is
//! compressed and the call path only tests one flag bit. Streams' items are not compressed.

use bytes::Bytes;

use crate::body::Body;
use crate::config::CompressionConfig;
use crate::protocol::flags;

/// Whether this build can compress and decompress bodies (the `zstd` feature).
pub const SUPPORTED: bool = cfg!(feature = "zstd");

/// How one side compresses the bodies it sends: those of at least `min_bytes`, at `level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    /// Bodies smaller than this go plain.
    pub min_bytes: usize,
    /// zstd level (1 fastest; up to 22).
    pub level: i32,
}

impl Compression {
    /// The compression `config` asks for; none when it is off or this build cannot compress.
    pub fn of(config: &CompressionConfig) -> Option<Self> {
        (SUPPORTED && config.enabled).then_some(Self {
            min_bytes: config.min_bytes,
            level: config.level,
        })
    }

    /// The configuration a resolved compression (or none) stands for, for further changes.
    pub fn config(compression: Option<Self>) -> CompressionConfig {
        match compression {
            None => CompressionConfig::default(),
            Some(c) => CompressionConfig {
                enabled: true,
                min_bytes: c.min_bytes,
                level: c.level,
            },
        }
    }

    /// `body` compressed, when it is large enough and compression makes it smaller.
    pub(crate) fn compress(&self, body: &Body) -> Option<Bytes> {
        if body.len() < self.min_bytes {
            return None;
        }
        let packed = compress_parts(body, self.level)?;
        (packed.len() < body.len()).then_some(packed)
    }

    /// A request body (`prefix_len` bytes of prefix, then the arguments) with its arguments
    /// compressed, when they are large enough and shrink; the flag to set with it.
    pub(crate) fn compress_request(&self, body: &Body) -> Option<(Body, u8)> {
        let first = body.parts().next()?;
        let prefix_len = crate::protocol::request_prefix_len(first)?;
        let (prefix, args) = body.clone().split_front(prefix_len)?;
        let packed = self.compress(&args)?;
        Some((Body::from_parts([prefix, packed]), flags::COMPRESSED))
    }
}

/// Why a compressed body could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecompressError {
    /// It declares (or turned out to have) more bytes than the receiver accepts.
    #[error("compressed body expands beyond the limit of {max} bytes")]
    TooLarge {
        /// The receiver's maximum.
        max: usize,
    },
    /// It is not a zstd frame this build can read (or this build has no zstd).
    #[error("compressed body is not valid zstd: {0}")]
    Invalid(String),
}

#[cfg(feature = "zstd")]
fn compress_parts(body: &Body, level: i32) -> Option<Bytes> {
    let whole = body.as_one();
    zstd::bulk::compress(&whole[..], level).ok().map(Bytes::from)
}

#[cfg(not(feature = "zstd"))]
fn compress_parts(_: &Body, _: i32) -> Option<Bytes> {
    None
}

/// Decompresses `body`, refusing more than `max` bytes of output.
#[cfg(feature = "zstd")]
pub(crate) fn decompress(body: &Body, max: usize) -> Result<Bytes, DecompressError> {
    use std::io::Read;
    let whole = body.as_one();
    let declared = zstd::zstd_safe::get_frame_content_size(&whole[..])
        .map_err(|_| DecompressError::Invalid("not a zstd frame".to_owned()))?;
    match declared {
        Some(size) if size > max as u64 => Err(DecompressError::TooLarge { max }),
        Some(size) => zstd::bulk::decompress(&whole[..], size as usize)
            .map(Bytes::from)
            .map_err(|e| DecompressError::Invalid(e.to_string())),
        None => {
            // A frame without its size (a streaming encoder's): read at most one byte past
            // the limit.
            let decoder =
                zstd::stream::read::Decoder::new(&whole[..]).map_err(|e| DecompressError::Invalid(e.to_string()))?;
            let mut out = Vec::new();
            decoder
                .take(max as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| DecompressError::Invalid(e.to_string()))?;
            if out.len() > max {
                return Err(DecompressError::TooLarge { max });
            }
            Ok(Bytes::from(out))
        }
    }
}

/// Decompresses `body`: this build has no zstd, so it cannot.
#[cfg(not(feature = "zstd"))]
pub(crate) fn decompress(_: &Body, _: usize) -> Result<Bytes, DecompressError> {
    Err(DecompressError::Invalid(
        "this build has no zstd (the `zstd` feature)".to_owned(),
    ))
}

#[cfg(all(test, feature = "zstd"))]
mod tests {
    use super::*;

    fn record(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| format!("{{\"id\":{i},\"name\":\"user {i}\",\"active\":true}},").into_bytes())
            .collect()
    }

    #[test]
    fn bodies_round_trip_and_small_or_incompressible_ones_stay_plain() {
        let c = Compression {
            min_bytes: 1024,
            level: 1,
        };
        let big = Body::from(Bytes::from(record(1000)));
        let packed = c.compress(&big).expect("compressible");
        assert!(packed.len() * 5 < big.len(), "{} -> {}", big.len(), packed.len());
        assert_eq!(
            decompress(&Body::from(packed), 1 << 20).unwrap(),
            big.as_one().into_owned()
        );
        assert!(
            c.compress(&Body::from(Bytes::from(record(5)))).is_none(),
            "under min_bytes"
        );
        let mut rng = fastrand::Rng::with_seed(7);
        let noise: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
        assert!(
            c.compress(&Body::from(Bytes::from(noise))).is_none(),
            "would not shrink"
        );
    }

    #[test]
    fn a_body_expanding_past_the_limit_or_not_zstd_is_refused() {
        let c = Compression { min_bytes: 0, level: 1 };
        let packed = c.compress(&Body::from(Bytes::from(vec![0u8; 1 << 20]))).unwrap();
        assert!(packed.len() < 1024);
        assert!(matches!(
            decompress(&Body::from(packed), 64 * 1024),
            Err(DecompressError::TooLarge { .. })
        ));
        assert!(matches!(
            decompress(&Body::from(Bytes::from_static(b"plain text")), 1024),
            Err(DecompressError::Invalid(_))
        ));
    }
}
