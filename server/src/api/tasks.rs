//! `/api/tasks`: create a task by name, get one, list by state, cancel.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use kiq_broker::envelope::MAX_DELAY;
use kiq_broker::{CancelOutcome, Priority, RawDispatch, TaskState, TaskView};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, ToSchema};

use super::{body, query};
use crate::error::{ErrorBody, Unauthorized, Unavailable};
use crate::{ApiError, AppState};

/// `POST /api/tasks`: a task to create, by name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTask {
    /// The registered task name.
    task: String,
    /// The task's arguments, in order (default none).
    #[serde(default = "empty_array")]
    #[schema(value_type = Vec<Value>)]
    args: Value,
    /// The queue (default: the task's own when this server links it, else `default`).
    queue: Option<String>,
    /// The priority (default `normal`).
    #[schema(value_type = Option<Priority>)]
    priority: Option<String>,
    /// A delay: seconds as a number, or a duration string (`"30s"`, `"5m"`).
    #[schema(schema_with = duration_schema)]
    delay: Option<Value>,
    /// The task id (default: a new UUID).
    task_id: Option<String>,
    /// Labels carried to the worker.
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Retries (default: the task's own policy).
    retries: Option<u32>,
    /// A per-attempt timeout, like `delay`.
    #[schema(schema_with = duration_schema)]
    timeout: Option<Value>,
    /// Send even when no live worker advertises the task's name (for workers that start
    /// later).
    #[serde(default)]
    force: bool,
}

fn empty_array() -> Value {
    Value::Array(Vec::new())
}

/// What [`duration`] accepts: seconds, or a duration string.
fn duration_schema() -> impl Into<RefOr<Schema>> {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .minimum(Some(0.0))
                .description(Some("seconds")),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("a duration, e.g. `30s`, `5m`, `1h 30m`")),
        )
        .description(Some("at most 10 years"))
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

/// The task created: 201.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedTask {
    /// The task id.
    id: String,
    /// The task name.
    task: String,
    /// The queue it went to.
    queue: String,
    /// Its priority.
    priority: Priority,
    /// `pending`, or `scheduled` when it has a delay.
    state: TaskState,
}

/// Create a task by name
///
/// A name that no live worker advertises (or, when none advertises any, that this server does
/// not link while it links some) is refused with 404 `unknown_task` listing the known names,
/// unless the body says `"force": true`.
#[utoipa::path(
    post,
    path = "/api/tasks",
    operation_id = "create_task",
    tag = "tasks",
    params((
        "traceparent" = Option<String>,
        Header,
        description = "W3C trace context: the task's execution joins the caller's trace",
    )),
    request_body = NewTask,
    responses(
        (status = 201, description = "enqueued", body = CreatedTask),
        (status = 400, description = "bad body, arguments, queue, priority, delay or timeout", body = ErrorBody),
        (status = 404, description = "unknown task name", body = ErrorBody),
        (status = 413, description = "payload too large", body = ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
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
) -> Result<(StatusCode, Json<CreatedTask>), ApiError> {
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
    Ok((
        StatusCode::CREATED,
        Json(CreatedTask {
            id,
            task: t.task,
            queue,
            priority,
            state: if delayed {
                TaskState::Scheduled
            } else {
                TaskState::Pending
            },
        }),
    ))
}

/// Get a task
///
/// Its state, history, attempts, times, worker, error, result, progress and trace.
#[utoipa::path(
    get,
    path = "/api/tasks/{id}",
    operation_id = "get_task",
    tag = "tasks",
    params(("id" = String, Path, description = "the task id")),
    responses(
        (status = 200, description = "the task", body = TaskView),
        (status = 404, description = "unknown, or its record expired", body = ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let Some(r) = state.broker.record(&id).await? else {
        return Err(ApiError::not_found(format!(
            "task {id} is unknown or its record has expired"
        )));
    };
    let progress: Option<Value> = state.broker.progress(&id).await.ok().flatten();
    Ok(Json(r.view(state.broker.codec(), &id, progress)))
}

/// `GET /api/tasks`'s query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// The state: pending, scheduled, running, retrying, succeeded, failed, cancelled or dead.
    #[param(value_type = TaskState)]
    state: String,
    /// Only this queue.
    queue: Option<String>,
    /// At most this many (default 50, at most 10,000).
    limit: Option<usize>,
    /// For a finished state: the `next` of the page before, to list the tasks after it.
    cursor: Option<String>,
}

/// Tasks in a state: `GET /api/tasks`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TaskList {
    /// The state listed.
    state: TaskState,
    /// The tasks (those whose record has expired are left out).
    tasks: Vec<TaskView>,
    /// Where the next page starts (pass it as `cursor`); absent on the last page, and for
    /// waiting states (which list the oldest `limit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// List tasks in a state
#[utoipa::path(
    get,
    path = "/api/tasks",
    operation_id = "list_tasks",
    tag = "tasks",
    params(ListQuery),
    responses(
        (status = 200, description = "the tasks", body = TaskList),
        (status = 400, description = "unknown state, or a bad query", body = ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<TaskList>, ApiError> {
    let q = query(q)?;
    let st: TaskState = q.state.parse().map_err(ApiError::bad_request)?;
    let after: Option<kiq_broker::TaskCursor> = q
        .cursor
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let page = state
        .inspector
        .list_tasks_page(
            st,
            q.queue.as_deref(),
            q.limit.unwrap_or(50),
            after.as_ref(),
        )
        .await?;
    let next = page.next.map(|c| c.to_string());
    let tasks = page
        .tasks
        .iter()
        .filter_map(|t| {
            t.record
                .as_ref()
                .map(|r| r.view(state.broker.codec(), &t.id, None))
        })
        .collect();
    Ok(Json(TaskList {
        state: st,
        tasks,
        next,
    }))
}

/// A cancel's outcome: `POST /api/tasks/{id}/cancel`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Cancelled {
    /// The task id.
    id: String,
    /// `cancelled` (it will not run, or is being stopped) or `already_finished` (nothing
    /// changed); never `not_found`, which is a 404.
    outcome: CancelOutcome,
}

/// Cancel a task
///
/// A pending or delayed task never runs; a running one is stopped after its worker's grace
/// period. A finished task is left alone.
#[utoipa::path(
    post,
    path = "/api/tasks/{id}/cancel",
    operation_id = "cancel_task",
    tag = "tasks",
    params(("id" = String, Path, description = "the task id")),
    responses(
        (status = 200, description = "what the cancel did", body = Cancelled),
        (status = 404, description = "unknown, or its record expired", body = ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Cancelled>, ApiError> {
    let outcome = match state.broker.cancel(&id).await? {
        CancelOutcome::NotFound => {
            return Err(ApiError::not_found(format!(
                "task {id} is unknown or its record has expired"
            )))
        }
        other => other,
    };
    Ok(Json(Cancelled { id, outcome }))
}
