//! The throughput history: what a completion batch adds to it (in the batch's own pipeline, no
//! round trip of its own), and reading it back for charts and the per-task table.

use std::collections::{BTreeMap, HashMap};

use crate::consumer::completion::{End, Write};
use crate::error::BrokerError;
use crate::model::history::{
    bucket_of, queue_field, task_field, Counters, History, HistoryPoint, LastFailure, TaskTotals,
    BUCKETS_MS, HOUR_RETENTION_S, MINUTE_RETENTION_S,
};
use crate::model::partition;

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

/// Adds `batch`'s counters to the current minute's and hour's buckets (one script call), and
/// each failing task name's latest failure (one `HSET`). Counters go to the task's queue (its
/// partitions and lanes folded in) and its task name.
pub(crate) fn add_history(pipe: &mut Batch, keys: &crate::Keys, batch: &[Write], now_ms: u64) {
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
                if matches!(r.state, crate::TaskState::Failed | crate::TaskState::Dead) {
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
            _ => continue,
        }
        let queue = partition::logical(&r.queue);
        sums.entry((true, queue)).or_default().merge(&one);
        sums.entry((false, r.task.as_str()))
            .or_default()
            .merge(&one);
    }
    if sums.is_empty() {
        return;
    }
    let mut fields: Vec<(String, u64)> = Vec::new();
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
