//! API errors: a status code and a JSON body `{"error": {"code", "message"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiq_broker::{BrokerError, DispatchError};
use kiq_scheduler::SchedulerError;
use serde::Serialize;
use utoipa::{IntoResponses, ToSchema};

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

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// A stable machine-readable code, e.g. `not_found`, `bad_request`, `unauthorized`,
    /// `redis_unavailable`.
    code: &'static str,
    /// For people.
    message: String,
}

/// The bearer token is missing or wrong: every route but the dashboard page and the probes can
/// answer it, and their documentation lists it.
#[derive(IntoResponses)]
#[response(
    status = 401,
    description = "missing or wrong bearer token (`WWW-Authenticate: Bearer`)"
)]
#[allow(dead_code)] // Only its documentation is used: `auth::require_token` answers the 401.
pub(crate) struct Unauthorized(ErrorBody);

/// Redis is unavailable, or out of memory for a write.
#[derive(IntoResponses)]
#[response(
    status = 503,
    description = "Redis unavailable, or out of memory for a write (on the in-memory broker, \
        a route that needs Redis itself answers 501 `not_supported`)"
)]
#[allow(dead_code)] // Only its documentation is used: `From<BrokerError>` makes the 503.
pub(crate) struct Unavailable(ErrorBody);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
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
