//! `/api/tasks`: create a task by name, get one, list by state, cancel.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use kiq_broker::envelope::MAX_DELAY;
use kiq_broker::{CancelOutcome, Priority, RawDispatch, TaskState};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{body, query};
use crate::{ApiError, AppState};

/// `POST /api/tasks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTask {
    task: String,
    #[serde(default = "empty_array")]
    args: Value,
    queue: Option<String>,
    priority: Option<String>,
    /// A delay: seconds as a number, or a duration string (`"30s"`, `"5m"`).
    delay: Option<Value>,
    task_id: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    retries: Option<u32>,
    /// A per-attempt timeout, like `delay`.
    timeout: Option<Value>,
    /// Send even when no live worker advertises the task's name (for workers that start
    /// later).
    #[serde(default)]
    force: bool,
}

fn empty_array() -> Value {
    Value::Array(Vec::new())
}

fn duration(v: &Value, what: &str) -> Result<Duration, ApiError> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .filter(|s| *s >= 0.0)
            // `try_`: a number too large for a Duration is an error, not a panic.
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .filter(|d| *d <= MAX_DELAY)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{what} must be a number of seconds from 0 to {} (10 years)",
                    MAX_DELAY.as_secs()
                ))
            }),
        Value::String(s) => match humantime::parse_duration(s) {
            Ok(d) if d <= MAX_DELAY => Ok(d),
            Ok(_) => Err(ApiError::bad_request(format!(
                "{what} {s:?} is over 10 years"
            ))),
            Err(e) => Err(ApiError::bad_request(format!("{what} {s:?}: {e}"))),
        },
        _ => Err(ApiError::bad_request(format!(
            "{what} must be seconds or a duration like \"30s\""
        ))),
    }
}

pub(crate) async fn create(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    b: Result<Json<NewTask>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    // A caller that sends W3C `traceparent` gets the task's execution in its trace.
    let parent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(kiq_broker::trace_context::TraceParent::parse);
    match parent {
        Some(p) => kiq_broker::trace_context::scope(p, create_task(state, b)).await,
        None => create_task(state, b).await,
    }
}

/// Refuses a name no live worker advertises (or, when none advertises any, one this server
/// does not link while it links some): it would wait in its queue, or dead-letter as unknown,
/// while the caller was told all was well. The error lists the names that would be accepted.
async fn check_name(state: &AppState, name: &str, linked: bool) -> Result<(), ApiError> {
    let advertised = match state.inspector.advertised_tasks().await {
        Ok(names) => names,
        // The in-memory broker has no workers to ask.
        Err(kiq_broker::BrokerError::Unsupported(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let known: Vec<String> = if !advertised.is_empty() {
        if advertised.iter().any(|n| n == name) {
            return Ok(());
        }
        advertised
    } else if linked || state.tasks.is_empty() {
        return Ok(());
    } else {
        let mut names: Vec<String> = state.tasks.keys().cloned().collect();
        names.sort_unstable();
        names
    };
    const SHOWN: usize = 50;
    let more = known.len().saturating_sub(SHOWN);
    let mut list = known.into_iter().take(SHOWN).collect::<Vec<_>>().join(", ");
    if more > 0 {
        list.push_str(&format!(" and {more} more"));
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_task",
        format!(
            "no live worker runs a task named {name:?}; known names: {list} \
             (send with \"force\": true to dispatch it anyway, for a worker that starts later)"
        ),
    ))
}

async fn create_task(
    state: AppState,
    b: Result<Json<NewTask>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let t = body(b)?;
    if !t.args.is_array() {
        return Err(ApiError::bad_request(
            "args must be a JSON array of the task's arguments, e.g. [2, 3]",
        ));
    }
    let known_queue = state.tasks.get(&t.task).cloned();
    if !t.force {
        check_name(&state, &t.task, known_queue.is_some()).await?;
    }
    let queue = t
        .queue
        .clone()
        .or(known_queue)
        .unwrap_or_else(|| "default".to_string());
    let priority = match &t.priority {
        Some(p) => p
            .parse::<Priority>()
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => Priority::Normal,
    };
    let delay = t.delay.as_ref().map(|d| duration(d, "delay")).transpose()?;
    let timeout = t
        .timeout
        .as_ref()
        .map(|d| duration(d, "timeout"))
        .transpose()?;
    let msg = state.broker.prepare_raw(RawDispatch {
        task: &t.task,
        queue: &queue,
        args: state.broker.codec().from_json(&t.args)?,
        task_id: t.task_id.as_deref(),
        labels: t.labels.clone(),
        retry: t.retries.map(kiq_broker::RetryPolicy::retries),
        timeout,
        due_ms: delay.map(kiq_broker::envelope::due_in),
        unique_key: None,
        priority,
    })?;
    let delayed = msg.due_ms.is_some();
    let id = state.broker.enqueue(msg).await?;
    let state_name = if delayed { "scheduled" } else { "pending" };
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "id": id, "task": t.task, "queue": queue, "priority": priority, "state": state_name }),
        ),
    ))
}

pub(crate) async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Some(r) = state.broker.record(&id).await? else {
        return Err(ApiError::not_found(format!(
            "task {id} is unknown or its record has expired"
        )));
    };
    let progress: Option<Value> = state.broker.progress(&id).await.ok().flatten();
    Ok(Json(r.to_json(state.broker.codec(), &id, progress)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    state: String,
    queue: Option<String>,
    limit: Option<usize>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let st: TaskState = q.state.parse().map_err(ApiError::bad_request)?;
    let tasks = state
        .inspector
        .list_tasks(st, q.queue.as_deref(), q.limit.unwrap_or(50))
        .await?;
    let tasks: Vec<Value> = tasks
        .iter()
        .filter_map(|t| {
            t.record
                .as_ref()
                .map(|r| r.to_json(state.broker.codec(), &t.id, None))
        })
        .collect();
    Ok(Json(json!({ "state": st, "tasks": tasks })))
}

pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let outcome = match state.broker.cancel(&id).await? {
        CancelOutcome::NotFound => {
            return Err(ApiError::not_found(format!(
                "task {id} is unknown or its record has expired"
            )))
        }
        other => other.as_str(),
    };
    Ok(Json(json!({ "id": id, "outcome": outcome })))
}
