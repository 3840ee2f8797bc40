//! Recovering work from dead workers, and keeping live workers' work from being taken.
//!
//! A message read through the group stays in its pending-entries list (PEL) until acked. A
//! live worker refreshes the idle time of what it holds (`refresh_leases`); any
//! worker periodically claims entries idle for longer than the visibility timeout
//! (`reclaim`): their owner has stopped refreshing them, so it is dead or cut off.

use std::collections::HashMap;
use std::time::Duration;

use redis::streams::{StreamClaimReply, StreamRangeReply};
use redis::Value;

use crate::consumer::delivery::{Delivery, Reclaimed};
use crate::error::BrokerError;
use crate::keys::CONSUMER_GROUP;
use crate::model::envelope::Envelope;

use super::scripts::{self, DELETE_IDLE_CONSUMER, REFRESH_LEASES};
use super::{data_field, RedisBackend};

impl RedisBackend {
    /// Removes `consumer` from `queue`'s group if it holds nothing (a worker leaving cleanly).
    /// Returns whether it was removed.
    pub(crate) async fn remove_consumer(
        &self,
        queue: &str,
        consumer: &str,
    ) -> Result<bool, BrokerError> {
        let mut inv = DELETE_IDLE_CONSUMER.with_keys(&scripts::lane_keys(&self.keys, queue));
        inv.arg(CONSUMER_GROUP).arg(consumer);
        let n: i64 = self.pool().invoke(&inv).await?;
        Ok(n == 1)
    }

    /// Removes consumers of `queue`'s group that hold nothing and have been idle for longer
    /// than `idle`: workers that died long ago. Returns how many were removed.
    pub(crate) async fn prune_consumers(
        &self,
        queue: &str,
        idle: Duration,
    ) -> Result<u64, BrokerError> {
        let info: Vec<HashMap<String, Value>> = self
            .pool()
            .query(
                redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(self.keys.stream(queue))
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
                let mut inv =
                    DELETE_IDLE_CONSUMER.with_keys(&scripts::lane_keys(&self.keys, queue));
                inv.arg(CONSUMER_GROUP).arg(&name);
                let n: i64 = self.pool().invoke(&inv).await?;
                removed += n as u64;
            }
        }
        Ok(removed)
    }

    /// Keeps this consumer's leases on `ids` of `queue` fresh. Returns the ids it no longer
    /// owns (another worker reclaimed them).
    pub(crate) async fn refresh_leases(
        &self,
        queue: &str,
        consumer: &str,
        ids: &[String],
    ) -> Result<Vec<String>, BrokerError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = REFRESH_LEASES.with_keys(&scripts::lane_keys(&self.keys, queue));
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
    pub(crate) async fn reclaim(
        &self,
        queue: &str,
        consumer: &str,
        min_idle: Duration,
        max_deliveries: u64,
        count: usize,
        visibility_of: Option<&(dyn Fn(&Envelope) -> Duration + Sync)>,
    ) -> Result<Reclaimed, BrokerError> {
        let stream = self.keys.stream(queue);
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
            let payload = data_field(&mut entry.map);
            let delivery = Delivery {
                lane: queue.to_string(),
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
            .filter_map(|(p, entry)| {
                let envelope = entry
                    .ids
                    .into_iter()
                    .next()
                    .and_then(|mut e| data_field(&mut e.map))
                    .and_then(|b| self.wire.decode_envelope(&b).ok());
                let due = match envelope {
                    Some(env) => u128::from(p.2) >= visibility_of(&env).as_millis(),
                    // Undecodable or already deleted: nothing to wait for.
                    None => true,
                };
                due.then_some(p)
            })
            .collect())
    }
}
