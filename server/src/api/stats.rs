//! `/api/stats`: queues, workers, the scheduler, and the cumulative counters.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use kiq_broker::envelope::now_ms;
use kiq_broker::{QueueStats, WorkerInfo};
use serde::Serialize;
use utoipa::ToSchema;

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
