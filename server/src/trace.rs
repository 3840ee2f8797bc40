//! OpenTelemetry (the `otel` feature): a server span per API request that continues the
//! caller's W3C `traceparent`, so what the request dispatches joins the caller's trace.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use kiq_broker::trace_context::{otel::remote_context, TraceParent};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Runs the request inside an `HTTP <method> <route>` server span (HTTP semantic
/// conventions: `http.request.method`, `http.route`, `url.path`,
/// `http.response.status_code`; an error status on a 5xx).
pub(crate) async fn http_span(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    // Probes, scrapes and the page itself, every few seconds: a trace each would drown the
    // ones that matter.
    if matches!(
        route.as_deref(),
        Some("/healthz" | "/readyz" | "/metrics" | "/" | "/api/openapi.json")
    ) {
        return next.run(req).await;
    }
    let method = req.method().as_str().to_owned();
    let span = tracing::info_span!(
        target: "kiq::server",
        "request",
        otel.name = format!("{method} {}", route.as_deref().unwrap_or("")).trim_end(),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = route.as_deref().unwrap_or(""),
        url.path = req.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    let parent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse);
    if let Some(cx) = parent.as_ref().and_then(remote_context) {
        let _ = span.set_parent(cx);
    }
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    response
}
