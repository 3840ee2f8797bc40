//! The JSON API under `/api`.

mod dead;
mod schedules;
mod stats;
mod tasks;

use axum::routing::{delete, get, post};
use axum::Router;

use crate::AppState;

pub(crate) use stats::totals as stats_totals;

/// Every API route (authentication is added by [`crate::router`]).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/tasks", post(tasks::create).get(tasks::list))
        .route("/api/tasks/{id}", get(tasks::get_one))
        .route("/api/tasks/{id}/cancel", post(tasks::cancel))
        .route("/api/stats", get(stats::stats))
        .route(
            "/api/schedules",
            get(schedules::list).post(schedules::create),
        )
        .route(
            "/api/schedules/{id}",
            get(schedules::get_one)
                .put(schedules::update)
                .delete(schedules::remove),
        )
        .route("/api/schedules/{id}/pause", post(schedules::pause))
        .route("/api/schedules/{id}/resume", post(schedules::resume))
        .route("/api/schedules/{id}/trigger", post(schedules::trigger))
        .route("/api/dead", get(dead::list))
        .route("/api/dead/replay", post(dead::replay_all))
        .route("/api/dead/{queue}/{id}", delete(dead::purge))
        .route("/api/dead/{queue}/{id}/replay", post(dead::replay))
}

/// A JSON body, with malformed bodies answered as JSON errors.
pub(crate) fn body<T>(
    b: Result<axum::Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, crate::ApiError> {
    b.map(|axum::Json(v)| v).map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            crate::ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("body too large: {}", e.body_text()),
            )
        } else {
            crate::ApiError::bad_request(format!("bad JSON body: {}", e.body_text()))
        }
    })
}

/// Query parameters, with malformed ones answered as JSON errors.
pub(crate) fn query<T>(
    q: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, crate::ApiError> {
    q.map(|axum::extract::Query(v)| v)
        .map_err(|e| crate::ApiError::bad_request(format!("bad query: {}", e.body_text())))
}
