//! A worker's Prometheus metrics: what it received, how tasks ended, how long they waited and
//! ran, what it holds, and how busy it is.
//!
//! Counted in memory by the execution path (no Redis traffic) into a [`Metrics`] registry the
//! worker owns (`Worker::builder(..).metrics(..)`; by default the process's, [`Metrics::process`]),
//! and rendered in Prometheus's text format by [`Metrics::render`]; `taskctl worker
//! --metrics-port` serves the process's on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

/// Histogram bucket bounds, in seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

#[derive(Debug, Clone, Default)]
struct PerTask {
    received: u64,
    succeeded: u64,
    failed: u64,
    retried: u64,
    deferred: u64,
    run: Histogram,
    wait: Histogram,
}

#[derive(Default)]
struct Registry {
    tasks: Mutex<BTreeMap<String, PerTask>>,
    redeliveries: AtomicU64,
    in_flight: AtomicUsize,
    executing: AtomicUsize,
    concurrency: AtomicUsize,
}

/// A metrics registry: cheap to clone (clones share the counts).
#[derive(Clone, Default)]
pub struct Metrics {
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

static PROCESS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

impl Metrics {
    /// The process's registry: what workers count into unless given their own, and what
    /// `taskctl worker --metrics-port` serves.
    pub fn process() -> Metrics {
        PROCESS.clone()
    }

    fn with_task(&self, name: &str, f: impl FnOnce(&mut PerTask)) {
        if let Ok(mut t) = self.registry.tasks.lock() {
            match t.get_mut(name) {
                Some(task) => f(task),
                // Allocates the name once per task name, not per message.
                None => f(t.entry(name.to_string()).or_default()),
            }
        }
    }
}

/// The label under which messages of tasks the worker does not link are counted.
pub const UNKNOWN_TASK: &str = "unknown";

/// How a task's attempt ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It succeeded.
    Succeeded,
    /// It failed for good.
    Failed,
    /// It failed and will be retried.
    Retried,
    /// A middleware deferred it.
    Deferred,
}

impl Metrics {
    /// A message of task `name` was received, after waiting `wait_s` seconds in its queue.
    pub fn received(&self, name: &str, wait_s: f64) {
        self.with_task(name, |t| {
            t.received += 1;
            t.wait.observe(wait_s.max(0.0));
        });
    }

    /// An attempt of task `name` ended after running `run_s` seconds.
    pub fn ended(&self, name: &str, how: Ended, run_s: Option<f64>) {
        self.with_task(name, |t| {
            match how {
                Ended::Succeeded => t.succeeded += 1,
                Ended::Failed => t.failed += 1,
                Ended::Retried => t.retried += 1,
                Ended::Deferred => t.deferred += 1,
            }
            if let Some(s) = run_s {
                t.run.observe(s.max(0.0));
            }
        });
    }

    /// `n` messages were taken over from a stopped worker.
    pub fn redelivered(&self, n: u64) {
        self.registry.redeliveries.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets this process's concurrency (the denominator of utilization).
    pub fn set_concurrency(&self, n: usize) {
        self.registry.concurrency.store(n, Ordering::Relaxed);
    }

    /// Sets how many messages this process holds.
    pub fn set_in_flight(&self, n: usize) {
        self.registry.in_flight.store(n, Ordering::Relaxed);
    }

    /// Counts a task as executing while the returned guard lives.
    pub fn executing(&self) -> ExecutingGuard {
        self.registry.executing.fetch_add(1, Ordering::Relaxed);
        ExecutingGuard(self.registry.clone())
    }
}

/// See [`Metrics::executing`].
pub struct ExecutingGuard(Arc<Registry>);

impl std::fmt::Debug for ExecutingGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExecutingGuard")
    }
}

impl Drop for ExecutingGuard {
    fn drop(&mut self) {
        self.0.executing.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A label value escaped for the text format.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A per-task counter: name, help, and how to read it.
type CounterDef = (&'static str, &'static str, fn(&PerTask) -> u64);
/// A per-task histogram: name, help, and which one.
type HistogramDef = (&'static str, &'static str, fn(&PerTask) -> &Histogram);

/// The process's metrics ([`Metrics::process`]), in Prometheus's text exposition format.
pub fn render() -> String {
    Metrics::process().render()
}

impl Metrics {
    /// Everything, in Prometheus's text exposition format.
    pub fn render(&self) -> String {
        let metrics = &self.registry;
        let mut out = String::new();
        let tasks = metrics.tasks.lock().map(|t| t.clone()).unwrap_or_default();
        let counters: [CounterDef; 5] = [
            (
                "kiq_tasks_received_total",
                "Messages received, per task.",
                |t| t.received,
            ),
            (
                "kiq_tasks_succeeded_total",
                "Attempts that succeeded.",
                |t| t.succeeded,
            ),
            (
                "kiq_tasks_failed_total",
                "Tasks that failed for good.",
                |t| t.failed,
            ),
            (
                "kiq_tasks_retried_total",
                "Attempts that failed and were retried.",
                |t| t.retried,
            ),
            (
                "kiq_tasks_deferred_total",
                "Tasks deferred by a middleware (rate limit, circuit breaker).",
                |t| t.deferred,
            ),
        ];
        for (name, help, get) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (task, t) in &tasks {
                let _ = writeln!(out, "{name}{{task=\"{}\"}} {}", escape(task), get(t));
            }
        }
        let hists: [HistogramDef; 2] = [
            ("kiq_task_duration_seconds", "How long attempts ran.", |t| {
                &t.run
            }),
            (
                "kiq_task_queue_wait_seconds",
                "How long messages waited in their queue before a worker received them.",
                |t| &t.wait,
            ),
        ];
        for (name, help, get) in hists {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (task, t) in &tasks {
                let h = get(t);
                let task = escape(task);
                for (bound, count) in BUCKETS.iter().zip(h.counts) {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{task=\"{task}\",le=\"{bound}\"}} {count}"
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{{task=\"{task}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(out, "{name}_sum{{task=\"{task}\"}} {}", h.sum);
                let _ = writeln!(out, "{name}_count{{task=\"{task}\"}} {}", h.count);
            }
        }
        let concurrency = metrics.concurrency.load(Ordering::Relaxed);
        let executing = metrics.executing.load(Ordering::Relaxed);
        let gauges = [
            (
                "kiq_worker_in_flight",
                "Messages this process holds (running or waiting for a slot).",
                metrics.in_flight.load(Ordering::Relaxed) as f64,
            ),
            (
                "kiq_worker_executing",
                "Tasks running now.",
                executing as f64,
            ),
            (
                "kiq_worker_concurrency",
                "Tasks this process runs at once at most.",
                concurrency as f64,
            ),
            (
                "kiq_worker_utilization",
                "Running tasks / concurrency.",
                if concurrency == 0 {
                    0.0
                } else {
                    executing as f64 / concurrency as f64
                },
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let _ = writeln!(
        out,
        "# HELP kiq_redeliveries_total Messages taken over from stopped workers.\n# TYPE kiq_redeliveries_total counter\nkiq_redeliveries_total {}",
        metrics.redeliveries.load(Ordering::Relaxed)
    );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.received("m::t\"x", 0.002);
        m.ended("m::t\"x", Ended::Succeeded, Some(0.03));
        m.ended("m::t\"x", Ended::Retried, Some(2.0));
        let text = m.render();
        assert!(
            text.contains("kiq_tasks_received_total{task=\"m::t\\\"x\"} 1"),
            "{text}"
        );
        assert!(text.contains("kiq_tasks_succeeded_total{task=\"m::t\\\"x\"} 1"));
        assert!(text.contains("kiq_task_duration_seconds_bucket{task=\"m::t\\\"x\",le=\"0.05\"} 1"));
        assert!(text.contains("kiq_task_duration_seconds_bucket{task=\"m::t\\\"x\",le=\"+Inf\"} 2"));
        assert!(text.contains("kiq_task_queue_wait_seconds_count{task=\"m::t\\\"x\"} 1"));
        assert!(text.contains("# TYPE kiq_worker_utilization gauge"));
    }
}
