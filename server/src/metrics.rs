//! Prometheus metrics: the server's own `/metrics` (what Redis says about queues, workers and
//! the scheduler), and a bare metrics server for worker processes.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use kiq_broker::envelope::now_ms;
use kiq_scheduler::Schedules;
use kiq_worker::metrics::escape;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

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
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "get_metrics",
    tag = "metrics",
    summary = "Prometheus metrics",
    description = "Queues, workers, the scheduler and finished tasks, in the Prometheus text format.",
    responses(
        (
            status = 200,
            description = "the metrics",
            content_type = "text/plain; version=0.0.4; charset=utf-8",
            body = String,
        ),
        crate::error::Unauthorized,
        crate::error::Unavailable,
    ),
    security(("bearer" = [])),
)]
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
    out.push_str(&process_metrics());
    Ok(text(out))
}

/// This process's standard metrics (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_open_fds`, ...), from `metrics-process`, in the
/// text format.
pub fn process_metrics() -> String {
    static LOCAL: std::sync::OnceLock<(
        metrics_exporter_prometheus::PrometheusRecorder,
        metrics_process::Collector,
    )> = std::sync::OnceLock::new();
    let (recorder, collector) = LOCAL.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let collector = metrics_process::Collector::default();
        metrics::with_local_recorder(&recorder, || collector.describe());
        (recorder, collector)
    });
    metrics::with_local_recorder(recorder, || collector.collect());
    recorder.handle().render()
}

/// A Prometheus recorder set up for kiq: its two histograms get [`BUCKETS`] (so
/// `histogram_quantile` works on them), and `labels` go on every sample (`taskctl worker`
/// sets `process`). Install it (`install_recorder`) before starting workers, call
/// `run_upkeep` on its handle every few seconds, and `render` it on a scrape; a program
/// with a `PrometheusBuilder` of its own gives it the same buckets.
///
/// [`BUCKETS`]: kiq_worker::metrics::BUCKETS
pub fn prometheus_builder(labels: &[(&str, &str)]) -> PrometheusBuilder {
    let mut b = PrometheusBuilder::new();
    for (k, v) in labels {
        b = b.add_global_label(*k, *v);
    }
    // Only an empty bucket list is refused, and BUCKETS is not empty.
    match b.set_buckets_for_metric(
        Matcher::Prefix("kiq_worker_task_".into()),
        &kiq_worker::metrics::BUCKETS,
    ) {
        Ok(b) => b,
        Err(_) => PrometheusBuilder::new(),
    }
}

/// Several text expositions as one: each metric family once (its `# HELP` and `# TYPE`
/// lines from the first part that has them), with every part's samples, in the order the
/// families first appear. For the processes of one `taskctl worker`, whose samples differ by
/// their `process` label: Prometheus refuses a family that appears twice in a scrape.
pub fn merge_expositions<S: AsRef<str>>(parts: &[S]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut families: HashMap<String, (Vec<String>, Vec<String>)> = HashMap::new();
    for part in parts {
        let mut current = String::new();
        for line in part.as_ref().lines() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            let header = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "));
            let family = match header {
                Some(rest) => rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                None if line.starts_with('#') => continue,
                None => {
                    // A sample belongs to the family whose header came last if it is one of
                    // its series (`x`, `x_bucket`, `x_sum`, ...); otherwise it is a family of
                    // its own name.
                    let name = line.split(['{', ' ']).next().unwrap_or_default();
                    let of_current = !current.is_empty()
                        && name.strip_prefix(current.as_str()).is_some_and(|rest| {
                            matches!(
                                rest,
                                "" | "_bucket" | "_sum" | "_count" | "_total" | "_created"
                            )
                        });
                    if of_current {
                        current.clone()
                    } else {
                        name.to_string()
                    }
                }
            };
            if family != current {
                current = family.clone();
            }
            let entry = families.entry(family.clone()).or_insert_with(|| {
                order.push(family.clone());
                (Vec::new(), Vec::new())
            });
            if header.is_some() {
                let kind = &line[..6];
                if !entry.0.iter().any(|h| h.starts_with(kind)) {
                    entry.0.push(line.to_string());
                }
            } else {
                entry.1.push(line.to_string());
            }
        }
    }
    let mut out = String::new();
    for name in order {
        if let Some((headers, samples)) = families.get(&name) {
            for l in headers.iter().chain(samples) {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

/// How a worker's `/readyz` decides: `Ok`, or why it is not ready.
pub type Readiness = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// What a worker listener's `/metrics` serves: the text, when asked.
pub type Render = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>> + Send + Sync,
>;

/// The listener of `taskctl worker --metrics-port` (no authentication: bind it to a private
/// address): `GET /metrics` (what `render` gives), `GET /healthz` (200 while the process
/// serves) and `GET /readyz` (200 when `ready` says so, else 503 with the reason).
pub async fn serve_worker_metrics(
    listener: tokio::net::TcpListener,
    render: Render,
    ready: Readiness,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let render = render.clone();
                async move { text(render().await) }
            }),
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_expositions_have_each_family_once_with_every_sample() {
        let a = "# HELP kiq_worker_in_flight Held.\n# TYPE kiq_worker_in_flight gauge\nkiq_worker_in_flight{process=\"0\"} 1\n\n# TYPE h histogram\nh_bucket{process=\"0\",le=\"1\"} 2\nh_sum{process=\"0\"} 0.5\nh_count{process=\"0\"} 2\n";
        let b = "# HELP kiq_worker_in_flight Held.\n# TYPE kiq_worker_in_flight gauge\nkiq_worker_in_flight{process=\"1\"} 3\n# TYPE h histogram\nh_bucket{process=\"1\",le=\"1\"} 1\nh_sum{process=\"1\"} 0.1\nh_count{process=\"1\"} 1\nlone 7\n";
        let merged = merge_expositions(&[a, b]);
        // A sample with no header is a family of its own, not part of the one before it.
        let c = "# TYPE g gauge\ng{process=\"0\"} 1\nlone 7\n";
        let d = "# TYPE g gauge\ng{process=\"1\"} 2\n";
        assert_eq!(
            merge_expositions(&[c, d]),
            "# TYPE g gauge\ng{process=\"0\"} 1\ng{process=\"1\"} 2\nlone 7\n"
        );
        assert_eq!(
            merged,
            "# HELP kiq_worker_in_flight Held.\n# TYPE kiq_worker_in_flight gauge\nkiq_worker_in_flight{process=\"0\"} 1\nkiq_worker_in_flight{process=\"1\"} 3\n# TYPE h histogram\nh_bucket{process=\"0\",le=\"1\"} 2\nh_sum{process=\"0\"} 0.5\nh_count{process=\"0\"} 2\nh_bucket{process=\"1\",le=\"1\"} 1\nh_sum{process=\"1\"} 0.1\nh_count{process=\"1\"} 1\nlone 7\n"
        );
    }

    #[test]
    fn process_metrics_are_rendered() {
        let text = process_metrics();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
    }
}
