//! What operators see: queue depths and the workers that are alive.

use serde::{Deserialize, Serialize};

use crate::broker::Broker;
use crate::error::BrokerError;
use crate::keys::CONSUMER_GROUP;

/// One queue's numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// The queue.
    pub queue: String,
    /// Messages in the stream: waiting plus in flight (acked ones are deleted).
    pub depth: u64,
    /// Messages delivered to a worker and not yet acked.
    pub in_flight: u64,
    /// Waiting = depth − in flight.
    pub waiting: u64,
    /// Delayed messages (delays and retries) not yet due.
    pub delayed: u64,
    /// Dead letters.
    pub dead: u64,
}

/// A worker process's heartbeat entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Its consumer name.
    pub consumer: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Tasks it runs at once.
    pub concurrency: usize,
    /// Queues it reads.
    pub queues: Vec<String>,
    /// When it started, ms since the epoch.
    pub started_ms: u64,
    /// Its last heartbeat, ms since the epoch.
    pub heartbeat_ms: u64,
    /// Messages it holds right now.
    #[serde(default)]
    pub in_flight: u64,
}

impl Broker {
    /// Every queue's numbers, its priority lanes summed into it, sorted by name.
    pub async fn all_queue_stats(&self) -> Result<Vec<QueueStats>, BrokerError> {
        let mut by_queue: std::collections::BTreeMap<String, QueueStats> = Default::default();
        for lane in self.known_queues().await? {
            let s = self.queue_stats(&lane).await?;
            let name = crate::priority::split_lane(&lane).0.to_string();
            let q = by_queue.entry(name.clone()).or_insert_with(|| QueueStats {
                queue: name,
                ..QueueStats::default()
            });
            q.depth += s.depth;
            q.in_flight += s.in_flight;
            q.waiting += s.waiting;
            q.delayed += s.delayed;
            q.dead += s.dead;
        }
        Ok(by_queue.into_values().collect())
    }

    /// The numbers of `queue` (one lane), in one round trip.
    pub async fn queue_stats(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        let k = self.keys();
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
        })
    }

    /// Records a worker's heartbeat.
    pub async fn heartbeat(&self, info: &WorkerInfo) -> Result<(), BrokerError> {
        let json = crate::codec::encode(info)?;
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(self.keys().workers())
            .arg(&info.consumer)
            .arg(json)
            .ignore();
        self.pool().query::<(), _>(&pipe).await
    }

    /// Removes a worker's heartbeat entry (on a clean exit).
    pub async fn remove_heartbeat(&self, consumer: &str) -> Result<(), BrokerError> {
        self.pool()
            .query::<(), _>(redis::cmd("HDEL").arg(self.keys().workers()).arg(consumer))
            .await
    }

    /// Workers with a heartbeat entry. Entries older than `forget_after_ms` (workers that died
    /// without a clean exit) are deleted and not returned.
    pub async fn workers(&self, forget_after_ms: u64) -> Result<Vec<WorkerInfo>, BrokerError> {
        let raw: Vec<(String, Vec<u8>)> = self
            .pool()
            .query(redis::cmd("HGETALL").arg(self.keys().workers()))
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
            self.pool()
                .query::<(), _>(redis::cmd("HDEL").arg(self.keys().workers()).arg(&gone))
                .await?;
        }
        out.sort_by(|a, b| (&a.host, a.pid).cmp(&(&b.host, b.pid)));
        Ok(out)
    }
}
