//! The wire protocol (version 2): length-delimited frames with a fixed big-endian header.
//!
//! # Byte layout
//!
//! Every frame is a 24-byte header followed by `body_len` bytes of body. All integers are
//! big-endian.
//!
//! | offset | size | field          | meaning                                                      |
//! |-------:|-----:|----------------|--------------------------------------------------------------|
//! | 0      | 2    | magic          | always `0x52 0x50` (`"RP"`)                                  |
//! | 2      | 1    | version        | protocol version, `2`                                        |
//! | 3      | 1    | message type   | see [`MessageType`] and the table below                      |
//! | 4      | 1    | serializer id  | see [`SerializerKind`](crate::SerializerKind) (0 where none) |
//! | 5      | 1    | status         | see [`Status`]; `0` except on responses                      |
//! | 6      | 1    | flags          | see [`flags`]; unknown bits are ignored                      |
//! | 7      | 1    | head length    | with [`flags::TAIL`]: body bytes before its final byte string; else `0` |
//! | 8      | 8    | request id     | chosen by the caller, echoed by the answer and by a cancel  |
//! | 16     | 4    | timeout ms     | requests: the caller's remaining budget, `0` = none         |
//! | 20     | 4    | body length    | bytes of body that follow, at most the configured maximum   |
//!
//! | type | value | direction | body |
//! |---|---:|---|---|
//! | Request  | 1 | client → server | prefix (below), then the arguments |
//! | Response | 2 | server → client | the result, the method's error, or a UTF-8 message |
//! | Ping     | 3 | either | empty; answered by a pong with the same request id |
//! | Pong     | 4 | either | empty |
//! | Cancel   | 5 | either | empty; from the client: the request with this id lost its caller, the server drops the handler and answers nothing; from the server: stop sending items of this stream |
//! | GoAway   | 6 | server → client | optional UTF-8 reason; no new requests on this connection, those in flight complete |
//! | StreamItem | 7 | either | items of the stream with this request id: each a 4-byte length and the item, encoded with the frame's serializer |
//! | StreamEnd | 8 | client → server | empty; the client has sent all its items of this stream |
//! | Credit   | 9 | either | 4-byte message count, 4-byte byte count: room for that many more items of this stream |
//! | extension | 0x80–0xff | either | skipped by a receiver that does not know the type |
//!
//! ## Request bodies
//!
//! | size | field |
//! |-----:|-------|
//! | 2 | service key length `s` |
//! | s | service key, UTF-8 (`name:version`) |
//! | 2 | method name length `m` |
//! | m | method name, UTF-8 |
//! | 4 | metadata block length `b` |
//! | b | metadata block: a 2-byte entry count `n`, then `n` times a 2-byte key length, the key, a 2-byte value length and the value (UTF-8; keys as in [`Metadata`](crate::context::Metadata)) |
//! | rest | the arguments, encoded with the frame's serializer as one tuple (`()`, `(a,)`, `(a, b, ..)`) |
//!
//! The prefix is binary and independent of the serializer, so the server can route the call
//! (and refuse it with a useful status) without decoding the arguments. The metadata block is
//! checked against the receiver's limits from its length and count fields before anything is
//! allocated for it; a request over them is answered [`Status::InvalidMetadata`] and the
//! connection stays open. Call context that needs no new field travels as metadata (the W3C
//! `traceparent`, tokens, routing tags); the deadline travels in the header.
//!
//! ## Response bodies
//!
//! With status [`Status::Ok`]: the encoded return value; with
//! [`Status::ApplicationError`]: the encoded error of a method returning `Result<T, E>`; with
//! any other status: a UTF-8 message for humans. A status this build does not know fails that
//! call only.
//!
//! # Streams
//!
//! A streaming call is a request flagged [`flags::STREAM`] whose arguments start with the
//! client's receive window (a [`Credit`] body: how many items and bytes the server may send
//! before it is granted more), followed by the encoded arguments (without a streamed one).
//! The header's timeout covers the whole stream.
//!
//! 1. The server answers a stream it refuses as it answers any call: a Response with the
//!    failure status. A stream it accepts gets a Credit frame first: the server's receive
//!    window, which also tells the client that the stream started. A server of an earlier
//!    build answers the flagged request [`Status::Unsupported`]; the client sends no stream
//!    frame before the Credit, so that server never sees one.
//! 2. Items flow as StreamItem frames on the request id, each way the method streams. A frame
//!    carries one item or more, each a 4-byte length and its bytes: a sender puts the items
//!    that are ready at once in one frame. A sender sends an item only while it has room (at least one message and one byte of
//!    credit left; an item may overrun the byte credit by itself); the receiver grants more
//!    with Credit frames as its reader takes items. Neither side buffers more than its window
//!    (plus one item), and a stream that nobody reads holds back its sender only.
//! 3. The client ends its items with StreamEnd. The server ends the call with a Response:
//!    [`Status::Ok`] with an empty body after a stream of items, or the result of a method
//!    that takes a stream and returns one value; [`Status::ApplicationError`] with the
//!    method's error; any other status as for calls.
//! 4. A Cancel from the client drops the server's handler (the client dropped its stream); a
//!    Cancel from the server asks the client to stop sending items (the handler dropped its
//!    input) while the call goes on.
//!
//! # Growth
//!
//! * New message types at or above `0x80` are extensions that old receivers skip; new types
//!   below that are only sent to peers known to understand them.
//! * Types 7 to 9 are sent only on a stream the peer opened or accepted (below), so a peer
//!   of an earlier build never receives one.
//! * A body that ends in a large byte string (a `Vec<u8>` or `String` argument or result of
//!   16 KiB or more) is flagged [`flags::TAIL`], with the number of body bytes before the byte
//!   string in the head-length byte (when they are at most 255). The receiver reads those
//!   bytes and the byte string into separate buffers, so the byte string reaches the handler
//!   (or the caller) as a `Vec<u8>` without a copy. Receivers that ignore the flag (every
//!   earlier build of version 2 did) read the same body.
//! * Compression (flags [`flags::COMPRESSED`] and [`flags::DECOMPRESSES`]) is used only
//!   once the peer said it decodes it, so earlier builds (which ignore the bits) never see a
//!   compressed body; see `waypost_core::compression`.
//! * A peer of another version gets one answer it can read (see [`version_rejection`]) and
//!   the connection closes: version-1 peers a version-1 response, newer peers a version-2
//!   [`Status::UnsupportedVersion`] response. Nothing is ever parsed with the wrong layout:
//!   the version is checked from the third byte on, before the header is read.
//!
//! # Decoding
//!
//! [`FrameDecoder`] works on a growable buffer fed by socket reads: it returns a frame once
//! all of it has arrived (partial reads), several frames from one read (coalesced reads), and
//! rejects a wrong magic, another version, an unknown type or a body over the maximum *before*
//! it reserves any memory for the body.

mod codec;
mod compat;
mod header;
mod request;
mod stream;

pub use codec::{encode_frame, Frame, FrameDecoder, DEFAULT_MAX_FRAME_LEN};
pub use compat::version_rejection;
pub use header::{flags, Header, MessageType, Status, FIRST_EXTENSION_TYPE, HEADER_LEN, MAGIC, PROTOCOL_VERSION};
pub use request::{encode_request_body, encode_request_prefix, request_prefix_len, RequestBody};
pub use stream::{Credit, CREDIT_LEN};
