//! Dead-letter streams: reading, replaying and purging them.

use std::collections::HashMap;

use redis::streams::StreamRangeReply;
use redis::Value;

use crate::broker::Broker;
use crate::codec;
use crate::envelope::Envelope;
use crate::error::BrokerError;
use crate::keys::DATA_FIELD;

/// Puts a payload back into the queue's stream and deletes the dead letter, atomically, if the
/// dead letter still exists (so two operators replaying at once enqueue it once). Returns 1 if
/// it did.
const REPLAY_SCRIPT: &str = r#"
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', ARGV[2], ARGV[3])
return 1
"#;

/// One entry of a dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadEntry {
    /// The dead letter's own stream id (used to show, replay or purge it).
    pub id: String,
    /// The queue it came from.
    pub queue: String,
    /// Why it is dead: `malformed`, `unknown_task`, `bad_arguments`, `retries_exhausted`,
    /// `too_many_deliveries`.
    pub reason: String,
    /// The last error.
    pub error: String,
    /// The task id, when the message decoded.
    pub task_id: Option<String>,
    /// The task name, when the message decoded.
    pub task: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// When it died, ms since the epoch.
    pub at_ms: u64,
    /// The original payload.
    pub payload: Vec<u8>,
}

/// Which dead letters [`Broker::find_dead_letters`] returns: every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadFilter {
    /// A queue (with its priority lanes), or one lane.
    pub queue: Option<String>,
    /// A reason: `malformed`, `unknown_task`, `bad_arguments`, `retries_exhausted`,
    /// `too_many_deliveries`.
    pub reason: Option<String>,
    /// A task name.
    pub task: Option<String>,
}

impl DeadFilter {
    fn matches(&self, e: &DeadEntry) -> bool {
        self.reason.as_deref().is_none_or(|r| r == e.reason)
            && self
                .task
                .as_deref()
                .is_none_or(|t| e.task.as_deref() == Some(t))
    }
}

impl Broker {
    /// Up to `count` dead letters of `queue`, oldest first, starting at id `start` (`-` for the
    /// beginning).
    pub async fn dead_letters(
        &self,
        queue: &str,
        start: &str,
        count: usize,
    ) -> Result<Vec<DeadEntry>, BrokerError> {
        let reply: StreamRangeReply = self
            .pool()
            .query(
                redis::cmd("XRANGE")
                    .arg(self.keys().dead(queue))
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
    pub async fn dead_letter_count(&self, queue: &str) -> Result<u64, BrokerError> {
        self.pool()
            .query(redis::cmd("XLEN").arg(self.keys().dead(queue)))
            .await
    }

    /// Puts dead letter `id` of `queue` back into the queue, with its attempt count reset (it
    /// gets its full retry policy again). Returns whether it existed.
    pub async fn replay_dead_letter(&self, queue: &str, id: &str) -> Result<bool, BrokerError> {
        let Some(entry) = self.dead_letters(queue, id, 1).await?.into_iter().next() else {
            return Ok(false);
        };
        if entry.id != id {
            return Ok(false);
        }
        // An undecodable payload is put back as it was: the operator may have deployed a fix.
        let payload = match codec::decode::<Envelope>(&entry.payload) {
            Ok(mut env) => {
                env.attempt = 0;
                codec::encode(&env)?
            }
            Err(_) => entry.payload,
        };
        self.ensure_group(queue).await?;
        let script = redis::Script::new(REPLAY_SCRIPT);
        let mut inv = script.key(self.keys().dead(queue));
        inv.key(self.keys().stream(queue))
            .arg(id)
            .arg(DATA_FIELD)
            .arg(payload);
        let n: u64 = self.pool().invoke(&inv).await?;
        Ok(n == 1)
    }

    /// Deletes dead letters `ids` of `queue`; returns how many existed.
    pub async fn purge_dead_letters(
        &self,
        queue: &str,
        ids: &[String],
    ) -> Result<u64, BrokerError> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.pool()
            .query(redis::cmd("XDEL").arg(self.keys().dead(queue)).arg(ids))
            .await
    }

    /// Deletes every dead letter of `queue`; returns how many there were.
    pub async fn purge_all_dead_letters(&self, queue: &str) -> Result<u64, BrokerError> {
        let n = self.dead_letter_count(queue).await?;
        self.pool()
            .query::<(), _>(redis::cmd("DEL").arg(self.keys().dead(queue)))
            .await?;
        Ok(n)
    }

    /// Dead letters matching `filter`, oldest first within each lane, at most `limit`. A queue
    /// filter takes in the queue's priority lanes (or names one lane exactly).
    pub async fn find_dead_letters(
        &self,
        filter: &DeadFilter,
        limit: usize,
    ) -> Result<Vec<DeadEntry>, BrokerError> {
        const PAGE: usize = 500;
        let mut out = Vec::new();
        for lane in self.known_queues().await? {
            if let Some(q) = &filter.queue {
                if *q != lane && crate::priority::split_lane(&lane).0 != q {
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

    /// Every queue name that has been used (from the registry set).
    pub async fn known_queues(&self) -> Result<Vec<String>, BrokerError> {
        let mut q: Vec<String> = self
            .pool()
            .query(redis::cmd("SMEMBERS").arg(self.keys().queues()))
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
    }
}
