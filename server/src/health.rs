//! Health endpoints for orchestrators (Kubernetes probes, load balancers), without a token:
//! they tell whether the process is up and whether it can work, nothing else.
//!
//! - `GET /healthz`: 200 while the process answers (liveness).
//! - `GET /readyz`: 200 when it can do its job (readiness), else 503 with the reason. For
//!   `taskctl serve`: Redis answers. For a worker (on its `--metrics-port` listener): Redis
//!   answers, its consumer is registered (its heartbeat is in Redis), and it is not draining.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::AppState;

/// `GET /healthz`.
pub(crate) async fn alive() -> Response {
    (StatusCode::OK, Json(json!({ "status": "ok" }))).into_response()
}

/// A readiness verdict as an answer: 200, or 503 with the reason.
pub(crate) fn answer(verdict: Result<(), String>) -> Response {
    match verdict {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "reason": why })),
        )
            .into_response(),
    }
}

/// `GET /readyz` of `taskctl serve`: Redis answers.
pub(crate) async fn server_ready(State(state): State<AppState>) -> Response {
    let verdict =
        match tokio::time::timeout(std::time::Duration::from_secs(2), state.broker.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("Redis did not answer PING within 2 s".to_string()),
        };
    answer(verdict)
}
