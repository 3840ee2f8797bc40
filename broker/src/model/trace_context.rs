//! W3C trace context (`traceparent`), carried in every message so that a task's execution
//! joins the trace of the code that dispatched it, across processes.
//!
//! A dispatch made inside a running task continues that task's trace; any other dispatch
//! starts a new trace, or continues one the caller names with [`scope`] (for example the
//! `traceparent` header of the HTTP request being served). Workers log the ids in the task's
//! span (`trace_id`, `span_id`, `parent_span_id`) and store the execution's `traceparent` in
//! the task record.

use std::future::Future;

/// A parsed `traceparent`: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, held as
/// numbers (a worker parses one and makes one for every task it runs: no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace id.
    pub trace_id: TraceId,
    /// The span id of the caller.
    pub span_id: SpanId,
    /// The trace flags (`1`: sampled).
    pub flags: u8,
}

/// A W3C id held as a number, shown as lowercase hex of its big-endian bytes.
macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident($int:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub $int);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut buf = [0u8; 2 * std::mem::size_of::<$int>()];
                hex::put(&mut buf, &self.0.to_be_bytes());
                f.write_str(hex::as_str(&buf))
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Display::fmt(self, f)
            }
        }
    };
}

hex_id!(
    /// A W3C trace id; shown as 32 lowercase hex digits.
    TraceId(u128)
);
hex_id!(
    /// A W3C span id; shown as 16 lowercase hex digits.
    SpanId(u64)
);

/// The length of a `traceparent` header.
pub const HEADER_LEN: usize = 55;

impl TraceParent {
    /// Parses a `traceparent` header value (hex digits in either case); `None` if it is
    /// malformed or all-zero.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.trim().as_bytes();
        // A version after 00 may append fields (`-…`); version 00 has exactly these four.
        let b = match b.len() {
            HEADER_LEN => b,
            n if n > HEADER_LEN && b[HEADER_LEN] == b'-' && !b.starts_with(b"00") => {
                &b[..HEADER_LEN]
            }
            _ => return None,
        };
        let f = decode_header(b, true)?;
        let trace_id = u128::from_be_bytes(f[1..17].try_into().ok()?);
        let span_id = u64::from_be_bytes(f[17..25].try_into().ok()?);
        if f[0] == 0xff || trace_id == 0 || span_id == 0 {
            return None;
        }
        Some(Self {
            trace_id: TraceId(trace_id),
            span_id: SpanId(span_id),
            flags: f[25],
        })
    }

    /// A new trace with a fresh root span.
    pub fn new_root() -> Self {
        Self {
            trace_id: TraceId(uuid::Uuid::new_v4().as_u128().max(1)),
            span_id: new_span_id(),
            flags: 1,
        }
    }

    /// A child span of this one, in the same trace.
    pub fn child(&self) -> Self {
        Self {
            span_id: new_span_id(),
            ..*self
        }
    }

    /// The header value (version `00`, lowercase hex).
    pub fn header(&self) -> String {
        let mut h = [0u8; HEADER_LEN];
        self.write_header(&mut h);
        hex::as_str(&h).to_owned()
    }

    /// Writes the header value into `out`.
    pub fn write_header(&self, out: &mut [u8; HEADER_LEN]) {
        let mut f = [0u8; PACKED_LEN];
        f[1..17].copy_from_slice(&self.trace_id.0.to_be_bytes());
        f[17..25].copy_from_slice(&self.span_id.0.to_be_bytes());
        f[25] = self.flags;
        *out = encode_header(&f);
    }
}

/// A `traceparent`'s four fields as bytes: version, trace id (16), span id (8), flags.
pub(crate) const PACKED_LEN: usize = 26;

/// The four fields of a header of exactly [`HEADER_LEN`] bytes, read as hex (either case if
/// `any_case`, else lowercase only); `None` if its shape or a digit is wrong.
pub(crate) fn decode_header(b: &[u8], any_case: bool) -> Option<[u8; PACKED_LEN]> {
    if b.len() != HEADER_LEN || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let mut out = [0u8; PACKED_LEN];
    hex::get(&b[0..2], &mut out[0..1], any_case)?;
    hex::get(&b[3..35], &mut out[1..17], any_case)?;
    hex::get(&b[36..52], &mut out[17..25], any_case)?;
    hex::get(&b[53..55], &mut out[25..26], any_case)?;
    Some(out)
}

/// The header of four fields, in lowercase hex.
pub(crate) fn encode_header(f: &[u8; PACKED_LEN]) -> [u8; HEADER_LEN] {
    let mut out = [b'-'; HEADER_LEN];
    hex::put(&mut out[0..2], &f[0..1]);
    hex::put(&mut out[3..35], &f[1..17]);
    hex::put(&mut out[36..52], &f[17..25]);
    hex::put(&mut out[53..55], &f[25..26]);
    out
}

fn new_span_id() -> SpanId {
    SpanId((uuid::Uuid::new_v4().as_u128() as u64).max(1))
}

/// Lowercase hex in fixed shapes. Hand-written: a few lines for fixed-size ids, on a path run
/// for every task, do not warrant a crate.
pub(crate) mod hex {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";

    /// Writes `bytes` as lowercase hex into `out` (twice as long).
    pub(crate) fn put(out: &mut [u8], bytes: &[u8]) {
        for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0x0f)];
        }
    }

    /// Reads hex digits into `out` (half as long); `None` on any other character, or on an
    /// uppercase one unless `any_case`.
    pub(crate) fn get(digits: &[u8], out: &mut [u8], any_case: bool) -> Option<()> {
        if digits.len() != out.len() * 2 {
            return None;
        }
        let table = if any_case { &ANY_CASE } else { &LOWER };
        // Every digit is looked up and the bad ones found at the end, in one test: no branch
        // per digit (this reads two traces per task).
        let mut bad = 0u8;
        for (pair, o) in digits.chunks_exact(2).zip(out.iter_mut()) {
            let (hi, lo) = (table[usize::from(pair[0])], table[usize::from(pair[1])]);
            bad |= hi | lo;
            *o = (hi << 4) | (lo & 0x0f);
        }
        (bad & INVALID == 0).then_some(())
    }

    /// Marks a byte that is not a digit in the tables below.
    const INVALID: u8 = 0x80;
    const LOWER: [u8; 256] = table(false);
    const ANY_CASE: [u8; 256] = table(true);

    const fn table(any_case: bool) -> [u8; 256] {
        let mut t = [INVALID; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            if any_case {
                t[b'A' as usize + i] = 10 + i as u8;
            }
            i += 1;
        }
        t
    }

    /// `buf` (ASCII written by [`put`] and literal dashes) as text.
    pub(crate) fn as_str(buf: &[u8]) -> &str {
        std::str::from_utf8(buf).unwrap_or_default()
    }
}

tokio::task_local! {
    static CURRENT: TraceParent;
}

/// The trace context of the current task or [`scope`], if any.
pub fn current() -> Option<TraceParent> {
    CURRENT.try_with(|t| *t).ok()
}

/// Runs `fut` with `parent` as the trace context that dispatches inside it continue.
pub async fn scope<F: Future>(parent: TraceParent, fut: F) -> F::Output {
    CURRENT.scope(parent, fut).await
}

/// The `traceparent` a new dispatch carries: a child of the current context, or a new root.
pub fn for_dispatch() -> String {
    CURRENT
        .try_with(TraceParent::child)
        .unwrap_or_else(|_| TraceParent::new_root())
        .header()
}

/// A dispatch's producer span (with the `otel` feature and an OpenTelemetry layer installed):
/// opened when its message is made, ended once the backend has the message. Without the
/// feature it is empty and costs nothing.
#[derive(Debug, Clone, Default)]
pub struct ProducerSpan {
    #[cfg(feature = "otel")]
    span: Option<tracing::Span>,
}

impl ProducerSpan {
    /// Opens the producer span of `envelope`'s dispatch and makes the message carry its
    /// context as `traceparent`. Its parent is the innermost OpenTelemetry span of the caller
    /// (an HTTP request's, a running task's) or, failing that, the context of [`scope`].
    pub(crate) fn open(envelope: &mut crate::model::envelope::Envelope) -> Self {
        #[cfg(feature = "otel")]
        {
            if let Some((span, header)) = otel::producer(envelope) {
                envelope.trace = Some(header);
                return Self { span: Some(span) };
            }
        }
        let _ = envelope;
        Self::default()
    }

    /// Ends the span, marked as failed if the message could not be sent.
    pub(crate) fn finish(self, error: Option<&dyn std::fmt::Display>) {
        #[cfg(feature = "otel")]
        if let (Some(span), Some(e)) = (self.span, error) {
            span.record("otel.status_code", "error");
            span.record("otel.status_description", tracing::field::display(e));
        }
        #[cfg(not(feature = "otel"))]
        let _ = (self, error);
    }
}

/// The OpenTelemetry side, through `tracing-opentelemetry`: kiq's spans are `tracing` spans
/// carrying the `otel.*` fields that layer maps, and the messaging semantic conventions'
/// attributes (`messaging.system` is `kiq`).
#[cfg(feature = "otel")]
pub mod otel {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::TraceParent;
    use crate::model::envelope::Envelope;

    /// The OpenTelemetry context of a remote parent named by a `traceparent`.
    pub fn remote_context(parent: &TraceParent) -> Option<opentelemetry::Context> {
        let sc = SpanContext::new(
            TraceId::from_bytes(parent.trace_id.0.to_be_bytes()),
            SpanId::from_bytes(parent.span_id.0.to_be_bytes()),
            TraceFlags::new(parent.flags),
            true,
            TraceState::default(),
        );
        Some(opentelemetry::Context::new().with_remote_span_context(sc))
    }

    /// The `traceparent` of `span`, if an OpenTelemetry layer gave it a valid context.
    pub fn traceparent_of(span: &tracing::Span) -> Option<TraceParent> {
        if span.is_disabled() {
            return None;
        }
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| TraceParent {
            trace_id: super::TraceId(u128::from_be_bytes(sc.trace_id().to_bytes())),
            span_id: super::SpanId(u64::from_be_bytes(sc.span_id().to_bytes())),
            flags: sc.trace_flags().to_u8(),
        })
    }

    /// Whether the caller is inside a span with a valid OpenTelemetry context.
    fn in_otel_span() -> bool {
        let current = tracing::Span::current();
        !current.is_disabled() && current.context().span().span_context().is_valid()
    }

    /// Opens the producer span of a dispatch; `None` when no OpenTelemetry layer records it.
    pub(super) fn producer(envelope: &Envelope) -> Option<(tracing::Span, String)> {
        let span = tracing::info_span!(
            target: "kiq::dispatch",
            "send",
            otel.name = format!("send {}", envelope.queue),
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
            messaging.system = "kiq",
            messaging.operation.type = "send",
            messaging.operation.name = "send",
            messaging.destination.name = %envelope.queue,
            messaging.message.id = %envelope.id,
            kiq.task.name = %envelope.task,
            kiq.task.priority = ?envelope.priority,
        );
        if span.is_disabled() {
            return None;
        }
        if !in_otel_span() {
            if let Some(cx) = super::current().as_ref().and_then(remote_context) {
                let _ = span.set_parent(cx);
            }
        }
        let header = traceparent_of(&span)?.header();
        Some((span, header))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let p =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(p.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(p.flags, 1);
        assert_eq!(p.child().trace_id, p.trace_id);
        assert_ne!(p.child().span_id, p.span_id);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-xyz-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
        let root = TraceParent::new_root();
        assert_eq!(TraceParent::parse(&root.header()), Some(root));
        let upper =
            TraceParent::parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01").unwrap();
        assert_eq!(
            upper.header(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(upper.child().span_id.to_string().len(), 16);
        // A later version may carry more fields; version 00 may not.
        let later = TraceParent::parse(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next",
        )
        .unwrap();
        assert_eq!(later.trace_id, p.trace_id);
        assert!(
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more")
                .is_none()
        );
        assert_eq!(
            TraceParent::parse("  00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00 ")
                .map(|p| p.flags),
            Some(0)
        );
    }

    #[tokio::test]
    async fn dispatches_inside_a_scope_continue_its_trace() {
        let parent = TraceParent::new_root();
        let inner = scope(parent, async { for_dispatch() }).await;
        assert_eq!(
            TraceParent::parse(&inner).unwrap().trace_id,
            parent.trace_id
        );
        let outside = TraceParent::parse(&for_dispatch()).unwrap();
        assert_ne!(outside.trace_id, parent.trace_id);
    }
}
