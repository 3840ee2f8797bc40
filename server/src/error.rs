//! API errors: a status code and a JSON body `{"error": {"code", "message"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiq_broker::{BrokerError, DispatchError};
use kiq_scheduler::SchedulerError;

/// An error answered as JSON with a proper status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code, e.g. `not_found`, `bad_request`, `redis_unavailable`.
    pub code: &'static str,
    /// For people.
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404 with `message`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// An error with any status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        if let BrokerError::Invalid(m) = &e {
            return Self::bad_request(m.clone());
        }
        if e.is_out_of_memory() {
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "redis_out_of_memory",
                format!("Redis is out of memory (maxmemory reached) and refused the write: {e}"),
            );
        }
        // A route that needs Redis, on a broker without it (the in-memory one): found by the
        // API bodies' property test, it answered 500 `internal`.
        if let BrokerError::Unsupported(_) = &e {
            // Retrying cannot help: 501.
            return Self::new(StatusCode::NOT_IMPLEMENTED, "not_supported", e.to_string());
        }
        if e.is_unavailable() {
            Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "redis_unavailable",
                e.to_string(),
            )
        } else {
            Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        }
    }
}

impl From<DispatchError> for ApiError {
    fn from(e: DispatchError) -> Self {
        let message = e.to_string();
        match e {
            // The status of the underlying error, with the dispatch's message: it names the
            // task id, and says when the task may have been enqueued after all.
            DispatchError::Broker { error, .. } => {
                let mut api: ApiError = error.into();
                api.message = message;
                api
            }
            DispatchError::PayloadTooLarge { .. } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                e.to_string(),
            ),
            other => Self::bad_request(other.to_string()),
        }
    }
}

impl From<SchedulerError> for ApiError {
    fn from(e: SchedulerError) -> Self {
        match e {
            SchedulerError::Broker(b) => b.into(),
            SchedulerError::Dispatch(d) => d.into(),
            other => Self::bad_request(other.to_string()),
        }
    }
}

impl From<kiq_broker::CodecError> for ApiError {
    fn from(e: kiq_broker::CodecError) -> Self {
        Self::bad_request(e.to_string())
    }
}
