//! The OpenAPI 3.1 document of the API, served at `/api/openapi.json`.
//!
//! Nothing in it is written by hand: [`crate::routes`] registers every route with utoipa-axum's
//! `routes!`, which takes the route's path and method from its handler's `#[utoipa::path]` and
//! adds that operation (parameters, request body, responses, security) to the document, with the
//! schemas of the types the handler reads and answers (`ToSchema`, derived on them, kiq-broker's
//! and kiq-scheduler's included). [`ApiDoc`] adds what belongs to no route: the title, the bearer
//! scheme and the tags. A route cannot be served without being documented; `tests/router.rs`
//! checks both ways, and that no success answer is an untyped object.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::Value;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::error::{ErrorBody, Unauthorized};
use crate::AppState;

/// The document's parts that are no route's.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "kiq",
        description = "Operate kiq: tasks, queues, workers, schedules and dead letters. Every \
            route but the dashboard page (`/`) and the probes (`/healthz`, `/readyz`) needs \
            `Authorization: Bearer <token>`. Errors are `{\"error\": {\"code\", \"message\"}}`."
    ),
    modifiers(&BearerScheme),
    components(schemas(ErrorBody)),
    tags(
        (name = "tasks", description = "Create a task by name, read it, list tasks by state, cancel one"),
        (name = "stats", description = "Queues, workers, the active scheduler, cumulative counters, history"),
        (name = "queues", description = "Queue control: pause, resume, purge, drain; quiet a worker"),
        (name = "schedules", description = "Schedules: create, read, replace, delete, pause, resume, trigger"),
        (name = "dead letters", description = "Dead letters: list, replay, purge"),
        (name = "metrics", description = "Prometheus metrics"),
        (name = "health", description = "Probes for orchestrators (no token)"),
        (name = "dashboard", description = "The web dashboard (no token)"),
        (name = "openapi", description = "This document"),
    ),
)]
pub(crate) struct ApiDoc;

/// The `bearer` security scheme the operations name.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
    }
}

/// The whole document, as served: [`ApiDoc`] with the operations of `routes` (the router's).
pub(crate) fn document_of(routes: impl IntoIterator<Item = utoipa::openapi::OpenApi>) -> Bytes {
    let mut doc = ApiDoc::openapi();
    for r in routes {
        doc.merge(r);
    }
    // Plain data: serializing it cannot fail.
    Bytes::from(doc.to_json().expect("the OpenAPI document serializes"))
}

/// An OpenAPI 3.1 document (<https://spec.openapis.org/oas/v3.1.0>).
#[derive(ToSchema)]
#[allow(dead_code)] // Only its schema is used: the document is utoipa's `OpenApi`.
pub(crate) struct OpenApiDocument {
    /// The OpenAPI version: `3.1.0`.
    openapi: String,
    /// The API's title, version and description.
    #[schema(value_type = Object)]
    info: Value,
    /// Every route: path, then method, then the operation.
    #[schema(value_type = Object)]
    paths: Value,
    /// The schemas and the security schemes the operations refer to.
    #[schema(value_type = Object)]
    components: Value,
}

/// This document
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "get_openapi",
    tag = "openapi",
    responses(
        (status = 200, description = "the OpenAPI document", body = OpenApiDocument),
        Unauthorized,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn document(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.clone(),
    )
}
