//! kiq's HTTP server: a JSON API over the broker, a web dashboard, and Prometheus metrics.
//!
//! `taskctl serve` runs [`router`] behind a bearer token. Every route under `/api` and
//! `/metrics` needs `Authorization: Bearer <token>` (compared in constant time); errors are
//! JSON (`{"error": {"code", "message"}}`) with proper status codes; `/api/openapi.json`
//! describes the API. `/` serves the dashboard, a static page that asks for the token and
//! then calls the API. `/healthz` and `/readyz` (Redis answers) are for probes and need no
//! token; every other path, unknown ones included, answers 401 without it.
//!
//! - [`api`]: tasks (create by name, get, list by state, cancel), stats, schedules (CRUD,
//!   pause, resume, trigger), dead letters (list, replay, purge).
//! - [`metrics`]: the server's `/metrics` (queues, workers, scheduler) and a bare
//!   `/metrics` server for worker processes.
#![warn(missing_docs)]

pub mod api;
mod auth;
mod dashboard;
pub mod error;
mod health;
pub mod metrics;
mod openapi;

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use kiq_broker::{Broker, Inspector};
use tokio_util::sync::CancellationToken;

pub use error::ApiError;

/// What the server needs besides the broker.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The bearer token every API and metrics request must carry.
    pub token: String,
    /// The tasks this server's binary links (name → default queue, the queue a task created
    /// by name goes to). Creating a task checks its name against the names live workers
    /// advertise; when none advertises any, against these (when there are any). An unknown
    /// name is refused with 404 unless the request says `"force": true`.
    pub tasks: HashMap<String, String>,
}

impl ServerConfig {
    /// A server that requires `token` (at least 8 characters) on every API and metrics request,
    /// and links no tasks (see [`ServerConfig::tasks`](field@ServerConfig::tasks)).
    pub fn new(token: impl Into<String>) -> Self {
        ServerConfig {
            token: token.into(),
            tasks: HashMap::new(),
        }
    }

    /// The tasks this server links (name → default queue); see
    /// [`ServerConfig::tasks`](field@ServerConfig::tasks).
    pub fn tasks(mut self, tasks: HashMap<String, String>) -> Self {
        self.tasks = tasks;
        self
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub(crate) broker: Broker,
    pub(crate) inspector: Inspector,
    pub(crate) token: Arc<str>,
    pub(crate) tasks: Arc<HashMap<String, String>>,
}

/// The whole server: API, metrics, OpenAPI document and dashboard.
pub fn router(broker: Broker, config: ServerConfig) -> Result<Router, ApiError> {
    if config.token.trim().len() < 8 {
        return Err(ApiError::bad_request(
            "the API token must be at least 8 characters",
        ));
    }
    let state = AppState {
        inspector: broker.inspector(),
        broker,
        token: config.token.trim().into(),
        tasks: Arc::new(config.tasks),
    };
    let method_not_allowed = || async {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not take that method",
        )
    };
    // Everything but the dashboard page needs the token, unknown paths and methods included:
    // without it, a 404 or 405 would tell a stranger which routes exist.
    let protected = api::routes()
        .route("/api/openapi.json", get(openapi::document))
        .route("/metrics", get(metrics::server_metrics))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Ok(Router::new()
        .route("/", get(dashboard::page).fallback(method_not_allowed))
        // Probes carry no token; they learn only "up" and "can work".
        .route("/healthz", get(health::alive).fallback(method_not_allowed))
        .route(
            "/readyz",
            get(health::server_ready).fallback(method_not_allowed),
        )
        .merge(protected)
        .with_state(state))
}

/// Serves `router` on `listener` until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
