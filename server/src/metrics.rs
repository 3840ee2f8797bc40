//! Prometheus metrics: the server's own `/metrics` (what Redis says about queues, workers and
//! the scheduler), and a bare metrics server for worker processes.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use kiq_broker::envelope::now_ms;
use kiq_scheduler::Schedules;
use kiq_worker::metrics::escape;

use crate::{ApiError, AppState};

fn text(body: String) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

/// A per-queue gauge: name, help, and how to read it.
type QueueGauge = (
    &'static str,
    &'static str,
    fn(&kiq_broker::QueueStats) -> u64,
);

/// `GET /metrics` of `taskctl serve`.
pub(crate) async fn server_metrics(
    State(state): State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    let mut out = String::new();
    let queues = state.inspector.all_queue_stats().await?;
    let gauges: [QueueGauge; 4] = [
        (
            "kiq_queue_waiting",
            "Messages waiting in the queue (all priorities).",
            |q| q.waiting,
        ),
        (
            "kiq_queue_in_flight",
            "Messages delivered to a worker and not yet acknowledged.",
            |q| q.in_flight,
        ),
        (
            "kiq_queue_delayed",
            "Delayed messages (delays and retries) not yet due.",
            |q| q.delayed,
        ),
        ("kiq_queue_dead", "Dead letters.", |q| q.dead),
    ];
    for (name, help, get) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for q in &queues {
            let _ = writeln!(out, "{name}{{queue=\"{}\"}} {}", escape(&q.queue), get(q));
        }
    }
    let workers = state.inspector.workers(3_600_000).await?;
    let now = now_ms();
    // Only workers heard from in the last minute count: a dead one's last heartbeat stays
    // up to an hour, and counting its concurrency and held messages made the figures lie.
    let live: Vec<_> = workers.iter().filter(|w| w.is_live(now)).collect();
    let _ = writeln!(
        out,
        "# HELP kiq_workers Worker processes with a heartbeat in the last minute.\n# TYPE kiq_workers gauge\nkiq_workers {}",
        live.len()
    );
    let concurrency: usize = live.iter().map(|w| w.concurrency).sum();
    let in_flight: u64 = live.iter().map(|w| w.in_flight).sum();
    let _ = writeln!(
        out,
        "# HELP kiq_workers_utilization Messages held by live workers / their total concurrency.\n# TYPE kiq_workers_utilization gauge\nkiq_workers_utilization {}",
        if concurrency == 0 { 0.0 } else { in_flight as f64 / concurrency as f64 }
    );
    let leader = state.inspector.scheduler_lease().await?;
    let _ = writeln!(
        out,
        "# HELP kiq_scheduler_leader 1 while a scheduler holds the lease.\n# TYPE kiq_scheduler_leader gauge\nkiq_scheduler_leader {}",
        u8::from(leader.is_some())
    );
    if let Some(l) = &leader {
        let _ = writeln!(
            out,
            "# HELP kiq_scheduler_lease_seconds Time left on the active scheduler's lease.\n# TYPE kiq_scheduler_lease_seconds gauge\nkiq_scheduler_lease_seconds{{holder=\"{}\"}} {}",
            escape(&l.holder),
            l.ttl_ms as f64 / 1000.0
        );
    }
    // Lag: how far behind its next fire each enabled schedule is (0 when on time).
    let store = Schedules::new(&state.broker);
    let _ = writeln!(out, "# HELP kiq_scheduler_lag_seconds How long past due a schedule's next fire is.\n# TYPE kiq_scheduler_lag_seconds gauge");
    for def in store.list().await?.iter().filter(|d| d.enabled) {
        let status = store.status(&def.id).await?;
        let lag = status
            .next_fire_ms
            .map(|n| now.saturating_sub(n) as f64 / 1000.0)
            .unwrap_or(0.0);
        let _ = writeln!(
            out,
            "kiq_scheduler_lag_seconds{{schedule=\"{}\"}} {lag}",
            escape(&def.id)
        );
    }
    let totals = crate::api::stats_totals(&state).await?;
    let _ = writeln!(out, "# HELP kiq_tasks_finished_total Tasks finished, by final state (all workers).\n# TYPE kiq_tasks_finished_total counter");
    for st in ["succeeded", "failed", "cancelled", "dead"] {
        let _ = writeln!(
            out,
            "kiq_tasks_finished_total{{state=\"{st}\"}} {}",
            totals.get(st).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(
        out,
        "# HELP kiq_tasks_retried_total Attempts that failed and were retried (all workers).\n# TYPE kiq_tasks_retried_total counter\nkiq_tasks_retried_total {}",
        totals.get("retried").copied().unwrap_or(0)
    );
    Ok(text(out))
}

/// How a worker's `/readyz` decides: `Ok`, or why it is not ready.
pub type Readiness = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// A worker process's listener (no authentication: bind it to a private address): `GET
/// /metrics` (`render` produces the text), `GET /healthz` (200 while the process serves) and
/// `GET /readyz` (200 when `ready` says so, else 503 with the reason).
pub async fn serve_worker_metrics(
    listener: tokio::net::TcpListener,
    render: fn() -> String,
    ready: Readiness,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(move || async move { text(render()) }))
        .route("/healthz", get(crate::health::alive))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move { crate::health::answer(ready().await) }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
