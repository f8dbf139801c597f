//! The wire protocol: length-delimited frames with a fixed big-endian header.
//!
//! # Byte layout
//!
//! Every frame is a 22-byte header followed by `body_len` bytes of body. All integers are
//! big-endian.
//!
//! | offset | size | field          | meaning                                                      |
//! |-------:|-----:|----------------|--------------------------------------------------------------|
//! | 0      | 2    | magic          | always `0x52 0x50` (`"RP"`)                                  |
//! | 2      | 1    | version        | protocol version, currently `1`                              |
//! | 3      | 1    | message type   | see [`MessageType`]: request, response, ping, pong           |
//! | 4      | 1    | serializer id  | see [`SerializerKind`](crate::SerializerKind) (0 where none) |
//! | 5      | 1    | status         | see [`Status`]; `0` (ok) on requests, pings and pongs         |
//! | 6      | 8    | request id     | chosen by the caller, echoed by the answer                  |
//! | 14     | 4    | timeout ms     | requests: the caller's remaining budget, `0` = none         |
//! | 18     | 4    | body length    | bytes of body that follow, at most the configured maximum   |
//!
//! ## Bodies
//!
//! * **Request**: the routing prefix, then the arguments encoded with the frame's serializer
//!   as one tuple (`()` for none, `(a,)` for one, `(a, b, ..)` for several):
//!
//!   | size | field                          |
//!   |-----:|--------------------------------|
//!   | 2    | service key length `s`         |
//!   | s    | service key, UTF-8 (`name:version`) |
//!   | 2    | method name length `m`         |
//!   | m    | method name, UTF-8             |
//!   | rest | encoded arguments              |
//!
//! * **Response** with status [`Status::Ok`]: the encoded return value; with
//!   [`Status::ApplicationError`]: the encoded error value of a method returning
//!   `Result<T, E>`; with any other status: a UTF-8 message for humans.
//! * **Ping** and **Pong**: empty; a pong echoes the ping's request id.
//!
//! The routing prefix is binary and independent of the serializer so the server can find the
//! handler, and answer "service not found" in a useful way, without decoding the arguments.
//!
//! # Decoding
//!
//! [`FrameDecoder`] works on a growable buffer fed by socket reads: it returns a frame once
//! all of it has arrived (partial reads), several frames from one read (coalesced reads), and
//! rejects a wrong magic, an unknown version or type, or a body over the maximum *before* it
//! reserves any memory for the body.

mod codec;
mod header;
mod request;

pub use codec::{encode_frame, Frame, FrameDecoder, DEFAULT_MAX_FRAME_LEN};
pub use header::{Header, MessageType, Status, HEADER_LEN, MAGIC, PROTOCOL_VERSION};
pub use request::{encode_request_body, RequestBody};
