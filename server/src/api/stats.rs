//! `/api/stats`: queues, workers, the scheduler, and the cumulative counters.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use kiq_broker::envelope::now_ms;
use serde_json::{json, Value};

use crate::{ApiError, AppState};

/// Workers whose heartbeat is older than this are not listed.
const FORGET_MS: u64 = 3_600_000;

/// The cumulative counters (`{kiq}:stats`).
pub(crate) async fn totals(state: &AppState) -> Result<BTreeMap<String, u64>, ApiError> {
    Ok(state.inspector.counters().await?.into_iter().collect())
}

pub(crate) async fn stats(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let queues = state.inspector.all_queue_stats().await?;
    let workers = state.inspector.workers(FORGET_MS).await?;
    let leader = state.inspector.scheduler_lease().await?;
    let totals = totals(&state).await?;
    Ok(Json(json!({
        "now_ms": now_ms(),
        "queues": queues,
        "workers": workers,
        "scheduler": leader.map(|l| json!({
            "holder": l.holder, "token": l.token, "lease_expires_in_ms": l.ttl_ms
        })),
        "totals": totals,
    })))
}
