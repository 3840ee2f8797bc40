//! kiq's HTTP server: a JSON API over the broker, a web dashboard, and Prometheus metrics.
//!
//! `taskctl serve` runs [`router`] behind a bearer token. Every route under `/api` and
//! `/metrics` needs `Authorization: Bearer <token>` (compared in constant time); errors are
//! JSON (`{"error": {"code", "message"}}`) with proper status codes; `/api/openapi.json`
//! describes every route, generated from the handlers and registered with them (see
//! `routes`). `/` serves the dashboard, a static page that asks for the token and then calls
//! the API. `/healthz` and `/readyz` (Redis answers) are for probes and need no
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
#[cfg(feature = "otel")]
mod trace;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::Router;
use kiq_broker::{Broker, Inspector};
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

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
    /// The OpenAPI document, serialized (`GET /api/openapi.json`).
    pub(crate) openapi: Bytes,
}

/// Every route the server serves, public ones (no token) and protected ones, each registered
/// with its documentation.
///
/// utoipa-axum's `routes!` takes a handler's path and method from its `#[utoipa::path]`
/// annotation and adds both the handler to the router and the operation to the OpenAPI
/// document, so the two come from this one list and cannot differ. Each `routes!` names the
/// handlers of one path only (it mounts them all on every path they name). Add a route here,
/// never with `Router::route`: `tests/router.rs` checks that every route served is documented
/// and every documented one served.
fn routes() -> (OpenApiRouter<AppState>, OpenApiRouter<AppState>) {
    use api::{dead, queues, schedules, stats, tasks};
    // Another method on a public route is a plain 405; protected routes answer theirs behind
    // the token (see `router`).
    let public = OpenApiRouter::default()
        .routes(routes!(dashboard::page).map(|r| r.fallback(method_not_allowed)))
        .routes(routes!(health::alive).map(|r| r.fallback(method_not_allowed)))
        .routes(routes!(health::server_ready).map(|r| r.fallback(method_not_allowed)));
    let protected = OpenApiRouter::default()
        .routes(routes!(tasks::create, tasks::list))
        .routes(routes!(tasks::get_one))
        .routes(routes!(tasks::cancel))
        .routes(routes!(stats::stats))
        .routes(routes!(stats::history))
        .routes(routes!(stats::task_totals))
        .routes(routes!(queues::pause))
        .routes(routes!(queues::resume))
        .routes(routes!(queues::purge))
        .routes(routes!(queues::drain))
        .routes(routes!(queues::cancel_waiting))
        .routes(routes!(queues::quiet))
        .routes(routes!(schedules::list, schedules::create))
        .routes(routes!(
            schedules::get_one,
            schedules::update,
            schedules::remove
        ))
        .routes(routes!(schedules::pause))
        .routes(routes!(schedules::resume))
        .routes(routes!(schedules::trigger))
        .routes(routes!(dead::list))
        .routes(routes!(dead::replay_all))
        .routes(routes!(dead::purge_all))
        .routes(routes!(dead::purge))
        .routes(routes!(dead::replay))
        .routes(routes!(openapi::document))
        .routes(routes!(metrics::server_metrics));
    (public, protected)
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// The whole server: API, metrics, OpenAPI document and dashboard.
pub fn router(broker: Broker, config: ServerConfig) -> Result<Router, ApiError> {
    if config.token.trim().len() < 8 {
        return Err(ApiError::bad_request(
            "the API token must be at least 8 characters",
        ));
    }
    let (public, protected) = routes();
    let (public, public_doc) = public.split_for_parts();
    let (protected, protected_doc) = protected.split_for_parts();
    let state = AppState {
        inspector: broker.inspector(),
        broker,
        token: config.token.trim().into(),
        tasks: Arc::new(config.tasks),
        openapi: openapi::document_of([public_doc, protected_doc]),
    };
    // Everything but the dashboard page and the probes needs the token, unknown paths and
    // methods included: without it, a 404 or 405 would tell a stranger which routes exist.
    // Probes carry no token; they learn only "up" and "can work".
    let protected = protected
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    let router = Router::new().merge(public).merge(protected);
    // A server span per request, continuing the caller's `traceparent` (OpenTelemetry).
    #[cfg(feature = "otel")]
    let router = router.layer(axum::middleware::from_fn(trace::http_span));
    Ok(router.with_state(state))
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
