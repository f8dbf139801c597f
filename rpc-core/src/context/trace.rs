//! W3C trace context (`traceparent`) carried in call metadata.
//!
//! A call's [`TraceContext`] names its trace, its own span and the span of its caller. A
//! server continues the trace of an incoming `traceparent` with a span of its own; a call made
//! from inside a handler sends `traceparent` naming that span as its parent, so a trace follows
//! a request across every hop without the handler passing anything.
//!
//! Format (version 00): `00-{trace id: 32 hex}-{parent span id: 16 hex}-{flags: 2 hex}`; an
//! all-zero trace or span id is invalid.

use std::fmt;

/// The metadata key of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// Length of a version-00 `traceparent` value.
const TRACEPARENT_LEN: usize = 55;

/// Flag bit: the caller records this trace.
pub const SAMPLED: u8 = 0x01;

/// The trace position of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    parent_span_id: Option<u64>,
    flags: u8,
}

impl TraceContext {
    /// A new trace whose first span is this one (sampled).
    pub fn new_root() -> Self {
        Self {
            trace_id: nonzero_u128(),
            span_id: nonzero_u64(),
            parent_span_id: None,
            flags: SAMPLED,
        }
    }

    /// The position given by its parts (a span exporter's ids, see
    /// [`export`](super::export)); `None` when the trace or span id is zero (invalid).
    pub fn from_parts(trace_id: TraceId, span_id: SpanId, parent: Option<SpanId>, sampled: bool) -> Option<Self> {
        (trace_id.0 != 0 && span_id.0 != 0).then_some(Self {
            trace_id: trace_id.0,
            span_id: span_id.0,
            parent_span_id: parent.map(|p| p.0).filter(|&p| p != 0),
            flags: if sampled { SAMPLED } else { 0 },
        })
    }

    /// Parses a `traceparent` value; `None` when it is not a valid version-00 header.
    pub fn parse_traceparent(value: &str) -> Option<Self> {
        let b = value.trim().as_bytes();
        if b.len() != TRACEPARENT_LEN || &b[..3] != b"00-" || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let trace_id = parse_hex(&b[3..35]).filter(|&t| t != 0)?;
        let parent = parse_hex(&b[36..52]).filter(|&p| p != 0)?;
        let flags = parse_hex(&b[53..55])?;
        // The parsed span is the caller's; `child` makes the callee's own.
        Some(Self {
            trace_id,
            span_id: parent as u64,
            parent_span_id: None,
            flags: flags as u8,
        })
    }

    /// The context of a span that continues this one's trace as its child.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id: nonzero_u64(),
            parent_span_id: Some(self.span_id),
            flags: self.flags,
        }
    }

    /// The `traceparent` value that names this span as the parent of the call it goes on.
    pub fn to_traceparent(&self) -> String {
        self.traceparent_bytes().iter().map(|&b| char::from(b)).collect()
    }

    /// [`TraceContext::to_traceparent`] as bytes on the stack (every call sends one).
    pub(crate) fn traceparent_bytes(&self) -> [u8; TRACEPARENT_LEN] {
        let mut out = [b'-'; TRACEPARENT_LEN];
        out[..2].copy_from_slice(b"00");
        write_hex(&mut out[3..35], self.trace_id);
        write_hex(&mut out[36..52], u128::from(self.span_id));
        write_hex(&mut out[53..55], u128::from(self.flags));
        out
    }

    /// The trace id as 32 lowercase hex digits (what log lines carry).
    pub fn trace_id(&self) -> TraceId {
        TraceId(self.trace_id)
    }

    /// This span's id as 16 lowercase hex digits.
    pub fn span_id(&self) -> SpanId {
        SpanId(self.span_id)
    }

    /// The caller's span id, when the trace came from a caller.
    pub fn parent_span_id(&self) -> Option<SpanId> {
        self.parent_span_id.map(SpanId)
    }

    /// Records this position on `span`'s `trace_id`, `span_id` and `parent_span_id` fields (those
    /// it declares): the call spans of client and server, so every log line inside them names
    /// the trace, and the server's span names the caller's as its parent.
    pub(crate) fn record_on(&self, span: &tracing::Span) {
        if span.is_disabled() {
            return;
        }
        span.record("trace_id", tracing::field::display(self.trace_id()));
        span.record("span_id", tracing::field::display(self.span_id()));
        if let Some(parent) = self.parent_span_id() {
            span.record("parent_span_id", tracing::field::display(parent));
        }
    }

    /// Whether the caller records this trace.
    pub fn is_sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }
}

/// A trace id; displays as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub u128);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut digits = [0u8; 32];
        write_hex(&mut digits, self.0);
        f.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)
    }
}

/// A span id; displays as 16 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub u64);

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut digits = [0u8; 16];
        write_hex(&mut digits, u128::from(self.0));
        f.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)
    }
}

/// Writes the low `out.len()` hex digits of `value`, lowercase, most significant first.
fn write_hex(out: &mut [u8], mut value: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// Reads lowercase hex digits (at most 32); `None` on any other byte. Table-driven and
/// branch-free per digit: ids are random, so a digit-or-letter branch would mispredict half
/// the time (this runs for every request a server receives).
fn parse_hex(digits: &[u8]) -> Option<u128> {
    let mut value = 0u128;
    let mut invalid = 0u8;
    for &d in digits {
        let nibble = HEX_VALUE[usize::from(d)];
        invalid |= nibble;
        value = (value << 4) | u128::from(nibble & 0x0f);
    }
    (invalid & INVALID_HEX == 0).then_some(value)
}

/// Marks a byte that is not a lowercase hex digit in [`HEX_VALUE`].
const INVALID_HEX: u8 = 0x80;

/// The value of each byte as a lowercase hex digit, or [`INVALID_HEX`].
const HEX_VALUE: [u8; 256] = {
    let mut table = [INVALID_HEX; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

fn nonzero_u64() -> u64 {
    fastrand::u64(1..)
}

fn nonzero_u128() -> u128 {
    (u128::from(fastrand::u64(..)) << 64) | u128::from(nonzero_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_version_00() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceContext::parse_traceparent(header).unwrap();
        assert_eq!(t.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id().to_string(), "00f067aa0ba902b7");
        assert!(t.is_sampled());
        assert_eq!(t.to_traceparent(), header);
    }

    #[test]
    fn a_child_keeps_the_trace_and_names_its_parent() {
        let root = TraceContext::new_root();
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child.span_id(), root.span_id());
        assert_eq!(child.parent_span_id(), Some(root.span_id()));
        let back = TraceContext::parse_traceparent(&child.to_traceparent()).unwrap();
        assert_eq!(back.span_id(), child.span_id());
    }

    #[test]
    fn rejects_malformed_headers() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        ] {
            assert!(TraceContext::parse_traceparent(bad).is_none(), "{bad:?}");
        }
    }
}
