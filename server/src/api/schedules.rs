//! `/api/schedules`: create, read, update, delete, pause, resume, trigger.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use kiq_scheduler::{ScheduleDef, ScheduleStatus, Schedules};
use serde::Serialize;
use utoipa::ToSchema;

use super::body;
use crate::error::{ErrorBody, Unauthorized, Unavailable};
use crate::{ApiError, AppState};

/// A schedule with its status.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ScheduleView {
    /// The definition, as stored.
    schedule: ScheduleDef,
    /// What the active scheduler did with it.
    status: ScheduleStatus,
    /// Its next tick from now, ms since the epoch (`null` when it has none).
    next_fire_ms: Option<i64>,
}

/// `GET /api/schedules`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ScheduleList {
    /// Every schedule.
    schedules: Vec<ScheduleView>,
}

/// A schedule fired on request.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Triggered {
    /// The schedule id.
    schedule: String,
    /// The task it dispatched.
    task_id: String,
}

async fn view(store: &Schedules, def: ScheduleDef) -> Result<ScheduleView, ApiError> {
    let status = store.status(&def.id).await?;
    let next = def
        .validate()
        .ok()
        .and_then(|e| e.next_after(chrono::Utc::now()))
        .map(|t| t.timestamp_millis());
    Ok(ScheduleView {
        schedule: def,
        status,
        next_fire_ms: next,
    })
}

fn missing(id: &str) -> ApiError {
    ApiError::not_found(format!("no schedule {id:?}"))
}

/// A schedule for a task this server does not know is refused, as a dispatch of it is (a
/// server that knows no tasks cannot tell, and does not check).
fn check_task(state: &AppState, def: &ScheduleDef) -> Result<(), ApiError> {
    // A definition that is wrong in itself says so first.
    def.validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if state.tasks.is_empty() || state.tasks.contains_key(&def.task) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_task",
        format!("no task named {:?} is known to this server", def.task),
    ))
}

/// List schedules with their status
#[utoipa::path(
    get,
    path = "/api/schedules",
    operation_id = "list_schedules",
    tag = "schedules",
    responses(
        (status = 200, description = "every schedule", body = ScheduleList),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<ScheduleList>, ApiError> {
    let store = Schedules::new(&state.broker);
    let mut schedules = Vec::new();
    for def in store.list().await? {
        schedules.push(view(&store, def).await?);
    }
    Ok(Json(ScheduleList { schedules }))
}

/// Create a schedule
///
/// `created_at_ms` is set by the server (a value sent is ignored). A schedule for a task this
/// server does not know is refused with 404 `unknown_task` (a server that links no tasks does
/// not check).
#[utoipa::path(
    post,
    path = "/api/schedules",
    operation_id = "create_schedule",
    tag = "schedules",
    request_body = ScheduleDef,
    responses(
        (status = 201, description = "created", body = ScheduleView),
        (status = 400, description = "an invalid schedule", body = ErrorBody),
        (status = 404, description = "unknown task", body = ErrorBody),
        (status = 409, description = "a schedule with that id exists (PUT replaces it)", body = ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    b: Result<Json<ScheduleDef>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let def = body(b)?;
    check_task(&state, &def)?;
    let store = Schedules::new(&state.broker);
    if store.get(&def.id).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "schedule {:?} exists; PUT /api/schedules/{} replaces it",
                def.id, def.id
            ),
        ));
    }
    store.put(def.clone()).await?;
    // As stored (the store sets some fields, such as the creation time).
    let def = store.get(&def.id).await?.ok_or_else(|| missing(&def.id))?;
    Ok((StatusCode::CREATED, Json(view(&store, def).await?)))
}

/// Get a schedule
#[utoipa::path(
    get,
    path = "/api/schedules/{id}",
    operation_id = "get_schedule",
    tag = "schedules",
    params(("id" = String, Path, description = "the schedule id")),
    responses(
        (status = 200, description = "the schedule", body = ScheduleView),
        (status = 404, description = "no such schedule", body = ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    let store = Schedules::new(&state.broker);
    let def = store.get(&id).await?.ok_or_else(|| missing(&id))?;
    Ok(Json(view(&store, def).await?))
}

/// Create or replace a schedule
///
/// The body's `id` must be the path's.
#[utoipa::path(
    put,
    path = "/api/schedules/{id}",
    operation_id = "put_schedule",
    tag = "schedules",
    params(("id" = String, Path, description = "the schedule id")),
    request_body = ScheduleDef,
    responses(
        (status = 200, description = "stored", body = ScheduleView),
        (status = 400, description = "an invalid schedule, or another id", body = ErrorBody),
        (status = 404, description = "unknown task", body = ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    b: Result<Json<ScheduleDef>, JsonRejection>,
) -> Result<Json<ScheduleView>, ApiError> {
    let def = body(b)?;
    if def.id != id {
        return Err(ApiError::bad_request(format!(
            "the body's id {:?} differs from the path's {id:?}",
            def.id
        )));
    }
    check_task(&state, &def)?;
    let store = Schedules::new(&state.broker);
    store.put(def.clone()).await?;
    let def = store.get(&id).await?.ok_or_else(|| missing(&id))?;
    Ok(Json(view(&store, def).await?))
}

/// Delete a schedule
#[utoipa::path(
    delete,
    path = "/api/schedules/{id}",
    operation_id = "delete_schedule",
    tag = "schedules",
    params(("id" = String, Path, description = "the schedule id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "no such schedule", body = ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    match Schedules::new(&state.broker).remove(&id).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(missing(&id)),
    }
}

async fn set_enabled(state: &AppState, id: &str, on: bool) -> Result<Json<ScheduleView>, ApiError> {
    let store = Schedules::new(&state.broker);
    if !store.set_enabled(id, on).await? {
        return Err(missing(id));
    }
    let def = store.get(id).await?.ok_or_else(|| missing(id))?;
    Ok(Json(view(&store, def).await?))
}

/// Pause a schedule
#[utoipa::path(
    post,
    path = "/api/schedules/{id}/pause",
    operation_id = "pause_schedule",
    tag = "schedules",
    params(("id" = String, Path, description = "the schedule id")),
    responses(
        (status = 200, description = "the schedule, paused", body = ScheduleView),
        (status = 404, description = "no such schedule", body = ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn pause(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    set_enabled(&state, &id, false).await
}

/// Resume a schedule
///
/// Ticks missed while it was paused are not fired.
#[utoipa::path(
    post,
    path = "/api/schedules/{id}/resume",
    operation_id = "resume_schedule",
    tag = "schedules",
    params(("id" = String, Path, description = "the schedule id")),
    responses(
        (status = 200, description = "the schedule, resumed", body = ScheduleView),
        (status = 404, description = "no such schedule", body = ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    set_enabled(&state, &id, true).await
}

/// Fire a schedule's task now
#[utoipa::path(
    post,
    path = "/api/schedules/{id}/trigger",
    operation_id = "trigger_schedule",
    tag = "schedules",
    params(("id" = String, Path, description = "the schedule id")),
    responses(
        (status = 200, description = "fired", body = Triggered),
        (status = 404, description = "no such schedule", body = ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn trigger(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Triggered>, ApiError> {
    let store = Schedules::new(&state.broker);
    if store.get(&id).await?.is_none() {
        return Err(missing(&id));
    }
    let task_id = store.trigger(&id).await?;
    Ok(Json(Triggered {
        schedule: id,
        task_id,
    }))
}
