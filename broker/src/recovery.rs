//! Recovering work from dead workers, and keeping live workers' work from being taken.
//!
//! A message read through the group stays in its pending-entries list (PEL) until acked. A
//! live worker refreshes the idle time of what it holds ([`Broker::refresh_leases`]); any
//! worker periodically claims entries idle for longer than the visibility timeout
//! ([`Broker::reclaim`]): their owner has stopped refreshing them, so it is dead or cut off.

use std::collections::HashMap;
use std::time::Duration;

use redis::streams::{StreamClaimReply, StreamRangeReply};
use redis::Value;

use crate::broker::{Broker, Delivery};
use crate::codec;
use crate::envelope::Envelope;
use crate::error::BrokerError;
use crate::keys::{CONSUMER_GROUP, DATA_FIELD};

/// Resets the idle time of the given entries, but only of those this consumer still owns: a
/// worker that was presumed dead must not take back work another worker has reclaimed.
const REFRESH_SCRIPT: &str = r#"
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"#;

/// What [`Broker::reclaim`] took over.
#[derive(Debug, Default)]
pub struct Reclaimed {
    /// Messages to run again.
    pub deliveries: Vec<Delivery>,
    /// Messages delivered more than the allowed number of times: dead letters.
    pub poisoned: Vec<Delivery>,
}

/// Deletes a consumer from the group only if it holds no pending message (atomic: a message
/// delivered to it between a check and the delete would otherwise be dropped from the PEL).
const DELETE_IDLE_CONSUMER_SCRIPT: &str = r#"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"#;

impl Broker {
    /// Removes `consumer` from `queue`'s group if it holds nothing (a worker leaving cleanly).
    /// Returns whether it was removed.
    pub async fn remove_consumer(&self, queue: &str, consumer: &str) -> Result<bool, BrokerError> {
        let script = redis::Script::new(DELETE_IDLE_CONSUMER_SCRIPT);
        let mut inv = script.key(self.keys().stream(queue));
        inv.arg(CONSUMER_GROUP).arg(consumer);
        let n: i64 = self.pool().invoke(&inv).await?;
        Ok(n == 1)
    }

    /// Removes consumers of `queue`'s group that hold nothing and have been idle for longer
    /// than `idle`: workers that died long ago. Returns how many were removed.
    pub async fn prune_consumers(&self, queue: &str, idle: Duration) -> Result<u64, BrokerError> {
        let info: Vec<HashMap<String, Value>> = self
            .pool()
            .query(
                redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(self.keys().stream(queue))
                    .arg(CONSUMER_GROUP),
            )
            .await?;
        let mut removed = 0;
        for c in info {
            let name = match c.get("name") {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(Value::SimpleString(s)) => s.clone(),
                _ => continue,
            };
            let num = |k: &str| match c.get(k) {
                Some(Value::Int(i)) => *i,
                _ => 0,
            };
            if num("pending") == 0 && num("idle") as u128 > idle.as_millis() {
                let script = redis::Script::new(DELETE_IDLE_CONSUMER_SCRIPT);
                let mut inv = script.key(self.keys().stream(queue));
                inv.arg(CONSUMER_GROUP).arg(&name);
                let n: i64 = self.pool().invoke(&inv).await?;
                removed += n as u64;
            }
        }
        Ok(removed)
    }

    /// Keeps this consumer's leases on `ids` of `queue` fresh. Returns the ids it no longer
    /// owns (another worker reclaimed them).
    pub async fn refresh_leases(
        &self,
        queue: &str,
        consumer: &str,
        ids: &[String],
    ) -> Result<Vec<String>, BrokerError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let script = redis::Script::new(REFRESH_SCRIPT);
        let mut inv = script.key(self.keys().stream(queue));
        inv.arg(CONSUMER_GROUP).arg(consumer);
        for id in ids {
            inv.arg(id);
        }
        self.pool().invoke(&inv).await
    }

    /// Claims up to `count` messages of `queue` that have been idle for at least `min_idle`
    /// (their worker stopped refreshing them). Those already delivered `max_deliveries` times
    /// come back as `poisoned`.
    ///
    /// `visibility_of`, when given, names a longer visibility timeout for some tasks: candidates
    /// are then peeked (one pipelined round trip) and only those idle past their own task's
    /// timeout are claimed.
    pub async fn reclaim(
        &self,
        queue: &str,
        consumer: &str,
        min_idle: Duration,
        max_deliveries: u64,
        count: usize,
        visibility_of: Option<&(dyn Fn(&Envelope) -> Duration + Sync)>,
    ) -> Result<Reclaimed, BrokerError> {
        let stream = self.keys().stream(queue);
        let min_idle_ms = min_idle.as_millis() as u64;
        // [id, consumer, idle ms, times delivered]
        let pending: Vec<(String, String, u64, u64)> = self
            .pool()
            .query(
                redis::cmd("XPENDING")
                    .arg(&stream)
                    .arg(CONSUMER_GROUP)
                    .arg("IDLE")
                    .arg(min_idle_ms)
                    .arg("-")
                    .arg("+")
                    .arg(count.max(1)),
            )
            .await?;
        let pending = match visibility_of {
            Some(visibility_of) if !pending.is_empty() => {
                self.due_for_reclaim(&stream, pending, visibility_of)
                    .await?
            }
            _ => pending,
        };
        if pending.is_empty() {
            return Ok(Reclaimed::default());
        }
        let ids: Vec<&str> = pending.iter().map(|p| p.0.as_str()).collect();
        // XCLAIM re-checks the idle time, so two reclaimers never both take an entry.
        let claimed: StreamClaimReply = self
            .pool()
            .query(
                redis::cmd("XCLAIM")
                    .arg(&stream)
                    .arg(CONSUMER_GROUP)
                    .arg(consumer)
                    .arg(min_idle_ms)
                    .arg(&ids),
            )
            .await?;
        let mut out = Reclaimed::default();
        for mut entry in claimed.ids {
            let before = pending
                .iter()
                .find(|p| p.0 == entry.id)
                .map(|p| p.3)
                .unwrap_or(0);
            let payload = match entry.map.remove(DATA_FIELD) {
                Some(Value::BulkString(b)) => Some(b),
                Some(Value::SimpleString(s)) => Some(s.into_bytes()),
                _ => None,
            };
            let delivery = Delivery {
                queue: queue.to_string(),
                stream_id: entry.id,
                payload,
                deliveries: before + 1,
            };
            if before >= max_deliveries {
                out.poisoned.push(delivery);
            } else {
                out.deliveries.push(delivery);
            }
        }
        Ok(out)
    }

    /// Keeps the candidates idle past their own task's visibility timeout.
    async fn due_for_reclaim(
        &self,
        stream: &str,
        pending: Vec<(String, String, u64, u64)>,
        visibility_of: &(dyn Fn(&Envelope) -> Duration + Sync),
    ) -> Result<Vec<(String, String, u64, u64)>, BrokerError> {
        let mut pipe = redis::pipe();
        for p in &pending {
            pipe.cmd("XRANGE").arg(stream).arg(&p.0).arg(&p.0);
        }
        let entries: Vec<StreamRangeReply> = self.pool().query(&pipe).await?;
        Ok(pending
            .into_iter()
            .zip(entries)
            .filter(|(p, entry)| {
                let envelope = entry.ids.first().and_then(|e| match e.map.get(DATA_FIELD) {
                    Some(Value::BulkString(b)) => codec::decode::<Envelope>(b).ok(),
                    _ => None,
                });
                match envelope {
                    Some(env) => u128::from(p.2) >= visibility_of(&env).as_millis(),
                    // Undecodable or already deleted: nothing to wait for.
                    None => true,
                }
            })
            .map(|(p, _)| p)
            .collect())
    }
}
