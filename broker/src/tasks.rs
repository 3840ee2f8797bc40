//! Listing tasks by state and queue, for operators (`taskctl tasks`, the HTTP API).
//!
//! Nothing is indexed twice: waiting and running tasks are listed from the queues themselves
//! (a lane's stream holds every message not yet acknowledged; its delayed set holds scheduled
//! and retrying ones), and their state is read from their records. Finished tasks are listed
//! from one sorted set per queue and final state (`{kiq:<queue>}:finished:<state>`), which
//! the completion adds to (one ZADD per task) and the workers trim to the result TTL and
//! [`INDEX_MAX`] entries.

use std::collections::BTreeSet;

use redis::Value;

use crate::broker::Broker;
use crate::codec;
use crate::envelope::{now_ms, Envelope};
use crate::error::BrokerError;
use crate::keys::DATA_FIELD;
use crate::priority::{self, Priority};
use crate::record::{TaskRecord, TaskState};

/// Most entries kept in one finished-task index.
pub const INDEX_MAX: usize = 100_000;

/// One task in a listing.
#[derive(Debug, Clone)]
pub struct TaskSummary {
    /// The task id.
    pub id: String,
    /// Its record (`None` if it expired while being listed).
    pub record: Option<TaskRecord>,
}

impl Broker {
    /// The queues operators see: every queue used, with priority lanes folded into their queue.
    pub async fn queue_names(&self) -> Result<Vec<String>, BrokerError> {
        let all = self.known_queues().await?;
        let set: BTreeSet<String> = all
            .iter()
            .map(|l| priority::split_lane(l).0.to_string())
            .collect();
        Ok(set.into_iter().collect())
    }

    /// Up to `limit` tasks in `state`, of `queue` (or of every queue), newest first for
    /// finished states and oldest first for waiting ones.
    pub async fn list_tasks(
        &self,
        state: TaskState,
        queue: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TaskSummary>, BrokerError> {
        let queues = match queue {
            Some(q) => vec![q.to_string()],
            None => self.queue_names().await?,
        };
        let limit = limit.clamp(1, 10_000);
        let ids: Vec<String> = if state.is_final() {
            let mut scored: Vec<(u64, String)> = Vec::new();
            for q in &queues {
                let rows: Vec<(String, u64)> = self
                    .pool()
                    .query(
                        redis::cmd("ZREVRANGE")
                            .arg(self.keys().index(q, state))
                            .arg(0)
                            .arg(limit as i64 - 1)
                            .arg("WITHSCORES"),
                    )
                    .await?;
                scored.extend(rows.into_iter().map(|(id, at)| (at, id)));
            }
            scored.sort_by_key(|s| std::cmp::Reverse(s.0));
            scored.into_iter().take(limit).map(|(_, id)| id).collect()
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
        Ok(out)
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
                let reply: Value = self
                    .pool()
                    .query(
                        redis::cmd("XRANGE")
                            .arg(self.keys().stream(lane))
                            .arg("-")
                            .arg("+")
                            .arg("COUNT")
                            .arg(count),
                    )
                    .await?;
                stream_payloads(reply)
            }
            TaskState::Scheduled | TaskState::Retrying => {
                self.pool()
                    .query(
                        redis::cmd("ZRANGE")
                            .arg(self.keys().delayed(lane))
                            .arg(0)
                            .arg(count as i64 - 1),
                    )
                    .await?
            }
            _ => Vec::new(),
        };
        Ok(payloads
            .iter()
            .filter_map(|p| codec::decode::<Envelope>(p).ok())
            .map(|e| e.id)
            .collect())
    }

    /// Drops finished-task index entries older than the result TTL (their records are gone)
    /// and beyond [`INDEX_MAX`] per index. Workers call it about once a minute.
    pub async fn trim_indexes(&self, queue: &str) -> Result<(), BrokerError> {
        if self.is_in_memory() {
            return Ok(());
        }
        let oldest = now_ms().saturating_sub(self.config().result_ttl.as_millis() as u64);
        let mut pipe = redis::pipe();
        for state in TaskState::FINAL {
            let key = self.keys().index(queue, state);
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

/// The `data` field of each entry of an XRANGE reply.
fn stream_payloads(reply: Value) -> Vec<Vec<u8>> {
    let Value::Array(entries) = reply else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(mut parts) = entry else {
            continue;
        };
        let Some(Value::Array(fields)) = parts.pop() else {
            continue;
        };
        let mut it = fields.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            let is_data = matches!(&k, Value::BulkString(b) if b == DATA_FIELD.as_bytes());
            if let (true, Value::BulkString(b)) = (is_data, v) {
                out.push(b);
            }
        }
    }
    out
}
