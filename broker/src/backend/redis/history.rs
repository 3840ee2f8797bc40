//! The throughput history: what a completion batch adds to it (in the batch's own pipeline, no
//! round trip of its own), and reading it back for charts and the per-task table.

use std::collections::{BTreeMap, HashMap};

use crate::consumer::completion::{End, StoredRecord, Write};
use crate::error::BrokerError;
use crate::model::history::{
    bucket_of, queue_field, task_field, Counters, History, HistoryPoint, LastFailure, TaskTotals,
    BUCKETS_MS, HOUR_RETENTION_S, MINUTE_RETENTION_S,
};
use crate::model::partition;
use crate::model::record::TaskState;

use super::complete::finished_at;
use super::connection::Batch;
use super::scripts::{history_add_keys, HISTORY_ADD};
use super::RedisBackend;

/// Ten minutes: the span of a rollup of minute buckets.
const ROLLUP_S: u64 = 600;

/// A ten-minute window is rolled up once it ended this long ago: completion batches count
/// into the minute they are written in, so a window's minutes are final a moment after it.
const ROLLUP_SETTLE_S: u64 = 120;

/// The field that marks a hash as a made rollup (an empty window's rollup is not an absent
/// one). Not of the `q:`/`t:` shapes, so readers skip it.
const ROLLUP_MARK: &str = "rolled";

/// A history read spans at most this many points.
pub(crate) const MAX_POINTS: u64 = 2_000;

/// Error messages kept with a task name's latest failure are cut to this many bytes.
const LAST_FAILURE_MESSAGE_MAX: usize = 500;

/// What one write adds to the counters, the history's and the cumulative stats' alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tally {
    /// An attempt failed and will run again: `retried`.
    Retried,
    /// The task finished in `state` (a final one); `times` (wait, run; ms) when it ran.
    Finished {
        /// The final state.
        state: TaskState,
        /// Its queue wait and run time, ms, when it has a start time.
        times: Option<(u64, u64)>,
    },
}

impl Tally {
    /// What `w` counts, with the record it is about: retried attempts, and final records of
    /// messages that ended (done or dead). Everything else counts nothing.
    pub(super) fn of(w: &Write) -> Option<(&StoredRecord, Tally)> {
        let Write::Completion(c) = w else { return None };
        let task = c.task.as_ref()?;
        let r = &task.record;
        match &c.end {
            End::Retry { .. } => Some((task, Tally::Retried)),
            End::Done | End::Dead(_) if r.state.is_final() => {
                let times = r.started_at_ms.map(|started| {
                    (
                        started.saturating_sub(r.enqueued_at_ms),
                        finished_at(r).saturating_sub(started),
                    )
                });
                Some((
                    task,
                    Tally::Finished {
                        state: r.state,
                        times,
                    },
                ))
            }
            _ => None,
        }
    }

    /// Adds this to `c` in place; with `histograms`, the run and wait times to their buckets
    /// too.
    pub(super) fn add_to(self, c: &mut Counters, histograms: bool) {
        match self {
            Tally::Retried => c.retried = c.retried.saturating_add(1),
            Tally::Finished { state, times } => {
                c.count_final(state);
                if let Some((wait, run)) = times {
                    c.count_ran(wait, run);
                    if histograms {
                        c.count_run(bucket_of(run), 1);
                        c.count_wait(bucket_of(wait), 1);
                    }
                }
            }
        }
    }
}

/// Values by key, in the order keys were first seen. The key used last is checked before any
/// hashing: a batch's completions mostly come in runs of one queue and one task name.
pub(super) struct Grouped<K, V> {
    rows: Vec<(K, V)>,
    index: HashMap<K, usize>,
    last: usize,
}

impl<K: Copy + Eq + std::hash::Hash, V: Default> Grouped<K, V> {
    /// Empty.
    pub(super) fn new() -> Self {
        Self {
            rows: Vec::new(),
            index: HashMap::new(),
            last: 0,
        }
    }

    /// The value of `key`, made (default) if new.
    pub(super) fn get(&mut self, key: K) -> &mut V {
        let hit = matches!(self.rows.get(self.last), Some((k, _)) if *k == key);
        if !hit {
            self.last = match self.index.get(&key) {
                Some(i) => *i,
                None => {
                    self.rows.push((key, V::default()));
                    self.index.insert(key, self.rows.len() - 1);
                    self.rows.len() - 1
                }
            };
        }
        &mut self.rows[self.last].1
    }

    /// Whether no key was seen.
    pub(super) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The keys and their values, in the order keys were first seen.
    pub(super) fn into_rows(self) -> Vec<(K, V)> {
        self.rows
    }
}

/// Adds `batch`'s counters to the current minute's and hour's buckets (one script call), and
/// each failing task name's latest failure (one `HSET`). Counters go to the task's queue (its
/// partitions and lanes folded in) and its task name.
pub(crate) fn add_history(pipe: &mut Batch, keys: &crate::Keys, batch: &[Write], now_ms: u64) {
    let (fields, failures) = history_fields(batch);
    add_counts(pipe, keys, now_ms, &fields);
    if !failures.is_empty() {
        let key = keys.last_failures();
        let mut hset = redis::cmd("HSET");
        hset.arg(&key);
        for (task, bytes) in failures {
            hset.arg(task).arg(bytes);
        }
        pipe.add(&key, hset);
    }
}

/// Failed task names with their encoded [`LastFailure`], in the batch's order.
type Failures<'a> = Vec<(&'a str, Vec<u8>)>;

/// What [`add_history`] writes for `batch`: the bucket-hash fields with their increments
/// (non-zero ones only), and each failed task name's encoded [`LastFailure`].
///
/// Counted in place, per queue (as read: physical, folded into the logical queue once per
/// batch) and per task name: no temporaries per task.
fn history_fields(batch: &[Write]) -> (Vec<(String, u64)>, Failures<'_>) {
    let mut queues: Grouped<&str, Counters> = Grouped::new();
    let mut tasks: Grouped<&str, Counters> = Grouped::new();
    let mut failures: Vec<(&str, Vec<u8>)> = Vec::new();
    for (task, tally) in batch.iter().filter_map(Tally::of) {
        let r = &task.record;
        tally.add_to(queues.get(r.queue.as_str()), true);
        tally.add_to(tasks.get(r.task.as_str()), true);
        if matches!(r.state, TaskState::Failed | TaskState::Dead)
            && matches!(tally, Tally::Finished { .. })
        {
            let mut error = r
                .failure
                .as_ref()
                .map(|f| f.message.clone())
                .unwrap_or_default();
            if error.len() > LAST_FAILURE_MESSAGE_MAX {
                let mut cut = LAST_FAILURE_MESSAGE_MAX;
                while !error.is_char_boundary(cut) {
                    cut -= 1;
                }
                error.truncate(cut);
            }
            let last = LastFailure {
                id: task.id.clone(),
                at_ms: finished_at(r),
                state: r.state.as_str().to_string(),
                error,
            };
            if let Ok(bytes) = crate::codec::encode(&last) {
                failures.push((r.task.as_str(), bytes));
            }
        }
    }
    if queues.is_empty() {
        return (Vec::new(), failures);
    }
    // Partitions and lanes fold into their queue: once per queue read, not per task.
    let mut logical: Grouped<&str, Counters> = Grouped::new();
    for (queue, c) in queues.into_rows() {
        logical.get(partition::logical(queue)).merge(&c);
    }
    let rows: Vec<_> = logical
        .into_rows()
        .into_iter()
        .map(|(name, c)| (true, name, c))
        .chain(
            tasks
                .into_rows()
                .into_iter()
                .map(|(name, c)| (false, name, c)),
        )
        .collect();
    let mut fields: Vec<(String, u64)> = Vec::with_capacity(rows.len() * 8);
    for (is_queue, name, c) in &rows {
        let field = |counter: &str| {
            if *is_queue {
                queue_field(name, counter)
            } else {
                task_field(name, counter)
            }
        };
        for (counter, n) in c.totals() {
            if n > 0 {
                fields.push((field(counter), n));
            }
        }
        for (prefix, hist) in [("r", &c.run_hist), ("w", &c.wait_hist)] {
            for (i, n) in hist.iter().enumerate().filter(|(_, n)| **n > 0) {
                fields.push((field(&format!("{prefix}{i}")), *n));
            }
        }
    }
    (fields, failures)
}

/// Adds `fields` (bucket-hash field names, as [`queue_field`] and [`task_field`] make them,
/// with their increments) to the history at `now_ms`: one `lua/history_add.lua` call.
pub(crate) fn add_counts(
    pipe: &mut Batch,
    keys: &crate::Keys,
    now_ms: u64,
    fields: &[(String, u64)],
) {
    if fields.is_empty() {
        return;
    }
    let k = history_add_keys(keys, now_ms / 1000);
    let mut cmd = HISTORY_ADD.eval(&k);
    cmd.arg(MINUTE_RETENTION_S + 60)
        .arg(HOUR_RETENTION_S + 3600);
    for (f, n) in fields {
        cmd.arg(f).arg(*n);
    }
    pipe.add(&k[0], cmd);
}

impl RedisBackend {
    /// The counters from `from_ms` to `to_ms`, one point per `step_s` seconds (rounded up to
    /// whole minutes, or whole hours where minute buckets are no longer kept).
    pub(crate) async fn history(
        &self,
        from_ms: u64,
        to_ms: u64,
        step_s: u64,
    ) -> Result<History, BrokerError> {
        if to_ms <= from_ms {
            return Err(BrokerError::Invalid(format!(
                "the range's end ({to_ms}) must come after its start ({from_ms})"
            )));
        }
        let now_ms = crate::envelope::now_ms();
        let now_s = now_ms / 1000;
        // Nothing is kept before the hour buckets' retention, nor written after now: the
        // range is cut to what can hold data (which bounds the buckets read), and the step
        // to 30 days.
        let from_ms = from_ms.max(now_ms.saturating_sub((HOUR_RETENTION_S + 3600) * 1000));
        let to_ms = to_ms.min(now_ms.saturating_add(3_600_000));
        let step_s = step_s.clamp(1, HOUR_RETENTION_S);
        if to_ms <= from_ms {
            return Err(BrokerError::Invalid(format!(
                "no history is kept in that range: it is kept for {} days",
                HOUR_RETENTION_S / 86_400
            )));
        }
        // Minute buckets while the whole range is within their retention and the step is
        // under an hour; hour buckets otherwise.
        let unit = if step_s < 3600 && from_ms / 1000 + MINUTE_RETENTION_S >= now_s {
            60
        } else {
            3600
        };
        let step_s = step_s.div_ceil(unit) * unit;
        let from_s = from_ms / 1000 / step_s * step_s;
        let to_s = to_ms.div_ceil(1000);
        let points = (to_s - from_s).div_ceil(step_s);
        if points > MAX_POINTS {
            return Err(BrokerError::Invalid(format!(
                "{points} points of {step_s} s: at most {MAX_POINTS} (choose a larger step)"
            )));
        }
        let mut out: Vec<HistoryPoint> = (0..points)
            .map(|i| HistoryPoint {
                t_ms: (from_s + i * step_s) * 1000,
                ..Default::default()
            })
            .collect();
        if unit == 60 && step_s % ROLLUP_S == 0 {
            // Steps of whole ten minutes read ten-minute rollups: a tenth of the hashes.
            let windows: Vec<u64> = (from_s..to_s).step_by(ROLLUP_S as usize).collect();
            let sums = self.rollups(&windows, now_s).await?;
            for (window, fields) in windows.iter().zip(&sums) {
                let i = ((window - from_s) / step_s) as usize;
                if let Some(p) = out.get_mut(i) {
                    p.add_hash(fields.iter().map(|(f, n)| (f.as_str(), *n)));
                }
            }
        } else {
            let buckets: Vec<u64> = (from_s..to_s).step_by(unit as usize).collect();
            let keys: Vec<String> = buckets
                .iter()
                .map(|b| self.keys.history(unit, *b))
                .collect();
            let hashes = self.hashes(&keys).await?;
            for (bucket, reply) in buckets.iter().zip(&hashes) {
                let i = ((bucket - from_s) / step_s) as usize;
                if let Some(p) = out.get_mut(i) {
                    p.add_hash(hash_fields(reply));
                }
            }
        }
        Ok(History {
            from_ms: from_s * 1000,
            to_ms,
            step_s,
            run_buckets_ms: BUCKETS_MS.to_vec(),
            points: out,
        })
    }

    /// Every task name's numbers over the last `range_s` seconds, busiest first, with its
    /// latest failure.
    pub(crate) async fn task_totals(&self, range_s: u64) -> Result<Vec<TaskTotals>, BrokerError> {
        let to_ms = crate::envelope::now_ms();
        let from_ms = to_ms.saturating_sub(range_s.saturating_mul(1000));
        // Summed from minute buckets over short ranges, from hour buckets (whole hours, the
        // current one included) over longer ones: at most a few hundred hashes either way.
        let unit = if range_s <= 6 * 3600 { 60 } else { 3600 };
        let h = self.history(from_ms, to_ms, unit).await?;
        let mut sums: BTreeMap<String, Counters> = BTreeMap::new();
        for p in &h.points {
            for (task, c) in &p.tasks {
                sums.entry(task.clone()).or_default().merge(c);
            }
        }
        let failures: HashMap<String, Vec<u8>> = self
            .pool()
            .query(redis::cmd("HGETALL").arg(self.keys.last_failures()))
            .await?;
        let minutes = range_s as f64 / 60.0;
        let mut out: Vec<TaskTotals> = sums
            .into_iter()
            .map(|(task, c)| {
                let last = failures
                    .get(&task)
                    .and_then(|b| crate::codec::decode::<LastFailure>(b).ok());
                TaskTotals::new(task, c, minutes, last)
            })
            .collect();
        out.sort_by(|a, b| {
            b.counters
                .finished()
                .cmp(&a.counters.finished())
                .then_with(|| a.task.cmp(&b.task))
        });
        Ok(out)
    }

    /// The counters of each ten-minute window starting at `windows` (seconds), summed from
    /// their minute buckets. A window that ended over [`ROLLUP_SETTLE_S`] ago is read from its
    /// rollup (`{kiq}:history:t:<start>`), which the first reader makes from the minutes and
    /// stores for the minutes' retention; later reads take one hash instead of ten. (Several
    /// servers making the same rollup write the same sums.) Windows still open are summed from
    /// their minutes each time.
    async fn rollups(
        &self,
        windows: &[u64],
        now_s: u64,
    ) -> Result<Vec<Vec<(String, u64)>>, BrokerError> {
        let settled = |w: u64| w + ROLLUP_S + ROLLUP_SETTLE_S <= now_s;
        let stored_keys: Vec<String> = windows
            .iter()
            .filter(|w| settled(**w))
            .map(|w| self.keys.history(ROLLUP_S, *w))
            .collect();
        let mut stored = self.hashes(&stored_keys).await?.into_iter();
        let mut out: Vec<Option<Vec<(String, u64)>>> = Vec::with_capacity(windows.len());
        for w in windows {
            let done = if settled(*w) {
                stored.next().and_then(|reply| {
                    let fields: Vec<(String, u64)> = hash_fields(&reply)
                        .map(|(f, n)| (f.to_string(), n))
                        .collect();
                    fields
                        .iter()
                        .any(|(f, _)| f == ROLLUP_MARK)
                        .then_some(fields)
                })
            } else {
                None
            };
            out.push(done);
        }
        // The rest from their minutes, in one pipelined read.
        let missing: Vec<u64> = windows
            .iter()
            .zip(&out)
            .filter(|(_, o)| o.is_none())
            .map(|(w, _)| *w)
            .collect();
        let minute_keys: Vec<String> = missing
            .iter()
            .flat_map(|w| (0..ROLLUP_S / 60).map(move |m| w + m * 60))
            .map(|m| self.keys.history(60, m))
            .collect();
        let minutes = self.hashes(&minute_keys).await?;
        let mut writes = self.pool().new_batch();
        let mut made = minutes.chunks((ROLLUP_S / 60) as usize).zip(&missing);
        for slot in out.iter_mut().filter(|o| o.is_none()) {
            let Some((chunk, w)) = made.next() else { break };
            let mut sums: BTreeMap<&str, u64> = BTreeMap::new();
            for reply in chunk {
                for (f, n) in hash_fields(reply) {
                    let s = sums.entry(f).or_default();
                    *s = s.saturating_add(n);
                }
            }
            if settled(*w) {
                let key = self.keys.history(ROLLUP_S, *w);
                let mut hset = redis::cmd("HSET");
                hset.arg(&key).arg(ROLLUP_MARK).arg(1);
                for (f, n) in &sums {
                    hset.arg(*f).arg(*n);
                }
                writes.add(&key, hset);
                let ttl = (w + MINUTE_RETENTION_S + ROLLUP_S)
                    .saturating_sub(now_s)
                    .max(1);
                writes.add(&key, redis::cmd("EXPIRE").arg(&key).arg(ttl).clone());
            }
            *slot = Some(sums.into_iter().map(|(f, n)| (f.to_string(), n)).collect());
        }
        self.pool().batch(writes).await?;
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Makes the rollups of the three ten-minute windows that settled last, where missing
    /// (three reads when they exist).
    pub(crate) async fn roll_up_recent(&self) -> Result<(), BrokerError> {
        let now_s = crate::envelope::now_ms() / 1000;
        let last = (now_s - ROLLUP_SETTLE_S) / ROLLUP_S * ROLLUP_S;
        let windows: Vec<u64> = (1..=3).map(|i| last - i * ROLLUP_S).collect();
        self.rollups(&windows, now_s).await.map(drop)
    }

    /// `HGETALL` of each of `keys` (all in the control slot), pipelined, as Redis replied:
    /// [`hash_fields`] reads them without copying.
    async fn hashes(&self, keys: &[String]) -> Result<Vec<redis::Value>, BrokerError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.cmd("HGETALL").arg(k);
            }
            let replies: Vec<redis::Value> = self.pool().query(&pipe).await?;
            out.extend(replies);
        }
        Ok(out)
    }
}

/// The (field, count) pairs of an `HGETALL` reply (a flat array, or a RESP3 map), borrowed;
/// pairs that are not UTF-8 names with integer counts are skipped.
fn hash_fields(reply: &redis::Value) -> impl Iterator<Item = (&str, u64)> {
    fn text(v: &redis::Value) -> Option<&str> {
        match v {
            redis::Value::BulkString(b) => std::str::from_utf8(b).ok(),
            redis::Value::SimpleString(s) => Some(s),
            _ => None,
        }
    }
    let pairs: Box<dyn Iterator<Item = (&redis::Value, &redis::Value)>> = match reply {
        redis::Value::Array(items) => Box::new(items.chunks_exact(2).map(|p| (&p[0], &p[1]))),
        redis::Value::Map(items) => Box::new(items.iter().map(|(k, v)| (k, v))),
        _ => Box::new(std::iter::empty()),
    };
    pairs.filter_map(|(f, v)| {
        let n = match v {
            redis::Value::Int(n) => u64::try_from(*n).ok()?,
            v => text(v)?.parse().ok()?,
        };
        Some((text(f)?, n))
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::consumer::completion::{Completion, DeadLetter};
    use crate::model::record::{FailureKind, TaskFailure, TaskRecord};

    /// One write of each kind that counts (and some that do not), over two partitions of one
    /// queue, another queue and three task names.
    pub(in crate::backend::redis) fn mixed_batch() -> Vec<Write> {
        let completion = |n: u64, queue: &str, task: &str, state, end: End, started| {
            let record = TaskRecord {
                state,
                task: task.to_string(),
                queue: queue.to_string(),
                enqueued_at_ms: 1_000 + n,
                started_at_ms: started,
                finished_at_ms: Some(5_000 + n * n * 37),
                failure: matches!(state, TaskState::Failed | TaskState::Dead).then(|| {
                    TaskFailure {
                        kind: FailureKind::Error,
                        error_type: None,
                        message: format!("boom {n}"),
                    }
                }),
                ..Default::default()
            };
            Write::Completion(Completion {
                lane: queue.to_string(),
                stream_id: format!("{n}-0"),
                task: Some(StoredRecord {
                    id: format!("id{n}"),
                    record,
                }),
                end,
                effects: Vec::new(),
            })
        };
        let retry = || End::Retry {
            next: Box::default(),
            at_ms: 9,
        };
        let mut batch = Vec::new();
        for n in 0..40u64 {
            let queue = ["mail", "mail#1", "mail#2", "other"][(n % 4) as usize];
            let task = ["a::x", "b::y", "c:z"][(n % 3) as usize];
            let started = (n % 5 != 0).then_some(1_000 + n + n * 11);
            let (state, end) = match n % 7 {
                0..=2 => (TaskState::Succeeded, End::Done),
                3 => (TaskState::Failed, End::Done),
                4 => (TaskState::Retrying, retry()),
                5 => (TaskState::Dead, End::Dead(DeadLetter::default())),
                _ => (TaskState::Cancelled, End::Done),
            };
            batch.push(completion(n, queue, task, state, end, started));
        }
        // Counted nothing: a deferral, a non-final record that ended, a message that did not
        // decode, and a state change.
        batch.push(completion(
            90,
            "mail",
            "a::x",
            TaskState::Pending,
            End::Defer {
                payload: vec![],
                at_ms: 1,
            },
            None,
        ));
        batch.push(completion(
            91,
            "mail",
            "a::x",
            TaskState::Running,
            End::Done,
            Some(1),
        ));
        batch.push(Write::Completion(Completion {
            lane: "mail".into(),
            stream_id: "92-0".into(),
            task: None,
            end: End::Dead(DeadLetter::default()),
            effects: Vec::new(),
        }));
        batch.push(Write::State(StoredRecord {
            id: "id93".into(),
            record: TaskRecord::default(),
        }));
        batch
    }

    /// The accumulation as it was before counting in place (a `Counters` per task, merged;
    /// fields parsed from names), kept as the reference.
    fn reference_fields(batch: &[Write]) -> (Vec<(String, u64)>, Failures<'_>) {
        let mut sums: HashMap<(bool, &str), Counters> = HashMap::new();
        let mut failures: Vec<(&str, Vec<u8>)> = Vec::new();
        for w in batch {
            let Write::Completion(c) = w else { continue };
            let Some(task) = &c.task else { continue };
            let r = &task.record;
            let mut one = Counters::default();
            match &c.end {
                End::Retry { .. } => one.retried = 1,
                End::Done | End::Dead(_) if r.state.is_final() => {
                    one.add_field(r.state.as_str(), 1);
                    if let Some(started) = r.started_at_ms {
                        let wait = started.saturating_sub(r.enqueued_at_ms);
                        let run = finished_at(r).saturating_sub(started);
                        one.ran = 1;
                        one.wait_ms = wait;
                        one.run_ms = run;
                        one.add_field(&format!("r{}", bucket_of(run)), 1);
                        one.add_field(&format!("w{}", bucket_of(wait)), 1);
                    }
                    if matches!(r.state, TaskState::Failed | TaskState::Dead) {
                        let last = LastFailure {
                            id: task.id.clone(),
                            at_ms: finished_at(r),
                            state: r.state.as_str().to_string(),
                            error: r.failure.as_ref().unwrap().message.clone(),
                        };
                        failures.push((r.task.as_str(), crate::codec::encode(&last).unwrap()));
                    }
                }
                _ => continue,
            }
            sums.entry((true, partition::logical(&r.queue)))
                .or_default()
                .merge(&one);
            sums.entry((false, r.task.as_str()))
                .or_default()
                .merge(&one);
        }
        let mut fields = Vec::new();
        for ((is_queue, name), c) in &sums {
            let field = |counter: &str| {
                if *is_queue {
                    queue_field(name, counter)
                } else {
                    task_field(name, counter)
                }
            };
            for (counter, n) in [
                ("succeeded", c.succeeded),
                ("failed", c.failed),
                ("cancelled", c.cancelled),
                ("dead", c.dead),
                ("retried", c.retried),
                ("ran", c.ran),
                ("wait_ms", c.wait_ms),
                ("run_ms", c.run_ms),
            ] {
                if n > 0 {
                    fields.push((field(counter), n));
                }
            }
            for (prefix, hist) in [("r", &c.run_hist), ("w", &c.wait_hist)] {
                for (i, n) in hist.iter().enumerate().filter(|(_, n)| **n > 0) {
                    fields.push((field(&format!("{prefix}{i}")), *n));
                }
            }
        }
        (fields, failures)
    }

    /// Counting in place sends `lua/history_add.lua` the same fields and increments (and
    /// `HSET` the same latest failures) as the per-task accumulation did.
    #[test]
    fn in_place_counting_writes_the_same_fields() {
        let batch = mixed_batch();
        let (mut fields, failures) = history_fields(&batch);
        let (mut expected, expected_failures) = reference_fields(&batch);
        fields.sort();
        expected.sort();
        assert_eq!(fields, expected);
        assert_eq!(failures, expected_failures);
        // No field twice (partitions and lanes are folded before the fields are made).
        let mut names: Vec<_> = fields.iter().map(|(f, _)| f.as_str()).collect();
        names.dedup();
        assert_eq!(names.len(), fields.len());
        assert!(fields.iter().any(|(f, _)| f == "q:mail:succeeded"));
        assert!(fields.iter().any(|(f, _)| f == "t:c:z:retried"));
        assert!(!fields.iter().any(|(f, _)| f.starts_with("q:mail#")));
        assert_eq!(history_fields(&batch[40..]), (Vec::new(), Vec::new()));
    }

    #[test]
    fn grouped_keeps_first_seen_order_and_sums_per_key() {
        let mut g: Grouped<&str, u64> = Grouped::new();
        assert!(g.is_empty());
        for k in ["b", "b", "a", "b", "c", "a", "a"] {
            *g.get(k) += 1;
        }
        assert_eq!(g.into_rows(), vec![("b", 3), ("a", 3), ("c", 1)]);
    }
}
