//! A worker's metrics: what it received, how tasks ended, how long they waited and ran, what
//! it holds, and how busy it is.
//!
//! They go through the [`metrics`] facade (the `log` of metrics): into whatever recorder the
//! program installed (`metrics-exporter-prometheus`, StatsD, OpenTelemetry, ...), beside the
//! program's own metrics, or into a recorder given to one worker
//! ([`Metrics::with_recorder`], `Worker::builder(..).metrics(..)`). Install the recorder
//! before starting workers: handles taken before it exists record nothing. `taskctl worker
//! --metrics-port` installs a Prometheus recorder and serves it (see `kiq_server::metrics`).
//!
//! Names (Prometheus style; the task name is the `task` label):
//! `kiq_worker_tasks_{received,succeeded,failed,retried,deferred}_total`,
//! `kiq_worker_task_duration_seconds` and `kiq_worker_task_queue_wait_seconds` (histograms:
//! give them [`BUCKETS`]), `kiq_worker_redeliveries_total`, and the gauges
//! `kiq_worker_{in_flight,executing,concurrency,utilization}`.
//!
//! The execution path touches only handles cached per task name: a lock, a map lookup and a
//! few atomic operations per message, no Redis traffic.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};

/// Histogram bucket bounds, in seconds, for the two histograms.
pub const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// Every metric a worker records: name, kind, unit, help.
pub const DESCRIPTIONS: [(&str, Kind, Option<Unit>, &str); 12] = [
    (
        RECEIVED,
        Kind::Counter,
        None,
        "Messages received, per task.",
    ),
    (SUCCEEDED, Kind::Counter, None, "Attempts that succeeded."),
    (FAILED, Kind::Counter, None, "Tasks that failed for good."),
    (
        RETRIED,
        Kind::Counter,
        None,
        "Attempts that failed and were retried.",
    ),
    (
        DEFERRED,
        Kind::Counter,
        None,
        "Tasks deferred by a middleware (rate limit, circuit breaker).",
    ),
    (
        DURATION,
        Kind::Histogram,
        Some(Unit::Seconds),
        "How long attempts ran.",
    ),
    (
        WAIT,
        Kind::Histogram,
        Some(Unit::Seconds),
        "How long messages waited in their queue before a worker received them.",
    ),
    (
        REDELIVERIES,
        Kind::Counter,
        None,
        "Messages taken over from stopped workers.",
    ),
    (
        IN_FLIGHT,
        Kind::Gauge,
        None,
        "Messages this process holds (running or waiting for a slot).",
    ),
    (EXECUTING, Kind::Gauge, None, "Tasks running now."),
    (
        CONCURRENCY,
        Kind::Gauge,
        None,
        "Tasks this process runs at once at most.",
    ),
    (
        UTILIZATION,
        Kind::Gauge,
        None,
        "Running tasks / concurrency.",
    ),
];

const RECEIVED: &str = "kiq_worker_tasks_received_total";
const SUCCEEDED: &str = "kiq_worker_tasks_succeeded_total";
const FAILED: &str = "kiq_worker_tasks_failed_total";
const RETRIED: &str = "kiq_worker_tasks_retried_total";
const DEFERRED: &str = "kiq_worker_tasks_deferred_total";
const DURATION: &str = "kiq_worker_task_duration_seconds";
const WAIT: &str = "kiq_worker_task_queue_wait_seconds";
const REDELIVERIES: &str = "kiq_worker_redeliveries_total";
const IN_FLIGHT: &str = "kiq_worker_in_flight";
const EXECUTING: &str = "kiq_worker_executing";
const CONCURRENCY: &str = "kiq_worker_concurrency";
const UTILIZATION: &str = "kiq_worker_utilization";

/// What kind of metric a [`DESCRIPTIONS`] entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A counter.
    Counter,
    /// A gauge.
    Gauge,
    /// A histogram.
    Histogram,
}

/// The handles of one task name.
struct PerTask {
    received: Counter,
    succeeded: Counter,
    failed: Counter,
    retried: Counter,
    deferred: Counter,
    run: Histogram,
    wait: Histogram,
}

/// The process-wide handles.
struct Process {
    redeliveries: Counter,
    in_flight: Gauge,
    executing: Gauge,
    concurrency: Gauge,
    utilization: Gauge,
}

struct Inner {
    /// `None`: the global recorder.
    recorder: Option<Arc<dyn Recorder + Send + Sync>>,
    tasks: Mutex<foldhash::HashMap<String, Arc<PerTask>>>,
    process: OnceLock<Process>,
    executing: AtomicUsize,
    concurrency: AtomicUsize,
}

/// Where a worker counts: cheap to clone (clones share the handles).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(None)
    }
}

static PROCESS: OnceLock<Metrics> = OnceLock::new();

const METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

impl Metrics {
    fn new(recorder: Option<Arc<dyn Recorder + Send + Sync>>) -> Self {
        let m = Self {
            inner: Arc::new(Inner {
                recorder,
                tasks: Mutex::default(),
                process: OnceLock::new(),
                executing: AtomicUsize::new(0),
                concurrency: AtomicUsize::new(0),
            }),
        };
        m.describe();
        m
    }

    /// The process's: into the global recorder (what workers count into unless given their
    /// own).
    pub fn process() -> Metrics {
        PROCESS.get_or_init(Metrics::default).clone()
    }

    /// Into `recorder` rather than the global one.
    pub fn with_recorder(recorder: Arc<dyn Recorder + Send + Sync>) -> Metrics {
        Self::new(Some(recorder))
    }

    fn with<R>(&self, f: impl FnOnce(&dyn Recorder) -> R) -> R {
        match &self.inner.recorder {
            Some(r) => f(r.as_ref()),
            None => metrics::with_recorder(f),
        }
    }

    /// Gives the recorder each metric's help text and unit (`# HELP` lines).
    fn describe(&self) {
        self.with(|r| {
            for (name, kind, unit, help) in DESCRIPTIONS {
                let (name, help) = (KeyName::from_const_str(name), SharedString::const_str(help));
                match kind {
                    Kind::Counter => r.describe_counter(name, unit, help),
                    Kind::Gauge => r.describe_gauge(name, unit, help),
                    Kind::Histogram => r.describe_histogram(name, unit, help),
                }
            }
        });
    }

    fn task(&self, name: &str) -> Arc<PerTask> {
        let Ok(mut tasks) = self.inner.tasks.lock() else {
            return Arc::new(self.register_task(name));
        };
        if let Some(t) = tasks.get(name) {
            return t.clone();
        }
        // Registered once per task name, not per message.
        let t = Arc::new(self.register_task(name));
        tasks.insert(name.to_string(), t.clone());
        t
    }

    fn register_task(&self, name: &str) -> PerTask {
        let labels = || vec![Label::new("task", name.to_string())];
        self.with(|r| {
            let c = |n: &'static str| r.register_counter(&Key::from_parts(n, labels()), &METADATA);
            let h =
                |n: &'static str| r.register_histogram(&Key::from_parts(n, labels()), &METADATA);
            PerTask {
                received: c(RECEIVED),
                succeeded: c(SUCCEEDED),
                failed: c(FAILED),
                retried: c(RETRIED),
                deferred: c(DEFERRED),
                run: h(DURATION),
                wait: h(WAIT),
            }
        })
    }

    fn proc(&self) -> &Process {
        self.inner.process.get_or_init(|| {
            self.with(|r| {
                let g = |n: &'static str| r.register_gauge(&Key::from_static_name(n), &METADATA);
                Process {
                    redeliveries: r
                        .register_counter(&Key::from_static_name(REDELIVERIES), &METADATA),
                    in_flight: g(IN_FLIGHT),
                    executing: g(EXECUTING),
                    concurrency: g(CONCURRENCY),
                    utilization: g(UTILIZATION),
                }
            })
        })
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
        let t = self.task(name);
        t.received.increment(1);
        t.wait.record(wait_s.max(0.0));
    }

    /// An attempt of task `name` ended after running `run_s` seconds.
    pub fn ended(&self, name: &str, how: Ended, run_s: Option<f64>) {
        let t = self.task(name);
        match how {
            Ended::Succeeded => t.succeeded.increment(1),
            Ended::Failed => t.failed.increment(1),
            Ended::Retried => t.retried.increment(1),
            Ended::Deferred => t.deferred.increment(1),
        }
        if let Some(s) = run_s {
            t.run.record(s.max(0.0));
        }
    }

    /// `n` messages were taken over from a stopped worker.
    pub fn redelivered(&self, n: u64) {
        self.proc().redeliveries.increment(n);
    }

    /// Sets this process's concurrency (the denominator of utilization).
    pub fn set_concurrency(&self, n: usize) {
        self.inner.concurrency.store(n, Ordering::Relaxed);
        self.proc().concurrency.set(n as f64);
        self.update_utilization(self.inner.executing.load(Ordering::Relaxed));
    }

    /// Sets how many messages this process holds.
    pub fn set_in_flight(&self, n: usize) {
        self.proc().in_flight.set(n as f64);
    }

    /// Counts a task as executing while the returned guard lives.
    pub fn executing(&self) -> ExecutingGuard {
        let n = self.inner.executing.fetch_add(1, Ordering::Relaxed) + 1;
        self.proc().executing.increment(1.0);
        self.update_utilization(n);
        ExecutingGuard(self.clone())
    }

    fn update_utilization(&self, executing: usize) {
        let concurrency = self.inner.concurrency.load(Ordering::Relaxed);
        let u = if concurrency == 0 {
            0.0
        } else {
            executing as f64 / concurrency as f64
        };
        self.proc().utilization.set(u);
    }
}

/// See [`Metrics::executing`].
pub struct ExecutingGuard(Metrics);

impl std::fmt::Debug for ExecutingGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExecutingGuard")
    }
}

impl Drop for ExecutingGuard {
    fn drop(&mut self) {
        let m = &self.0;
        let n = m
            .inner
            .executing
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        m.proc().executing.decrement(1.0);
        m.update_utilization(n);
    }
}

/// A label value escaped for Prometheus's text format.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[test]
    fn records_per_task_and_process_wide() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let m = Metrics::with_recorder(Arc::new(recorder));
        m.set_concurrency(4);
        m.received("m::t\"x", 0.002);
        let busy = m.executing();
        m.ended("m::t\"x", Ended::Succeeded, Some(0.03));
        m.ended("m::t\"x", Ended::Retried, Some(2.0));
        let snapshot: std::collections::HashMap<String, DebugValue> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(k, _, _, v)| {
                let key = k.key();
                let labels: Vec<String> = key
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect();
                (format!("{}{{{}}}", key.name(), labels.join(",")), v)
            })
            .collect();
        let counter = |k: &str| match snapshot.get(k) {
            Some(DebugValue::Counter(n)) => *n,
            other => panic!("{k}: {other:?} in {snapshot:?}"),
        };
        assert_eq!(counter("kiq_worker_tasks_received_total{task=m::t\"x}"), 1);
        assert_eq!(counter("kiq_worker_tasks_succeeded_total{task=m::t\"x}"), 1);
        assert_eq!(counter("kiq_worker_tasks_retried_total{task=m::t\"x}"), 1);
        match snapshot.get("kiq_worker_task_duration_seconds{task=m::t\"x}") {
            Some(DebugValue::Histogram(v)) => assert_eq!(v.len(), 2),
            other => panic!("{other:?}"),
        }
        match snapshot.get("kiq_worker_utilization{}") {
            Some(DebugValue::Gauge(u)) => assert_eq!(u.into_inner(), 0.25),
            other => panic!("{other:?}"),
        }
        drop(busy);
    }
}
