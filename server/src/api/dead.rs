//! `/api/dead`: list dead letters, replay one or many, purge one.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use kiq_broker::{DeadCursor, DeadEntry, DeadFilter, Priority};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{body, query};
use crate::error::{ErrorBody, Unauthorized, Unavailable};
use crate::{ApiError, AppState};

/// Which dead letters: every field that is set must match. The query of `GET /api/dead`, and
/// the (optional) body of `POST /api/dead/replay`.
#[derive(Debug, Default, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
#[schema(as = DeadLetterFilter)]
pub(crate) struct Filter {
    /// A queue (its priority lanes and partitions included), or one lane.
    queue: Option<String>,
    /// A reason: `malformed`, `too_large`, `unknown_task`, `bad_arguments`,
    /// `retries_exhausted`, `too_many_deliveries`.
    reason: Option<String>,
    /// A task name.
    task: Option<String>,
    /// At most this many (default 100 for a listing, at most 10000; 100000 for a replay).
    limit: Option<usize>,
    /// A listing only: the `next` of the page before.
    cursor: Option<String>,
}

/// One dead letter.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeadLetter {
    /// Its id in the dead-letter stream (to replay or purge it).
    id: String,
    /// The queue it came from.
    queue: String,
    /// The lane it is in (the queue, with `:<priority>` unless normal): the `{queue}` of the
    /// replay and purge routes.
    lane: String,
    /// The priority of its lane.
    priority: Priority,
    /// Why it is dead: `malformed`, `too_large`, `unknown_task`, `bad_arguments`,
    /// `retries_exhausted`, `too_many_deliveries`.
    reason: String,
    /// The last error.
    error: String,
    /// The task id, when the message decoded.
    task_id: Option<String>,
    /// The task name, when the message decoded.
    task: Option<String>,
    /// Attempts made.
    attempts: u32,
    /// When it died, ms since the epoch.
    at_ms: u64,
}

/// `GET /api/dead`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeadLetters {
    /// The matching dead letters (lane by lane, oldest first in each).
    dead: Vec<DeadLetter>,
    /// Where the next page starts (pass it as `cursor`); absent when nothing is left. With a
    /// reason or task filter a page looks at no more than 10,000 dead letters, so it may hold
    /// fewer than `limit` (even none) and still have a `next`.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// Dead letters a listing looks at, at most, per request.
const LIST_BUDGET: usize = 10_000;

/// What a replay did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Replayed {
    /// How many dead letters were sent back to their queues.
    replayed: u64,
}

fn view(e: &DeadEntry) -> DeadLetter {
    let (queue, priority) = kiq_broker::priority::split_lane(&e.queue);
    DeadLetter {
        id: e.id.clone(),
        queue: queue.to_string(),
        lane: e.queue.clone(),
        priority,
        reason: e.reason.clone(),
        error: e.error.clone(),
        task_id: e.task_id.clone(),
        task: e.task.clone(),
        attempts: e.attempts,
        at_ms: e.at_ms,
    }
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

/// List dead letters
#[utoipa::path(
    get,
    path = "/api/dead",
    operation_id = "list_dead_letters",
    tag = "dead letters",
    params(Filter),
    responses(
        (status = 200, description = "the dead letters", body = DeadLetters),
        (status = 400, description = "a bad query", body = ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    q: Result<Query<Filter>, QueryRejection>,
) -> Result<Json<DeadLetters>, ApiError> {
    let f = query(q)?;
    let limit = f.limit.unwrap_or(100).clamp(1, 10_000);
    let after: Option<DeadCursor> = f
        .cursor
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let filter = DeadFilter {
        queue: f.queue.clone(),
        reason: f.reason.clone(),
        task: f.task.clone(),
    };
    let page = state
        .inspector
        .dead_letter_page(&filter, after.as_ref(), limit, LIST_BUDGET.max(limit))
        .await?;
    Ok(Json(DeadLetters {
        dead: page.entries.iter().map(view).collect(),
        next: page.next.map(|c| c.to_string()),
    }))
}

fn check_lane(lane: &str) -> Result<(), ApiError> {
    // A lane of a queue, or of one of its partitions (`mail#2:high`).
    let physical = kiq_broker::priority::split_lane(lane).0;
    match kiq_broker::valid_queue_name(kiq_broker::partition::logical(physical)) {
        true => Ok(()),
        false => Err(ApiError::bad_request(format!("invalid queue {lane:?}"))),
    }
}

/// Replay one dead letter
///
/// It goes back to its queue with its attempts reset.
#[utoipa::path(
    post,
    path = "/api/dead/{queue}/{id}/replay",
    operation_id = "replay_dead_letter",
    tag = "dead letters",
    params(
        ("queue" = String, Path, description = "the lane it is in (`lane` in listings)"),
        ("id" = String, Path, description = "the dead letter's id"),
    ),
    responses(
        (status = 200, description = "replayed", body = Replayed),
        (status = 400, description = "an invalid queue or id", body = ErrorBody),
        (status = 404, description = "no such dead letter", body = ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn replay(
    State(state): State<AppState>,
    Path((lane, id)): Path<(String, String)>,
) -> Result<Json<Replayed>, ApiError> {
    check_lane(&lane)?;
    if state.inspector.replay_dead_letter(&lane, &id).await? {
        Ok(Json(Replayed { replayed: 1 }))
    } else {
        Err(ApiError::not_found(format!(
            "no dead letter {id} in {lane}"
        )))
    }
}

/// Replay every dead letter matching a filter
///
/// The body is optional: without one (or without a JSON content type), every dead letter is
/// replayed, up to 100000.
#[utoipa::path(
    post,
    path = "/api/dead/replay",
    operation_id = "replay_dead_letters",
    tag = "dead letters",
    request_body = Option<Filter>,
    responses(
        (status = 200, description = "replayed", body = Replayed),
        (status = 400, description = "a bad body", body = ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn replay_all(
    State(state): State<AppState>,
    b: Result<Json<Filter>, JsonRejection>,
) -> Result<Json<Replayed>, ApiError> {
    let f = bulk_filter(b)?;
    let limit = f.limit.unwrap_or(100_000);
    let mut n = 0u64;
    for e in matching(&state, &f, limit).await? {
        if state.inspector.replay_dead_letter(&e.queue, &e.id).await? {
            n += 1;
        }
    }
    Ok(Json(Replayed { replayed: n }))
}

/// The filter of a bulk action: its body, or every dead letter without one. A cursor belongs
/// to listings only.
fn bulk_filter(b: Result<Json<Filter>, JsonRejection>) -> Result<Filter, ApiError> {
    let f = match b {
        Err(JsonRejection::MissingJsonContentType(_)) => Filter::default(),
        other => body(other)?,
    };
    if f.cursor.is_some() {
        return Err(ApiError::bad_request(
            "a bulk action takes a filter, not a listing cursor",
        ));
    }
    Ok(f)
}

/// What a bulk purge did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Purged {
    /// How many dead letters were deleted.
    purged: u64,
}

/// Purge many dead letters
///
/// Deletes the dead letters matching the filter in the body (every one without a body), at
/// most `limit` (default 100,000).
#[utoipa::path(
    post,
    path = "/api/dead/purge",
    operation_id = "purge_dead_letters",
    tag = "dead letters",
    request_body = Option<Filter>,
    responses(
        (status = 200, description = "purged", body = Purged),
        (status = 400, description = "a bad body", body = ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn purge_all(
    State(state): State<AppState>,
    b: Result<Json<Filter>, JsonRejection>,
) -> Result<Json<Purged>, ApiError> {
    let f = bulk_filter(b)?;
    let limit = f.limit.unwrap_or(100_000);
    let mut by_lane: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for e in matching(&state, &f, limit).await? {
        by_lane.entry(e.queue).or_default().push(e.id);
    }
    let mut purged = 0;
    for (lane, ids) in by_lane {
        for chunk in ids.chunks(1_000) {
            purged += state.inspector.purge_dead_letters(&lane, chunk).await?;
        }
    }
    Ok(Json(Purged { purged }))
}

/// Purge one dead letter
#[utoipa::path(
    delete,
    path = "/api/dead/{queue}/{id}",
    operation_id = "purge_dead_letter",
    tag = "dead letters",
    params(
        ("queue" = String, Path, description = "the lane it is in (`lane` in listings)"),
        ("id" = String, Path, description = "the dead letter's id"),
    ),
    responses(
        (status = 204, description = "purged"),
        (status = 400, description = "an invalid queue or id", body = ErrorBody),
        (status = 404, description = "no such dead letter", body = ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
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
