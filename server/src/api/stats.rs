//! `/api/stats`: queues, workers, the scheduler, and the cumulative counters; the history and
//! the per-task table.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use kiq_broker::envelope::now_ms;
use kiq_broker::{History, QueueStats, TaskTotals, WorkerInfo};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{Unauthorized, Unavailable};
use crate::{ApiError, AppState};

/// Workers whose heartbeat is older than this are not listed.
const FORGET_MS: u64 = 3_600_000;

/// The cumulative counters (`{kiq}:stats`).
pub(crate) async fn totals(state: &AppState) -> Result<BTreeMap<String, u64>, ApiError> {
    Ok(state.inspector.counters().await?.into_iter().collect())
}

/// `GET /api/stats`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Stats {
    /// The server's clock, ms since the epoch (to age heartbeats and leases by).
    now_ms: u64,
    /// Every queue's numbers.
    queues: Vec<QueueStats>,
    /// Workers heard from in the last hour (live ones within the last minute).
    workers: Vec<WorkerInfo>,
    /// The scheduler holding the lease, if one does.
    scheduler: Option<SchedulerLeader>,
    /// Cumulative counters (all workers): `succeeded`, `failed`, `cancelled`, `dead`,
    /// `retried`...
    totals: BTreeMap<String, u64>,
}

/// The active scheduler.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SchedulerLeader {
    /// Its id (`host-pid-random`).
    holder: String,
    /// Its fencing token.
    token: u64,
    /// Time left on its lease, ms.
    lease_expires_in_ms: i64,
}

/// Queues, workers, the active scheduler and cumulative counters
#[utoipa::path(
    get,
    path = "/api/stats",
    operation_id = "get_stats",
    tag = "stats",
    responses(
        (status = 200, description = "the numbers", body = Stats),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn stats(State(state): State<AppState>) -> Result<Json<Stats>, ApiError> {
    let queues = state.inspector.all_queue_stats().await?;
    let workers = state.inspector.workers(FORGET_MS).await?;
    let leader = state.inspector.scheduler_lease().await?;
    let totals = totals(&state).await?;
    Ok(Json(Stats {
        now_ms: now_ms(),
        queues,
        workers,
        scheduler: leader.map(|l| SchedulerLeader {
            holder: l.holder,
            token: l.token,
            lease_expires_in_ms: l.ttl_ms,
        }),
        totals,
    }))
}

/// The range of a history read.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    /// Start, ms since the epoch (default: an hour before `to`).
    from: Option<u64>,
    /// End, ms since the epoch (default: now).
    to: Option<u64>,
    /// Seconds per point (default 60; rounded up to whole minutes, or whole hours for ranges
    /// reaching back over 48 hours). At most 2,000 points.
    step: Option<u64>,
}

/// Throughput history
///
/// Finished, failed, retried and dead-lettered tasks, run and wait times (sums and a coarse
/// histogram) per queue and per task name, one point per step. Kept per minute for 48 hours,
/// per hour for 30 days.
#[utoipa::path(
    get,
    path = "/api/stats/history",
    operation_id = "get_history",
    tag = "stats",
    params(HistoryQuery),
    responses(
        (status = 200, description = "the points", body = History),
        (status = 400, description = "a bad range or step", body = crate::error::ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn history(
    State(state): State<AppState>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<History>, ApiError> {
    let q = super::query(q)?;
    let to = q.to.unwrap_or_else(now_ms);
    let from = q.from.unwrap_or_else(|| to.saturating_sub(3_600_000));
    let step = q.step.unwrap_or(60);
    Ok(Json(state.inspector.history(from, to, step).await?))
}

/// The range of the per-task table.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct TasksQuery {
    /// How far back: `1h` (default), `24h`, `7d`, or any duration up to `30d`.
    range: Option<String>,
}

/// `GET /api/stats/tasks`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TaskTable {
    /// The range, as asked.
    range: String,
    /// One row per task name that finished a task in the range, busiest first.
    tasks: Vec<TaskTotals>,
}

/// Per task name
///
/// Each task name's throughput, failure rate, run-time percentiles (from the history's coarse
/// histogram: bucket upper bounds) and latest failure over the range.
#[utoipa::path(
    get,
    path = "/api/stats/tasks",
    operation_id = "get_task_totals",
    tag = "stats",
    params(TasksQuery),
    responses(
        (status = 200, description = "one row per task name", body = TaskTable),
        (status = 400, description = "a bad range", body = crate::error::ErrorBody),
        Unauthorized,
        Unavailable,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn task_totals(
    State(state): State<AppState>,
    q: Result<Query<TasksQuery>, QueryRejection>,
) -> Result<Json<TaskTable>, ApiError> {
    let q = super::query(q)?;
    let range = q.range.unwrap_or_else(|| "1h".to_string());
    let d = humantime::parse_duration(&range)
        .map_err(|e| ApiError::bad_request(format!("bad range {range:?}: {e}")))?;
    if d < std::time::Duration::from_secs(60) || d > std::time::Duration::from_secs(30 * 86_400) {
        return Err(ApiError::bad_request(format!(
            "range {range:?}: from 1m to 30d"
        )));
    }
    let tasks = state.inspector.task_totals(d).await?;
    Ok(Json(TaskTable { range, tasks }))
}
