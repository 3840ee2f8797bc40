//! The JSON API under `/api`: its handlers, which [`crate::routes`] registers with their
//! documentation.

pub(crate) mod dead;
pub(crate) mod queues;
pub(crate) mod schedules;
pub(crate) mod stats;
pub(crate) mod tasks;

pub(crate) use stats::totals as stats_totals;

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
