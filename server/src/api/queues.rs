//! `/api/queues` and `/api/workers`: pause, resume, purge and drain a queue; tell a worker to go
//! quiet.

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use kiq_broker::QueueStats;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{body, query};
use crate::error::{ErrorBody, Unauthorized, Unavailable};
use crate::{ApiError, AppState};

/// The longest a drain request waits.
const DRAIN_MAX: Duration = Duration::from_secs(60);

/// A queue's paused state after a pause or resume.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct QueuePaused {
    /// The queue.
    queue: String,
    /// Whether it is paused now.
    paused: bool,
    /// Whether this request changed it.
    changed: bool,
}

/// Pause a queue
///
/// It still accepts tasks; workers stop reading it (every partition and priority lane) within
/// about a second, and the tasks they hold finish.
#[utoipa::path(
    post,
    path = "/api/queues/{queue}/pause",
    operation_id = "pause_queue",
    tag = "queues",
    params(("queue" = String, Path, description = "the queue")),
    responses(
        (status = 200, description = "paused", body = QueuePaused),
        (status = 400, description = "not a queue name", body = ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn pause(
    State(state): State<AppState>,
    Path(queue): Path<String>,
) -> Result<Json<QueuePaused>, ApiError> {
    let changed = state.inspector.pause_queue(&queue).await?;
    Ok(Json(QueuePaused {
        queue,
        paused: true,
        changed,
    }))
}

/// Resume a paused queue
#[utoipa::path(
    post,
    path = "/api/queues/{queue}/resume",
    operation_id = "resume_queue",
    tag = "queues",
    params(("queue" = String, Path, description = "the queue")),
    responses(
        (status = 200, description = "resumed", body = QueuePaused),
        (status = 400, description = "not a queue name", body = ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn resume(
    State(state): State<AppState>,
    Path(queue): Path<String>,
) -> Result<Json<QueuePaused>, ApiError> {
    let changed = state.inspector.resume_queue(&queue).await?;
    Ok(Json(QueuePaused {
        queue,
        paused: false,
        changed,
    }))
}

/// The body of a purge.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeRequest {
    /// Must be `true`: a purge cannot be undone.
    #[serde(default)]
    confirm: bool,
}

/// What a purge did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Purged {
    /// The queue.
    queue: String,
    /// Tasks deleted (and recorded as cancelled).
    purged: u64,
}

/// Purge a queue
///
/// Deletes every waiting and delayed task of the queue (every partition and priority lane) and
/// records each as cancelled; tasks workers hold finish. The body must say `{"confirm": true}`;
/// without it the answer is 400 and says how many tasks would go.
#[utoipa::path(
    post,
    path = "/api/queues/{queue}/purge",
    operation_id = "purge_queue",
    tag = "queues",
    params(("queue" = String, Path, description = "the queue")),
    request_body = PurgeRequest,
    responses(
        (status = 200, description = "purged", body = Purged),
        (status = 400, description = "not confirmed, or not a queue name", body = ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn purge(
    State(state): State<AppState>,
    Path(queue): Path<String>,
    request: Result<Json<PurgeRequest>, JsonRejection>,
) -> Result<Json<Purged>, ApiError> {
    let request = body(request)?;
    if !request.confirm {
        let s = state.inspector.queue_totals(&queue).await?;
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "confirm_required",
            format!(
                "purging {queue} deletes {} waiting and {} delayed task(s): send {{\"confirm\": true}}",
                s.waiting, s.delayed
            ),
        ));
    }
    let purged = state.inspector.purge_queue(&queue).await?;
    Ok(Json(Purged { queue, purged }))
}

/// How long a drain waits.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DrainQuery {
    /// Seconds to wait at most (default 30, at most 60).
    timeout_s: Option<u64>,
}

/// Where a drain ended.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Drained {
    /// Whether the queue is empty.
    empty: bool,
    /// Its numbers at the end.
    stats: QueueStats,
}

/// Wait until a queue is empty
///
/// Answers once the queue holds no waiting, delayed or running task, or when the timeout runs
/// out (`empty: false`, with what is left).
#[utoipa::path(
    post,
    path = "/api/queues/{queue}/drain",
    operation_id = "drain_queue",
    tag = "queues",
    params(("queue" = String, Path, description = "the queue"), DrainQuery),
    responses(
        (status = 200, description = "the queue's numbers when the wait ended", body = Drained),
        (status = 400, description = "not a queue name, or a bad timeout", body = ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn drain(
    State(state): State<AppState>,
    Path(queue): Path<String>,
    q: Result<Query<DrainQuery>, QueryRejection>,
) -> Result<Json<Drained>, ApiError> {
    let q = query(q)?;
    let timeout = Duration::from_secs(q.timeout_s.unwrap_or(30)).min(DRAIN_MAX);
    let stats = state.inspector.drain(&queue, timeout, |_| {}).await?;
    Ok(Json(Drained {
        empty: stats.depth + stats.delayed == 0,
        stats,
    }))
}

/// A worker told to go quiet.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Quieted {
    /// Its consumer name.
    consumer: String,
    /// Always true: it stays quiet until it exits.
    quiet: bool,
}

/// Tell a worker to go quiet
///
/// The worker process (a consumer, as `/api/stats` lists them) stops taking new work within
/// about a second and finishes what it holds; it stays quiet until it exits (stop it then).
#[utoipa::path(
    post,
    path = "/api/workers/{consumer}/quiet",
    operation_id = "quiet_worker",
    tag = "queues",
    params(("consumer" = String, Path, description = "the worker's consumer name")),
    responses(
        (status = 200, description = "told", body = Quieted),
        (status = 404, description = "no such worker", body = ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn quiet(
    State(state): State<AppState>,
    Path(consumer): Path<String>,
) -> Result<Json<Quieted>, ApiError> {
    if !state.inspector.quiet_worker(&consumer).await? {
        return Err(ApiError::not_found(format!("no worker {consumer:?}")));
    }
    Ok(Json(Quieted {
        consumer,
        quiet: true,
    }))
}

/// Which waiting tasks of a queue a bulk cancel takes.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CancelFilter {
    /// `pending` (default), `scheduled` or `retrying`.
    state: Option<String>,
    /// Only tasks of this name.
    task: Option<String>,
    /// At most this many (default and at most 10,000).
    limit: Option<usize>,
    /// Only count them: nothing is cancelled.
    #[serde(default)]
    dry_run: bool,
}

/// What a bulk cancel did (or, dry, would do).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CancelledMany {
    /// The queue.
    queue: String,
    /// Tasks matching the filter.
    matched: u64,
    /// Tasks cancelled (0 on a dry run; fewer than matched if some started or finished
    /// meanwhile).
    cancelled: u64,
}

/// Cancel waiting tasks of a queue
///
/// Cancels the queue's pending (or scheduled, or retrying) tasks matching the filter, oldest
/// first, at most `limit`; with `"dry_run": true` only counts them, so a caller can say how many
/// a cancel will touch before it runs.
#[utoipa::path(
    post,
    path = "/api/queues/{queue}/cancel",
    operation_id = "cancel_waiting_tasks",
    tag = "queues",
    params(("queue" = String, Path, description = "the queue")),
    request_body = CancelFilter,
    responses(
        (status = 200, description = "cancelled (or counted)", body = CancelledMany),
        (status = 400, description = "a bad filter or queue name", body = ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn cancel_waiting(
    State(state): State<AppState>,
    Path(queue): Path<String>,
    request: Result<Json<CancelFilter>, JsonRejection>,
) -> Result<Json<CancelledMany>, ApiError> {
    let f = body(request)?;
    if !kiq_broker::valid_queue_name(&queue) {
        return Err(ApiError::bad_request(format!("invalid queue {queue:?}")));
    }
    let st: kiq_broker::TaskState = f
        .state
        .as_deref()
        .unwrap_or("pending")
        .parse()
        .map_err(ApiError::bad_request)?;
    if !matches!(
        st,
        kiq_broker::TaskState::Pending
            | kiq_broker::TaskState::Scheduled
            | kiq_broker::TaskState::Retrying
    ) {
        return Err(ApiError::bad_request(format!(
            "only waiting tasks are cancelled in bulk (pending, scheduled, retrying), not {st}"
        )));
    }
    let limit = f.limit.unwrap_or(10_000).clamp(1, 10_000);
    let ids: Vec<String> = state
        .inspector
        .list_tasks(st, Some(&queue), limit)
        .await?
        .into_iter()
        .filter(|t| {
            f.task
                .as_deref()
                .is_none_or(|name| t.record.as_ref().is_some_and(|r| r.task == name))
        })
        .map(|t| t.id)
        .collect();
    let mut cancelled = 0;
    if !f.dry_run {
        for id in &ids {
            if state.broker.cancel(id).await? == kiq_broker::CancelOutcome::Cancelled {
                cancelled += 1;
            }
        }
    }
    Ok(Json(CancelledMany {
        queue,
        matched: ids.len() as u64,
        cancelled,
    }))
}
