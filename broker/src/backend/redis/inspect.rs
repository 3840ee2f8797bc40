//! Operators' reads and admin: queues, workers, task listings, dead letters, counters.

use std::collections::{BTreeSet, HashMap};

use redis::streams::StreamRangeReply;
use redis::Value;

use crate::consumer::delivery::WorkerInfo;
use crate::error::BrokerError;
use crate::inspector::dead::{DeadCursor, DeadEntry, DeadFilter, DeadPage};
use crate::inspector::status::QueueStats;
use crate::inspector::tasks::{TaskCursor, TaskPage};
use crate::inspector::tasks::{TaskSummary, INDEX_MAX};
use crate::keys::{CONSUMER_GROUP, DATA_FIELD};
use crate::model::envelope::now_ms;
use crate::model::partition;
use crate::model::priority::{self, Priority};
use crate::model::record::TaskState;

use super::scripts::{self, REPLAY_DEAD};
use super::{data_field, RedisBackend};

impl RedisBackend {
    /// Every queue's numbers, its priority lanes summed into it, sorted by name; a partitioned
    /// queue's partitions summed into it too, and listed in it one by one. On a cluster, each
    /// row names the node that serves its slot.
    pub(crate) async fn all_queue_stats(&self) -> Result<Vec<QueueStats>, BrokerError> {
        let owners = self.slot_owners().await?;
        let mut by_physical: std::collections::BTreeMap<String, QueueStats> = Default::default();
        for lane in self.lanes().await? {
            let s = self.queue_stats(&lane).await?;
            let name = priority::split_lane(&lane).0.to_string();
            let q = by_physical
                .entry(name.clone())
                .or_insert_with(|| QueueStats {
                    node: node_of(&owners, &self.keys.queue_tag(&name)),
                    queue: name,
                    ..QueueStats::default()
                });
            q.add(&s);
        }
        let mut by_queue: std::collections::BTreeMap<String, QueueStats> = Default::default();
        for (name, stats) in by_physical {
            let queue = partition::logical(&name);
            let q = by_queue
                .entry(queue.to_string())
                .or_insert_with(|| QueueStats {
                    queue: queue.to_string(),
                    node: node_of(&owners, &self.keys.queue_tag(queue)),
                    ..QueueStats::default()
                });
            q.add(&stats);
            q.partitions.push(stats);
        }
        let paused = self.paused_queues().await?;
        Ok(by_queue
            .into_values()
            .map(|mut q| {
                q.paused_at_ms = paused.get(&q.queue).copied();
                q.paused = q.paused_at_ms.is_some();
                // Partitions are listed only when there are several.
                if q.partitions.len() < 2 {
                    q.partitions.clear();
                } else {
                    q.partitions.sort_by_key(|p| partition::split(&p.queue).1);
                }
                q
            })
            .collect())
    }

    /// Which node serves each slot range, on a cluster (empty elsewhere).
    pub(crate) async fn slot_owners(&self) -> Result<Vec<(u16, u16, String)>, BrokerError> {
        if !self.target().is_cluster() {
            return Ok(Vec::new());
        }
        let reply: Value = self
            .pool()
            .query(redis::cmd("CLUSTER").arg("SLOTS"))
            .await?;
        Ok(parse_cluster_slots(reply))
    }

    /// The numbers of `queue` (one lane), in one round trip.
    pub(crate) async fn queue_stats(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        let k = &self.keys;
        let mut pipe = redis::pipe();
        pipe.cmd("XLEN").arg(k.stream(queue));
        pipe.cmd("ZCARD").arg(k.delayed(queue));
        pipe.cmd("XLEN").arg(k.dead(queue));
        pipe.cmd("XPENDING")
            .arg(k.stream(queue))
            .arg(CONSUMER_GROUP);
        let (depth, delayed, dead, pending): (u64, u64, u64, redis::Value) =
            match self.pool().query(&pipe).await {
                Ok(v) => v,
                // No group yet (nothing was ever dispatched there): XPENDING errors.
                Err(_) => {
                    let mut pipe = redis::pipe();
                    pipe.cmd("XLEN").arg(k.stream(queue));
                    pipe.cmd("ZCARD").arg(k.delayed(queue));
                    pipe.cmd("XLEN").arg(k.dead(queue));
                    let (d, z, x): (u64, u64, u64) = self.pool().query(&pipe).await?;
                    (d, z, x, redis::Value::Nil)
                }
            };
        let in_flight = match pending {
            redis::Value::Array(items) => match items.first() {
                Some(redis::Value::Int(n)) => *n as u64,
                _ => 0,
            },
            _ => 0,
        };
        Ok(QueueStats {
            queue: queue.to_string(),
            depth,
            in_flight,
            waiting: depth.saturating_sub(in_flight),
            delayed,
            dead,
            ..QueueStats::default()
        })
    }

    /// Records a worker's heartbeat.
    pub(crate) async fn heartbeat(&self, info: &WorkerInfo) -> Result<(), BrokerError> {
        let json = crate::codec::encode(info)?;
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(self.keys.workers())
            .arg(&info.consumer)
            .arg(json)
            .ignore();
        self.pool().query::<(), _>(&pipe).await
    }

    /// Removes a worker's heartbeat entry (on a clean exit).
    pub(crate) async fn remove_heartbeat(&self, consumer: &str) -> Result<(), BrokerError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HDEL")
            .arg(self.keys.workers())
            .arg(consumer)
            .ignore();
        pipe.cmd("SREM")
            .arg(self.keys.quiet())
            .arg(consumer)
            .ignore();
        self.pool().query::<(), _>(&pipe).await
    }

    /// Workers with a heartbeat entry. Entries older than `forget_after_ms` (workers that died
    /// without a clean exit) are deleted and not returned.
    pub(crate) async fn workers(
        &self,
        forget_after_ms: u64,
    ) -> Result<Vec<WorkerInfo>, BrokerError> {
        let raw: Vec<(String, Vec<u8>)> = self
            .pool()
            .query(redis::cmd("HGETALL").arg(self.keys.workers()))
            .await?;
        let now = crate::envelope::now_ms();
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (consumer, bytes) in raw {
            match crate::codec::decode::<WorkerInfo>(&bytes) {
                Ok(w) if now.saturating_sub(w.heartbeat_ms) <= forget_after_ms => out.push(w),
                _ => gone.push(consumer),
            }
        }
        if !gone.is_empty() {
            let mut pipe = redis::pipe();
            pipe.cmd("HDEL")
                .arg(self.keys.workers())
                .arg(&gone)
                .ignore();
            pipe.cmd("SREM").arg(self.keys.quiet()).arg(&gone).ignore();
            self.pool().query::<(), _>(&pipe).await?;
        }
        out.sort_by(|a, b| (&a.host, a.pid).cmp(&(&b.host, b.pid)));
        Ok(out)
    }
}

impl RedisBackend {
    /// The queues operators see: every queue used, with priority lanes and partitions folded
    /// into their queue.
    pub(crate) async fn queue_names(&self) -> Result<Vec<String>, BrokerError> {
        let all = self.physical_queue_names().await?;
        let set: BTreeSet<String> = all
            .iter()
            .map(|q| partition::logical(q).to_string())
            .collect();
        Ok(set.into_iter().collect())
    }

    /// Every queue used, each partition on its own (`mail`, `mail#1`), priority lanes folded.
    pub(crate) async fn physical_queue_names(&self) -> Result<Vec<String>, BrokerError> {
        let all = self.lanes().await?;
        let set: BTreeSet<String> = all
            .iter()
            .map(|l| priority::split_lane(l).0.to_string())
            .collect();
        Ok(set.into_iter().collect())
    }

    /// Up to `limit` tasks in `state`, of `queue` (or of every queue), newest first for
    /// finished states and oldest first for waiting ones. For a finished state, `after` (a
    /// page's [`TaskPage::next`]) continues a listing after the last task of the page before:
    /// each index is read from that point (`ZREVRANGEBYSCORE … LIMIT`), never from its start.
    pub(crate) async fn list_tasks(
        &self,
        state: TaskState,
        queue: Option<&str>,
        limit: usize,
        after: Option<&TaskCursor>,
    ) -> Result<TaskPage, BrokerError> {
        let all = self.physical_queue_names().await?;
        let queues: Vec<String> = match queue {
            // A queue's partitions are listed with it (or one partition, named as such).
            Some(q) => {
                let mut v: Vec<String> = all
                    .into_iter()
                    .filter(|p| p == q || partition::logical(p) == q)
                    .collect();
                if v.is_empty() {
                    v.push(q.to_string());
                }
                v
            }
            None => all,
        };
        let limit = limit.clamp(1, 10_000);
        let mut next = None;
        let ids: Vec<String> = if state.is_final() {
            let scored = self.index_page(&queues, state, limit, after).await?;
            if scored.len() == limit {
                next = scored.last().map(|(at, id)| TaskCursor {
                    at_ms: *at,
                    id: id.clone(),
                });
            }
            scored.into_iter().map(|(_, id)| id).collect()
        } else {
            // Candidates from the queues, filtered by their records' state below. Read more
            // than `limit`: some are in another state.
            let mut ids = Vec::new();
            for q in &queues {
                for p in Priority::ALL {
                    let lane = p.lane(q);
                    ids.extend(self.waiting_ids(&lane, state, limit * 4).await?);
                }
            }
            ids
        };
        let records = self.records(&ids).await?;
        let mut out: Vec<TaskSummary> = ids
            .into_iter()
            .zip(records)
            .filter(|(_, r)| state.is_final() || r.as_ref().is_some_and(|r| r.state == state))
            .map(|(id, record)| TaskSummary { id, record })
            .collect();
        out.truncate(limit);
        Ok(TaskPage { tasks: out, next })
    }

    /// The newest `limit` entries of `queues`' indexes of `state`, after `after` (in the
    /// order finished desc, then id desc: a sorted set's reverse order), merged. Two
    /// pipelined round trips: how many entries share the cursor's time in each index, then
    /// each index's page from that time on (those ties are skipped up to the cursor's id).
    async fn index_page(
        &self,
        queues: &[String],
        state: TaskState,
        limit: usize,
        after: Option<&TaskCursor>,
    ) -> Result<Vec<(u64, String)>, BrokerError> {
        let keys: Vec<String> = queues.iter().map(|q| self.keys.index(q, state)).collect();
        let ties: Vec<u64> = match after {
            None => vec![0; keys.len()],
            Some(c) => {
                let mut counts = self.pool().new_batch();
                for k in &keys {
                    counts.add(
                        k,
                        redis::cmd("ZCOUNT")
                            .arg(k)
                            .arg(c.at_ms)
                            .arg(c.at_ms)
                            .clone(),
                    );
                }
                self.pool()
                    .batch(counts)
                    .await?
                    .into_iter()
                    .map(|v| {
                        redis::from_redis_value::<u64>(v).map_err(|e| BrokerError::redis(e.into()))
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        let mut pages = self.pool().new_batch();
        for (k, t) in keys.iter().zip(&ties) {
            let mut cmd = match after {
                None => {
                    let mut cmd = redis::cmd("ZREVRANGE");
                    cmd.arg(k).arg(0).arg(limit as i64 - 1);
                    cmd
                }
                Some(c) => {
                    let mut cmd = redis::cmd("ZREVRANGEBYSCORE");
                    cmd.arg(k).arg(c.at_ms).arg("-inf");
                    cmd
                }
            };
            cmd.arg("WITHSCORES");
            if after.is_some() {
                cmd.arg("LIMIT").arg(0).arg(limit as u64 + t);
            }
            pages.add(k, cmd);
        }
        let mut scored: Vec<(u64, String)> = Vec::new();
        for reply in self.pool().batch(pages).await? {
            let rows: Vec<(String, u64)> =
                redis::from_redis_value(reply).map_err(|e| BrokerError::redis(e.into()))?;
            scored.extend(rows.into_iter().map(|(id, at)| (at, id)).filter(
                |(at, id)| match after {
                    None => true,
                    Some(c) => *at < c.at_ms || (*at == c.at_ms && id.as_str() < c.id.as_str()),
                },
            ));
        }
        scored.sort_by(|a, b| b.cmp(a));
        scored.truncate(limit);
        Ok(scored)
    }

    /// Ids of messages in `lane` that may be in `state`: from its stream (pending, running) or
    /// its delayed set (scheduled, retrying).
    async fn waiting_ids(
        &self,
        lane: &str,
        state: TaskState,
        count: usize,
    ) -> Result<Vec<String>, BrokerError> {
        let payloads: Vec<Vec<u8>> = match state {
            TaskState::Pending | TaskState::Running => {
                let reply: StreamRangeReply = self
                    .pool()
                    .query(
                        redis::cmd("XRANGE")
                            .arg(self.keys.stream(lane))
                            .arg("-")
                            .arg("+")
                            .arg("COUNT")
                            .arg(count),
                    )
                    .await?;
                reply
                    .ids
                    .into_iter()
                    .filter_map(|mut e| data_field(&mut e.map))
                    .collect()
            }
            TaskState::Scheduled | TaskState::Retrying => {
                self.pool()
                    .query(
                        redis::cmd("ZRANGE")
                            .arg(self.keys.delayed(lane))
                            .arg(0)
                            .arg(count as i64 - 1),
                    )
                    .await?
            }
            _ => Vec::new(),
        };
        Ok(payloads
            .iter()
            .filter_map(|p| self.wire.decode_envelope(p).ok())
            .map(|e| e.id)
            .collect())
    }

    /// Drops finished-task index entries older than the result TTL (their records are gone)
    /// and beyond [`INDEX_MAX`] per index. Workers call it about once a minute.
    pub(crate) async fn trim_indexes(&self, queue: &str) -> Result<(), BrokerError> {
        let oldest = now_ms().saturating_sub(self.config.result_ttl.as_millis() as u64);
        let mut pipe = redis::pipe();
        for state in TaskState::FINAL {
            let key = self.keys.index(queue, state);
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(format!("({oldest}"))
                .ignore();
            pipe.cmd("ZREMRANGEBYRANK")
                .arg(&key)
                .arg(0)
                .arg(-(INDEX_MAX as i64) - 1)
                .ignore();
        }
        self.pool().query::<(), _>(&pipe).await
    }
}

impl RedisBackend {
    /// Up to `count` dead letters of `queue`, oldest first, starting at id `start` (`-` for the
    /// beginning).
    pub(crate) async fn dead_letters(
        &self,
        queue: &str,
        start: &str,
        count: usize,
    ) -> Result<Vec<DeadEntry>, BrokerError> {
        let reply: StreamRangeReply = self
            .pool()
            .query(
                redis::cmd("XRANGE")
                    .arg(self.keys.dead(queue))
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(count.max(1)),
            )
            .await?;
        Ok(reply
            .ids
            .into_iter()
            .map(|e| to_entry(queue, e.id, e.map))
            .collect())
    }

    /// How many dead letters `queue` holds.
    pub(crate) async fn dead_letter_count(&self, queue: &str) -> Result<u64, BrokerError> {
        self.pool()
            .query(redis::cmd("XLEN").arg(self.keys.dead(queue)))
            .await
    }

    /// Puts dead letter `id` of `queue` back into the queue, with its attempt count reset (it
    /// gets its full retry policy again). Returns whether it existed.
    pub(crate) async fn replay_dead_letter(
        &self,
        queue: &str,
        id: &str,
    ) -> Result<bool, BrokerError> {
        let Some(entry) = self.dead_letters(queue, id, 1).await?.into_iter().next() else {
            return Ok(false);
        };
        if entry.id != id {
            return Ok(false);
        }
        // A Taskiq message goes back to the Taskiq stream it came from, as it was (then the
        // dead letter is deleted: a crash between the two replays it twice, never loses it).
        if let Some(stream) = entry
            .origin
            .as_deref()
            .and_then(|o| o.strip_prefix("taskiq:"))
        {
            self.pool()
                .query::<String, _>(
                    redis::cmd("XADD")
                        .arg(stream)
                        .arg("*")
                        .arg(DATA_FIELD)
                        .arg(&entry.payload),
                )
                .await?;
            let n: u64 = self
                .pool()
                .query(redis::cmd("XDEL").arg(self.keys.dead(queue)).arg(id))
                .await?;
            return Ok(n == 1);
        }
        // An undecodable payload is put back as it was: the operator may have deployed a fix.
        let payload = match self.wire.decode_envelope(&entry.payload) {
            Ok(mut env) => {
                env.attempt = 0;
                self.wire.encode_envelope(&env)?
            }
            Err(_) => entry.payload,
        };
        self.ensure_group(queue).await?;
        let mut inv = REPLAY_DEAD.with_keys(&scripts::replay_dead_keys(&self.keys, queue));
        inv.arg(id).arg(DATA_FIELD).arg(payload);
        let n: u64 = self.pool().invoke(&inv).await?;
        Ok(n == 1)
    }

    /// Deletes dead letters `ids` of `queue`; returns how many existed.
    pub(crate) async fn purge_dead_letters(
        &self,
        queue: &str,
        ids: &[String],
    ) -> Result<u64, BrokerError> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.pool()
            .query(redis::cmd("XDEL").arg(self.keys.dead(queue)).arg(ids))
            .await
    }

    /// Deletes every dead letter of `queue`; returns how many there were.
    pub(crate) async fn purge_all_dead_letters(&self, queue: &str) -> Result<u64, BrokerError> {
        let n = self.dead_letter_count(queue).await?;
        self.pool()
            .query::<(), _>(redis::cmd("DEL").arg(self.keys.dead(queue)))
            .await?;
        Ok(n)
    }

    /// Dead letters matching `filter`, oldest first within each lane, at most `limit`. A queue
    /// filter takes in the queue's priority lanes (or names one lane exactly).
    pub(crate) async fn find_dead_letters(
        &self,
        filter: &DeadFilter,
        limit: usize,
    ) -> Result<Vec<DeadEntry>, BrokerError> {
        const PAGE: usize = 500;
        let mut out = Vec::new();
        for lane in self.lanes().await? {
            if let Some(q) = &filter.queue {
                let physical = crate::priority::split_lane(&lane).0;
                if *q != lane && physical != q && partition::logical(physical) != q {
                    continue;
                }
            }
            let mut start = "-".to_string();
            loop {
                let page = self.dead_letters(&lane, &start, PAGE).await?;
                let Some(last) = page.last() else { break };
                start = format!("({}", last.id);
                let last_page = page.len() < PAGE;
                out.extend(page.into_iter().filter(|e| filter.matches(e)));
                if out.len() >= limit {
                    out.truncate(limit);
                    return Ok(out);
                }
                if last_page {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Up to `limit` dead letters matching `filter`, after `after`, looking at no more than
    /// `budget` entries (a filter that matches few does not read every stream in one
    /// request): a page, and where the next one starts.
    pub(crate) async fn dead_letter_page(
        &self,
        filter: &DeadFilter,
        after: Option<&DeadCursor>,
        limit: usize,
        budget: usize,
    ) -> Result<DeadPage, BrokerError> {
        const PAGE: usize = 500;
        let mut entries = Vec::new();
        let mut seen = 0usize;
        for lane in self.lanes().await? {
            if let Some(q) = &filter.queue {
                let physical = crate::priority::split_lane(&lane).0;
                if *q != lane && physical != q && partition::logical(physical) != q {
                    continue;
                }
            }
            let mut start = match after {
                Some(c) if lane < c.lane => continue,
                Some(c) if lane == c.lane => format!("({}", c.id),
                _ => "-".to_string(),
            };
            loop {
                let want = PAGE.min(budget.saturating_sub(seen)).min(
                    // Without a filter on the entries themselves, read no more than the page needs.
                    if filter.reason.is_none() && filter.task.is_none() {
                        limit - entries.len()
                    } else {
                        PAGE
                    },
                );
                let page = self.dead_letters(&lane, &start, want.max(1)).await?;
                let Some(last) = page.last() else { break };
                let last_id = last.id.clone();
                start = format!("({last_id}");
                seen += page.len();
                let full = page.len() == want.max(1);
                for e in page {
                    if filter.matches(&e) {
                        entries.push(e);
                        if entries.len() == limit {
                            return Ok(DeadPage {
                                next: Some(DeadCursor {
                                    lane: lane.clone(),
                                    id: entries[limit - 1].id.clone(),
                                }),
                                entries,
                            });
                        }
                    }
                }
                if seen >= budget {
                    return Ok(DeadPage {
                        entries,
                        next: Some(DeadCursor { lane, id: last_id }),
                    });
                }
                if !full {
                    break;
                }
            }
        }
        Ok(DeadPage {
            entries,
            next: None,
        })
    }

    /// Every queue name that has been used (from the registry set).
    pub(crate) async fn lanes(&self) -> Result<Vec<String>, BrokerError> {
        let mut q: Vec<String> = self
            .pool()
            .query(redis::cmd("SMEMBERS").arg(self.keys.queues()))
            .await?;
        q.sort();
        Ok(q)
    }
}

fn to_entry(queue: &str, id: String, mut map: HashMap<String, Value>) -> DeadEntry {
    let mut text = |k: &str| -> Option<String> {
        match map.remove(k) {
            Some(Value::BulkString(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
            Some(Value::SimpleString(s)) => Some(s),
            _ => None,
        }
    };
    let reason = text("reason").unwrap_or_default();
    let error = text("error").unwrap_or_default();
    let task_id = text("task_id");
    let task = text("task");
    let attempts = text("attempts").and_then(|a| a.parse().ok()).unwrap_or(0);
    let at_ms = text("at_ms").and_then(|a| a.parse().ok()).unwrap_or(0);
    let origin = text("origin");
    let payload = match map.remove("payload") {
        Some(Value::BulkString(b)) => b,
        _ => Vec::new(),
    };
    DeadEntry {
        id,
        queue: queue.to_string(),
        reason,
        error,
        task_id,
        task,
        attempts,
        at_ms,
        payload,
        origin,
    }
}

impl RedisBackend {
    /// The cumulative counters every worker adds to (tasks finished per state, `retried`,
    /// `ran`, `wait_ms`, `run_ms`).
    pub(crate) async fn counters(&self) -> Result<HashMap<String, u64>, BrokerError> {
        self.pool()
            .query(redis::cmd("HGETALL").arg(self.keys.stats()))
            .await
    }
}

/// The node (`host:port`) serving `key`'s slot, by a `CLUSTER SLOTS` table.
pub(crate) fn node_of(owners: &[(u16, u16, String)], key: &str) -> Option<String> {
    if owners.is_empty() {
        return None;
    }
    let slot = super::connection::slot(key);
    owners
        .iter()
        .find(|(start, end, _)| (*start..=*end).contains(&slot))
        .map(|(_, _, node)| node.clone())
}

/// `CLUSTER SLOTS` as `(first slot, last slot, primary's host:port)`; malformed rows are
/// skipped.
fn parse_cluster_slots(reply: Value) -> Vec<(u16, u16, String)> {
    let Value::Array(rows) = reply else {
        return Vec::new();
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let int = |v: &Value| match v {
        Value::Int(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    rows.into_iter()
        .filter_map(|row| {
            let Value::Array(row) = row else { return None };
            let start = int(row.first()?)?;
            let end = int(row.get(1)?)?;
            let Value::Array(primary) = row.get(2)? else {
                return None;
            };
            let host = text(primary.first()?)?;
            let port = match primary.get(1)? {
                Value::Int(p) => *p,
                _ => return None,
            };
            Some((start, end, format!("{host}:{port}")))
        })
        .collect()
}
