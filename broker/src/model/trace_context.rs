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
            trace_id: trace.to_ascii_lowercase(),
            span_id: span.to_ascii_lowercase(),
            flags: flags.to_ascii_lowercase(),
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
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

fn new_span_id() -> String {
    let id = uuid::Uuid::new_v4().as_u128() as u64;
    format!("{:016x}", id.max(1))
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
