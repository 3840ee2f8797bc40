//! W3C trace context (`traceparent`), carried in every message so that a task's execution
//! joins the trace of the code that dispatched it, across processes.
//!
//! A dispatch made inside a running task continues that task's trace; any other dispatch
//! starts a new trace, or continues one the caller names with [`scope`] (for example the
//! `traceparent` header of the HTTP request being served). Workers log the ids in the task's
//! span (`trace_id`, `span_id`, `parent_span_id`) and store the execution's `traceparent` in
//! the task record.

use std::future::Future;

/// A parsed `traceparent`: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id (32 lowercase hex).
    pub trace_id: String,
    /// The span id of the caller (16 lowercase hex).
    pub span_id: String,
    /// The trace flags (`01`: sampled).
    pub flags: String,
}

impl TraceParent {
    /// Parses a `traceparent` header value; `None` if it is malformed or all-zero.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |x: &str, n: usize| x.len() == n && x.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(version, 2)
            || version == "ff"
            || !hex(trace, 32)
            || !hex(span, 16)
            || !hex(flags, 2)
        {
            return None;
        }
        if trace.bytes().all(|b| b == b'0') || span.bytes().all(|b| b == b'0') {
            return None;
        }
        Some(Self {
            trace_id: lowercase(trace),
            span_id: lowercase(span),
            flags: lowercase(flags),
        })
    }

    /// A new trace with a fresh root span.
    pub fn new_root() -> Self {
        let id = uuid::Uuid::new_v4().as_u128();
        Self {
            trace_id: format!("{id:032x}"),
            span_id: new_span_id(),
            flags: "01".into(),
        }
    }

    /// A child span of this one, in the same trace.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id.clone(),
            span_id: new_span_id(),
            flags: self.flags.clone(),
        }
    }

    /// The header value.
    pub fn header(&self) -> String {
        // Built in one allocation: this runs for every task a worker runs.
        let mut h =
            String::with_capacity(6 + self.trace_id.len() + self.span_id.len() + self.flags.len());
        for part in ["00-", &self.trace_id, "-", &self.span_id, "-", &self.flags] {
            h.push_str(part);
        }
        h
    }
}

/// `s` in lowercase, copied as it is when it already is (as kiq writes it).
fn lowercase(s: &str) -> String {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        s.to_ascii_lowercase()
    } else {
        s.to_owned()
    }
}

fn new_span_id() -> String {
    use std::fmt::Write as _;
    let id = uuid::Uuid::new_v4().as_u128() as u64;
    let mut s = String::with_capacity(16);
    // Writing to a String cannot fail.
    let _ = write!(s, "{:016x}", id.max(1));
    s
}

tokio::task_local! {
    static CURRENT: TraceParent;
}

/// The trace context of the current task or [`scope`], if any.
pub fn current() -> Option<TraceParent> {
    CURRENT.try_with(|t| t.clone()).ok()
}

/// Runs `fut` with `parent` as the trace context that dispatches inside it continue.
pub async fn scope<F: Future>(parent: TraceParent, fut: F) -> F::Output {
    CURRENT.scope(parent, fut).await
}

/// The `traceparent` a new dispatch carries: a child of the current context, or a new root.
pub fn for_dispatch() -> String {
    let span = new_span_id();
    match CURRENT.try_with(|p| format!("00-{}-{span}-{}", p.trace_id, p.flags)) {
        Ok(header) => header,
        // A new trace: one format, no intermediate strings (this runs once per dispatch).
        Err(_) => format!("00-{:032x}-{span}-01", uuid::Uuid::new_v4().as_u128()),
    }
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
        let trace_id = TraceId::from_hex(&parent.trace_id).ok()?;
        let span_id = SpanId::from_hex(&parent.span_id).ok()?;
        let flags = u8::from_str_radix(&parent.flags, 16).ok()?;
        let sc = SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::new(flags),
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
            trace_id: sc.trace_id().to_string(),
            span_id: sc.span_id().to_string(),
            flags: format!("{:02x}", sc.trace_flags().to_u8()),
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
        assert_eq!(p.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.child().trace_id, p.trace_id);
        assert_ne!(p.child().span_id, p.span_id);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-xyz-00f067aa0ba902b7-01",
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
        assert_eq!(upper.child().span_id.len(), 16);
    }

    #[tokio::test]
    async fn dispatches_inside_a_scope_continue_its_trace() {
        let parent = TraceParent::new_root();
        let inner = scope(parent.clone(), async { for_dispatch() }).await;
        assert_eq!(
            TraceParent::parse(&inner).unwrap().trace_id,
            parent.trace_id
        );
        let outside = TraceParent::parse(&for_dispatch()).unwrap();
        assert_ne!(outside.trace_id, parent.trace_id);
    }
}
