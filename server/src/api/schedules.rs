//! `/api/schedules`: create, read, update, delete, pause, resume, trigger.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use kiq_scheduler::{ScheduleDef, Schedules};
use serde_json::{json, Value};

use super::body;
use crate::{ApiError, AppState};

async fn view(store: &Schedules, def: &ScheduleDef) -> Result<Value, ApiError> {
    let status = store.status(&def.id).await?;
    let next = def
        .validate()
        .ok()
        .and_then(|e| e.next_after(chrono::Utc::now()))
        .map(|t| t.timestamp_millis());
    Ok(json!({ "schedule": def, "status": status, "next_fire_ms": next }))
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

pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let store = Schedules::new(&state.broker);
    let mut out = Vec::new();
    for def in store.list().await? {
        out.push(view(&store, &def).await?);
    }
    Ok(Json(json!({ "schedules": out })))
}

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
    Ok((StatusCode::CREATED, Json(view(&store, &def).await?)))
}

pub(crate) async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = Schedules::new(&state.broker);
    let def = store.get(&id).await?.ok_or_else(|| missing(&id))?;
    Ok(Json(view(&store, &def).await?))
}

pub(crate) async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    b: Result<Json<ScheduleDef>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(view(&store, &def).await?))
}

pub(crate) async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    match Schedules::new(&state.broker).remove(&id).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(missing(&id)),
    }
}

async fn set_enabled(state: &AppState, id: &str, on: bool) -> Result<Json<Value>, ApiError> {
    let store = Schedules::new(&state.broker);
    if !store.set_enabled(id, on).await? {
        return Err(missing(id));
    }
    let def = store.get(id).await?.ok_or_else(|| missing(id))?;
    Ok(Json(view(&store, &def).await?))
}

pub(crate) async fn pause(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_enabled(&state, &id, false).await
}

pub(crate) async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_enabled(&state, &id, true).await
}

pub(crate) async fn trigger(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = Schedules::new(&state.broker);
    if store.get(&id).await?.is_none() {
        return Err(missing(&id));
    }
    let task_id = store.trigger(&id).await?;
    Ok(Json(json!({ "schedule": id, "task_id": task_id })))
}
