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

    /// Parses a `traceparent` value; `None` when it is not a valid version-00 header.
    pub fn parse_traceparent(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" || trace.len() != 32 || parent.len() != 16 || flags.len() != 2 {
            return None;
        }
        let lower_hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ![trace, parent, flags].iter().all(|s| lower_hex(s)) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|&t| t != 0)?;
        let parent = u64::from_str_radix(parent, 16).ok().filter(|&p| p != 0)?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        // The parsed span is the caller's; `continued` makes the callee's own.
        Some(Self {
            trace_id,
            span_id: parent,
            parent_span_id: None,
            flags,
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
        format!("00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, self.flags)
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
        write!(f, "{:032x}", self.0)
    }
}

/// A span id; displays as 16 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub u64);

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

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
