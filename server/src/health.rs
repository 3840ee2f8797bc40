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
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;

/// A probe's answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// `ok` (`/healthz`), `ready` or `not_ready` (`/readyz`).
    status: HealthStatus,
    /// Why it is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// A probe's verdict.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum HealthStatus {
    /// The process answers.
    Ok,
    /// It can work.
    Ready,
    /// It cannot work (yet): see `reason`.
    NotReady,
}

/// Liveness: the process answers
///
/// No token needed.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "health",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Health)),
    security(()),
)]
pub(crate) async fn alive() -> Response {
    let ok = Health {
        status: HealthStatus::Ok,
        reason: None,
    };
    (StatusCode::OK, Json(ok)).into_response()
}

/// A readiness verdict as an answer: 200, or 503 with the reason.
pub(crate) fn answer(verdict: Result<(), String>) -> Response {
    match verdict {
        Ok(()) => {
            let ready = Health {
                status: HealthStatus::Ready,
                reason: None,
            };
            (StatusCode::OK, Json(ready)).into_response()
        }
        Err(why) => {
            let not_ready = Health {
                status: HealthStatus::NotReady,
                reason: Some(why),
            };
            (StatusCode::SERVICE_UNAVAILABLE, Json(not_ready)).into_response()
        }
    }
}

/// Readiness: Redis answers
///
/// No token needed.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    responses(
        (status = 200, description = "`{\"status\": \"ready\"}`", body = Health),
        (status = 503, description = "`{\"status\": \"not_ready\", \"reason\"}`", body = Health),
    ),
    security(()),
)]
pub(crate) async fn server_ready(State(state): State<AppState>) -> Response {
    let verdict =
        match tokio::time::timeout(std::time::Duration::from_secs(2), state.broker.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("Redis did not answer PING within 2 s".to_string()),
        };
    answer(verdict)
}
