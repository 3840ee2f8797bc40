//! `/api/dead`: list dead letters, replay one or many, purge one.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use kiq_broker::{DeadEntry, DeadFilter};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{body, query};
use crate::{ApiError, AppState};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Filter {
    /// A queue (its priority lanes included).
    queue: Option<String>,
    reason: Option<String>,
    task: Option<String>,
    limit: Option<usize>,
}

fn view(e: &DeadEntry) -> Value {
    let (queue, priority) = kiq_broker::priority::split_lane(&e.queue);
    json!({
        "id": e.id, "queue": queue, "lane": e.queue, "priority": priority,
        "reason": e.reason, "error": e.error, "task_id": e.task_id, "task": e.task,
        "attempts": e.attempts, "at_ms": e.at_ms,
    })
}

/// The dead letters matching `f`, at most `limit`.
async fn matching(state: &AppState, f: &Filter, limit: usize) -> Result<Vec<DeadEntry>, ApiError> {
    let filter = DeadFilter {
        queue: f.queue.clone(),
        reason: f.reason.clone(),
        task: f.task.clone(),
    };
    Ok(state.inspector.find_dead_letters(&filter, limit).await?)
}

pub(crate) async fn list(
    State(state): State<AppState>,
    q: Result<Query<Filter>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let f = query(q)?;
    let limit = f.limit.unwrap_or(100).clamp(1, 10_000);
    let dead: Vec<Value> = matching(&state, &f, limit)
        .await?
        .iter()
        .map(view)
        .collect();
    Ok(Json(json!({ "dead": dead })))
}

fn check_lane(lane: &str) -> Result<(), ApiError> {
    // A lane of a queue, or of one of its partitions (`mail#2:high`).
    let physical = kiq_broker::priority::split_lane(lane).0;
    match kiq_broker::valid_queue_name(kiq_broker::partition::logical(physical)) {
        true => Ok(()),
        false => Err(ApiError::bad_request(format!("invalid queue {lane:?}"))),
    }
}

pub(crate) async fn replay(
    State(state): State<AppState>,
    Path((lane, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_lane(&lane)?;
    if state.inspector.replay_dead_letter(&lane, &id).await? {
        Ok(Json(json!({ "replayed": 1 })))
    } else {
        Err(ApiError::not_found(format!(
            "no dead letter {id} in {lane}"
        )))
    }
}

pub(crate) async fn replay_all(
    State(state): State<AppState>,
    b: Result<Json<Filter>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let f = match b {
        Err(JsonRejection::MissingJsonContentType(_)) => Filter::default(),
        other => body(other)?,
    };
    let limit = f.limit.unwrap_or(100_000);
    let mut n = 0u64;
    for e in matching(&state, &f, limit).await? {
        if state.inspector.replay_dead_letter(&e.queue, &e.id).await? {
            n += 1;
        }
    }
    Ok(Json(json!({ "replayed": n })))
}

pub(crate) async fn purge(
    State(state): State<AppState>,
    Path((lane, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    check_lane(&lane)?;
    match state
        .inspector
        .purge_dead_letters(&lane, std::slice::from_ref(&id))
        .await?
    {
        0 => Err(ApiError::not_found(format!(
            "no dead letter {id} in {lane}"
        ))),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}
