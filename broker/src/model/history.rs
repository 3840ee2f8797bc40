//! Throughput history: counters per minute and per hour, per queue and per task name, kept in
//! Redis by the completion batches (see docs/redis-data-model.md, `{kiq}:history:*`).
//!
//! This module holds the pure parts: which counter a finished task adds to, how a bucket's hash
//! fields are named and read back, and percentiles from the coarse run-time histogram.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::record::TaskState;

/// Upper bounds (ms, inclusive) of the run-time and wait-time histogram buckets; a last bucket
/// counts everything above the last bound.
pub const BUCKETS_MS: [u64; 12] = [
    1, 5, 10, 25, 50, 100, 250, 500, 1_000, 5_000, 30_000, 300_000,
];

/// How many buckets a histogram has (the bounds, then one for anything longer).
pub const HIST_LEN: usize = BUCKETS_MS.len() + 1;

/// How long per-minute buckets are kept.
pub const MINUTE_RETENTION_S: u64 = 48 * 3600;

/// How long per-hour buckets are kept.
pub const HOUR_RETENTION_S: u64 = 30 * 24 * 3600;

/// The bucket `ms` falls in.
pub fn bucket_of(ms: u64) -> usize {
    BUCKETS_MS.partition_point(|bound| *bound < ms)
}

/// The counters of one queue or task name over one interval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Counters {
    /// Tasks that finished `succeeded`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub succeeded: u64,
    /// Tasks that finished `failed`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed: u64,
    /// Tasks that finished `cancelled`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cancelled: u64,
    /// Tasks that finished `dead` (failed and dead-lettered).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dead: u64,
    /// Attempts that failed and were scheduled to run again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retried: u64,
    /// Finished tasks that ran (those with a start time): what `wait_ms` and `run_ms` sum over.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ran: u64,
    /// Summed time from dispatch to the last attempt's start, ms.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wait_ms: u64,
    /// Summed run time of the last attempts, ms.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub run_ms: u64,
    /// How many runs fell in each bucket of [`BUCKETS_MS`] (empty: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub run_hist: Vec<u64>,
    /// How many waits fell in each bucket of [`BUCKETS_MS`] (empty: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wait_hist: Vec<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Adds `n` to bucket `i` of `hist` (made full-length on first use); false past the last.
fn hist_add(hist: &mut Vec<u64>, i: usize, n: u64) -> bool {
    if i >= HIST_LEN {
        return false;
    }
    if hist.is_empty() {
        hist.resize(HIST_LEN, 0);
    }
    hist[i] = hist[i].saturating_add(n);
    true
}

impl Counters {
    /// Adds `n` to the counter a bucket hash names `field` (`succeeded`, `r3`, `w0`...);
    /// returns whether the name was known (unknown ones, from newer versions, are skipped).
    pub fn add_field(&mut self, field: &str, n: u64) -> bool {
        let slot = match field {
            "succeeded" => &mut self.succeeded,
            "failed" => &mut self.failed,
            "cancelled" => &mut self.cancelled,
            "dead" => &mut self.dead,
            "retried" => &mut self.retried,
            "ran" => &mut self.ran,
            "wait_ms" => &mut self.wait_ms,
            "run_ms" => &mut self.run_ms,
            _ => {
                let (hist, idx) = match (field.strip_prefix('r'), field.strip_prefix('w')) {
                    (Some(i), _) => (&mut self.run_hist, i),
                    (_, Some(i)) => (&mut self.wait_hist, i),
                    _ => return false,
                };
                let Ok(i) = idx.parse::<usize>() else {
                    return false;
                };
                return hist_add(hist, i, n);
            }
        };
        *slot = slot.saturating_add(n);
        true
    }

    /// Counts one task that finished in `state` (the counter [`Counters::add_field`] names
    /// `state.as_str()`); returns false, counting nothing, for a state that is not final.
    pub(crate) fn count_final(&mut self, state: TaskState) -> bool {
        let slot = match state {
            TaskState::Succeeded => &mut self.succeeded,
            TaskState::Failed => &mut self.failed,
            TaskState::Cancelled => &mut self.cancelled,
            TaskState::Dead => &mut self.dead,
            _ => return false,
        };
        *slot = slot.saturating_add(1);
        true
    }

    /// Counts one finished task that ran, after waiting `wait_ms` and running `run_ms`: `ran`,
    /// and the two sums (not the histograms: see [`Counters::count_run`]).
    pub(crate) fn count_ran(&mut self, wait_ms: u64, run_ms: u64) {
        self.ran = self.ran.saturating_add(1);
        self.wait_ms = self.wait_ms.saturating_add(wait_ms);
        self.run_ms = self.run_ms.saturating_add(run_ms);
    }

    /// Adds `n` runs to run-time histogram bucket `bucket` (as [`bucket_of`] gives it; the
    /// field `r<bucket>`); returns false, counting nothing, past the last bucket.
    pub(crate) fn count_run(&mut self, bucket: usize, n: u64) -> bool {
        hist_add(&mut self.run_hist, bucket, n)
    }

    /// Adds `n` waits to wait-time histogram bucket `bucket` (as [`bucket_of`] gives it; the
    /// field `w<bucket>`); returns false, counting nothing, past the last bucket.
    pub(crate) fn count_wait(&mut self, bucket: usize, n: u64) -> bool {
        hist_add(&mut self.wait_hist, bucket, n)
    }

    /// Adds `other` into these.
    pub fn merge(&mut self, other: &Counters) {
        self.succeeded = self.succeeded.saturating_add(other.succeeded);
        self.failed = self.failed.saturating_add(other.failed);
        self.cancelled = self.cancelled.saturating_add(other.cancelled);
        self.dead = self.dead.saturating_add(other.dead);
        self.retried = self.retried.saturating_add(other.retried);
        self.ran = self.ran.saturating_add(other.ran);
        self.wait_ms = self.wait_ms.saturating_add(other.wait_ms);
        self.run_ms = self.run_ms.saturating_add(other.run_ms);
        for (mine, theirs) in [
            (&mut self.run_hist, &other.run_hist),
            (&mut self.wait_hist, &other.wait_hist),
        ] {
            if theirs.is_empty() {
                continue;
            }
            if mine.is_empty() {
                mine.resize(HIST_LEN, 0);
            }
            for (m, t) in mine.iter_mut().zip(theirs) {
                *m = m.saturating_add(*t);
            }
        }
    }

    /// The eight plain counters by the field names [`Counters::add_field`] takes, in a fixed
    /// order (the histograms not included).
    pub(crate) fn totals(&self) -> [(&'static str, u64); 8] {
        [
            ("succeeded", self.succeeded),
            ("failed", self.failed),
            ("cancelled", self.cancelled),
            ("dead", self.dead),
            ("retried", self.retried),
            ("ran", self.ran),
            ("wait_ms", self.wait_ms),
            ("run_ms", self.run_ms),
        ]
    }

    /// Tasks that finished, in any final state.
    pub fn finished(&self) -> u64 {
        self.succeeded
            .saturating_add(self.failed)
            .saturating_add(self.cancelled)
            .saturating_add(self.dead)
    }

    /// The run time under which a fraction `p` (0..=1) of runs finished, as the upper bound of
    /// the histogram bucket it falls in (`None`: no runs; past the last bound: the last bound).
    pub fn run_percentile(&self, p: f64) -> Option<u64> {
        percentile(&self.run_hist, p)
    }
}

/// Whether a bucket hash's counter name is one [`Counters::add_field`] knows.
fn is_counter(name: &str) -> bool {
    match name {
        "succeeded" | "failed" | "cancelled" | "dead" | "retried" | "ran" | "wait_ms"
        | "run_ms" => true,
        _ => name
            .strip_prefix('r')
            .or_else(|| name.strip_prefix('w'))
            .and_then(|i| i.parse::<usize>().ok())
            .is_some_and(|i| i < HIST_LEN),
    }
}

/// The upper bound of the bucket holding quantile `p` of `hist` (see
/// [`Counters::run_percentile`]).
pub fn percentile(hist: &[u64], p: f64) -> Option<u64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((p.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0u64;
    for (i, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(BUCKETS_MS[i.min(BUCKETS_MS.len() - 1)]);
        }
    }
    BUCKETS_MS.last().copied()
}

/// The hash field of `counter` for queue `queue` (`q:<queue>:<counter>`).
pub fn queue_field(queue: &str, counter: &str) -> String {
    format!("q:{queue}:{counter}")
}

/// The hash field of `counter` for task `task` (`t:<task>:<counter>`; task names may hold
/// `:`, counter names never do).
pub fn task_field(task: &str, counter: &str) -> String {
    format!("t:{task}:{counter}")
}

/// One interval's counters, per queue and per task name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryPoint {
    /// When the interval starts, ms since the epoch.
    pub t_ms: u64,
    /// Per queue (partitions and priority lanes folded into their queue).
    pub queues: BTreeMap<String, Counters>,
    /// Per task name.
    pub tasks: BTreeMap<String, Counters>,
}

impl HistoryPoint {
    /// Adds a bucket hash's fields (as [`queue_field`] and [`task_field`] name them) into this
    /// point. Fields of another shape are skipped.
    pub fn add_hash<'a>(&mut self, fields: impl IntoIterator<Item = (&'a str, u64)>) {
        for (field, n) in fields {
            let (map, rest) = match (field.strip_prefix("q:"), field.strip_prefix("t:")) {
                (Some(rest), _) => (&mut self.queues, rest),
                (_, Some(rest)) => (&mut self.tasks, rest),
                _ => continue,
            };
            let Some((name, counter)) = rest.rsplit_once(':') else {
                continue;
            };
            if !is_counter(counter) {
                continue;
            }
            // No allocation for a name already there (a read adds up thousands of fields).
            let c = match map.get_mut(name) {
                Some(c) => c,
                None => map.entry(name.to_string()).or_default(),
            };
            c.add_field(counter, n);
        }
    }
}

/// Counters over a time range, one point per step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct History {
    /// The first point's start, ms (the range's start, rounded down to the step).
    pub from_ms: u64,
    /// The range's end, ms.
    pub to_ms: u64,
    /// The interval of each point, seconds.
    pub step_s: u64,
    /// The histograms' bucket bounds, ms ([`BUCKETS_MS`]).
    pub run_buckets_ms: Vec<u64>,
    /// Every interval of the range, oldest first (empty maps where nothing finished).
    pub points: Vec<HistoryPoint>,
}

/// The latest failure of a task name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LastFailure {
    /// The failed task's id.
    pub id: String,
    /// When it failed, ms since the epoch.
    pub at_ms: u64,
    /// Its final state: `failed` or `dead`.
    pub state: String,
    /// The error's message (cut to 500 bytes).
    pub error: String,
}

/// One task name's numbers over a range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskTotals {
    /// The task name.
    pub task: String,
    /// Its counters summed over the range.
    #[serde(flatten)]
    pub counters: Counters,
    /// Tasks finished per minute over the range.
    pub per_minute: f64,
    /// Failed and dead over finished (cancelled included in finished; 0 to 1; 0 when none
    /// finished).
    pub failure_rate: f64,
    /// Median run time (the upper bound of its histogram bucket), ms.
    pub run_p50_ms: Option<u64>,
    /// 95th percentile run time (the upper bound of its histogram bucket), ms.
    pub run_p95_ms: Option<u64>,
    /// Its latest failure, if one is remembered.
    pub last_failure: Option<LastFailure>,
}

impl TaskTotals {
    /// `task`'s numbers from `counters` summed over `minutes` minutes.
    pub fn new(
        task: String,
        counters: Counters,
        minutes: f64,
        last_failure: Option<LastFailure>,
    ) -> Self {
        let finished = counters.finished();
        let failed = counters.failed + counters.dead;
        TaskTotals {
            task,
            per_minute: if minutes > 0.0 {
                finished as f64 / minutes
            } else {
                0.0
            },
            failure_rate: if finished == 0 {
                0.0
            } else {
                failed as f64 / finished as f64
            },
            run_p50_ms: counters.run_percentile(0.5),
            run_p95_ms: counters.run_percentile(0.95),
            counters,
            last_failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(2), 1);
        assert_eq!(bucket_of(5), 1);
        assert_eq!(bucket_of(300_000), BUCKETS_MS.len() - 1);
        assert_eq!(bucket_of(300_001), BUCKETS_MS.len());
        assert_eq!(bucket_of(u64::MAX), HIST_LEN - 1);
    }

    #[test]
    fn a_bucket_hash_reads_back_per_queue_and_task() {
        let mut p = HistoryPoint::default();
        p.add_hash([
            (queue_field("mail", "succeeded").as_str(), 3),
            (task_field("app::send", "succeeded").as_str(), 2),
            (task_field("app::send", "r4").as_str(), 2),
            (task_field("app::other", "failed").as_str(), 1),
            ("q:mail:from_the_future", 9),
            ("garbage", 1),
            ("t:x:r99", 1),
        ]);
        assert_eq!(p.queues["mail"].succeeded, 3);
        assert_eq!(p.tasks["app::send"].succeeded, 2);
        assert_eq!(p.tasks["app::send"].run_hist[4], 2);
        assert_eq!(p.tasks["app::other"].failed, 1);
        assert!(!p.tasks.contains_key("x"));
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut c = Counters::default();
        assert_eq!(c.run_percentile(0.5), None);
        c.add_field(&format!("r{}", bucket_of(3)), 90);
        c.add_field(&format!("r{}", bucket_of(700)), 10);
        assert_eq!(c.run_percentile(0.5), Some(5));
        assert_eq!(c.run_percentile(0.9), Some(5));
        assert_eq!(c.run_percentile(0.95), Some(1_000));
        // Past the last bound: the last bound.
        let mut slow = Counters::default();
        slow.add_field(&format!("r{}", HIST_LEN - 1), 1);
        assert_eq!(slow.run_percentile(0.5), Some(300_000));
    }

    /// The direct counters add what the named fields add.
    #[test]
    fn direct_counts_match_the_named_fields() {
        let mut direct = Counters::default();
        let mut named = Counters::default();
        for state in [
            TaskState::Succeeded,
            TaskState::Failed,
            TaskState::Cancelled,
            TaskState::Dead,
            TaskState::Succeeded,
        ] {
            assert!(direct.count_final(state));
            assert!(named.add_field(state.as_str(), 1));
        }
        for state in [TaskState::Pending, TaskState::Running, TaskState::Retrying] {
            assert!(!direct.count_final(state));
        }
        for (wait, run) in [(0, 3), (40, 700), (2, 400_000)] {
            direct.count_ran(wait, run);
            assert!(direct.count_run(bucket_of(run), 1));
            assert!(direct.count_wait(bucket_of(wait), 1));
            for (field, n) in [
                ("ran".to_string(), 1),
                ("wait_ms".to_string(), wait),
                ("run_ms".to_string(), run),
                (format!("r{}", bucket_of(run)), 1),
                (format!("w{}", bucket_of(wait)), 1),
            ] {
                assert!(named.add_field(&field, n));
            }
        }
        assert!(!direct.count_run(HIST_LEN, 1));
        assert!(!direct.count_wait(HIST_LEN, 1));
        assert_eq!(direct, named);
        assert_eq!(direct.run_hist.len(), HIST_LEN);
    }

    #[test]
    fn totals_rate_failures_over_finished() {
        let c = Counters {
            succeeded: 6,
            failed: 1,
            dead: 1,
            ..Default::default()
        };
        let t = TaskTotals::new("t".into(), c, 4.0, None);
        assert_eq!(t.per_minute, 2.0);
        assert_eq!(t.failure_rate, 0.25);
        let none = TaskTotals::new("t".into(), Counters::default(), 0.0, None);
        assert_eq!((none.per_minute, none.failure_rate), (0.0, 0.0));
    }
}
