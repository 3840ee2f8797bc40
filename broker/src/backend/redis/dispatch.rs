//! The producer's write path: pending records, stream entries and delayed-set members.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::client::dispatch::OutgoingMessage;
use crate::error::{BrokerError, DispatchError};
use crate::keys::DATA_FIELD;
use crate::model::envelope::Envelope;
use crate::model::record::TaskRecord;

use super::scripts::{self, ENQUEUE_ONCE, ENQUEUE_UNIQUE};
use super::{set_record_at, RedisBackend};

/// Most messages sent in one pipeline by [`RedisBackend::enqueue_many`].
const ENQUEUE_CHUNK: usize = 1000;

fn broker_err(task: &str, id: &str, error: BrokerError) -> DispatchError {
    DispatchError::Broker {
        task: task.to_string(),
        id: Some(id.to_string()),
        error,
    }
}

impl RedisBackend {
    /// Enqueues prepared messages, pipelined: each one's pending record, then its stream
    /// entry (or delayed-set member). On error, some messages of the batch may have been
    /// enqueued; the error says which task the failure hit.
    pub(crate) async fn enqueue_many(
        &self,
        mut msgs: Vec<OutgoingMessage>,
    ) -> Result<Vec<String>, DispatchError> {
        let Some(first) = msgs.first() else {
            return Ok(Vec::new());
        };
        // A partitioned queue's messages go to the partition their id picks.
        self.refresh_partitions(false)
            .await
            .map_err(|e| broker_err(&first.task, &first.id, e))?;
        for m in &mut msgs {
            m.lane = self.route(&m.lane, &m.id);
        }
        let first = &msgs[0];
        let lanes: HashSet<&str> = msgs.iter().map(|m| m.lane.as_str()).collect();
        for lane in lanes {
            self.ensure_group(lane)
                .await
                .map_err(|e| broker_err(&first.task, &first.id, e))?;
        }
        let ttl = self.pending_ttl_s();
        let track = self.config.track_pending;
        let mut ids = Vec::with_capacity(msgs.len());
        let mut stream_keys: HashMap<&str, String> = HashMap::new();
        let mut wake: HashMap<&str, u64> = HashMap::new();
        for chunk in msgs.chunks(ENQUEUE_CHUNK) {
            // The records first: a worker that finishes quickly must not have its result
            // overwritten by a late "pending". On one Redis the records and the entries go in
            // one pipeline, in that order; on a cluster they live in different slots (sent
            // side by side), so the records go in a round trip of their own before.
            let mut batch = self.pool().new_batch();
            // On one Redis, record and entry land together or not at all: an out-of-memory
            // Redis once took the record and refused the entry, leaving a "pending" task
            // that never runs for the pending TTL.
            batch.atomic();
            if track {
                for m in chunk {
                    let key = self.keys.task(&m.id);
                    batch.add(&key, set_record_at(&key, &m.pending_record, ttl));
                }
                if self.target().is_cluster() {
                    self.pool()
                        .batch(std::mem::replace(&mut batch, self.pool().new_batch()))
                        .await
                        .map_err(|e| broker_err(&chunk[0].task, &chunk[0].id, e))?;
                }
            }
            for m in chunk {
                let stream = stream_keys
                    .entry(m.lane.as_str())
                    .or_insert_with(|| self.keys.stream(&m.lane));
                match m.due_ms {
                    // Delayed: it waits in the lane's sorted set until a worker promotes it.
                    Some(due) => {
                        let delayed = self.keys.delayed(&m.lane);
                        let mut cmd = redis::cmd("ZADD");
                        cmd.arg(&delayed).arg(due).arg(&m.payload);
                        batch.add(&delayed, cmd);
                        let earliest = wake.entry(m.lane.as_str()).or_insert(due);
                        *earliest = (*earliest).min(due);
                    }
                    None => {
                        // Sized once: no regrowth per argument.
                        let mut cmd = redis::Cmd::with_capacity(
                            5,
                            4 + stream.len() + 1 + DATA_FIELD.len() + m.payload.len(),
                        );
                        cmd.arg("XADD")
                            .arg(stream.as_str())
                            .arg("*")
                            .arg(DATA_FIELD)
                            .arg(&m.payload);
                        batch.add(stream, cmd);
                    }
                }
            }
            // Tell workers' promoters about new delayed work, once per lane per chunk.
            for (lane, due) in wake.drain() {
                let channel = self.keys.wake_channel(lane);
                batch.add(&channel, self.wake(lane, due));
            }
            self.pool()
                .batch(batch)
                .await
                .map_err(|e| broker_err(&chunk[0].task, &chunk[0].id, e))?;
            ids.extend(chunk.iter().map(|m| m.id.clone()));
        }
        Ok(ids)
    }

    /// Enqueues `msg` unless a task holding uniqueness `key` is pending or running; returns
    /// the id of the task that holds the key (this one, or the earlier one).
    pub(crate) async fn enqueue_unique(
        &self,
        mut msg: OutgoingMessage,
        key: &str,
        ttl: Duration,
    ) -> Result<String, DispatchError> {
        self.refresh_partitions(false)
            .await
            .map_err(|e| broker_err(&msg.task, &msg.id, e))?;
        // On a partitioned queue the key picks the partition, so that one key is always
        // checked in one place.
        msg.lane = self.route(&msg.lane, key);
        let err = |e| broker_err(&msg.task, &msg.id, e);
        self.ensure_group(&msg.lane).await.map_err(err)?;
        let queue = crate::model::priority::split_lane(&msg.lane).0;
        let keys = scripts::enqueue_unique_keys(&self.keys, queue, key, &msg.lane);
        let mut inv = ENQUEUE_UNIQUE.with_keys(&keys);
        inv.arg(&msg.id)
            .arg(ttl.as_secs().max(1))
            .arg(&msg.payload)
            .arg(msg.due_ms.map(|d| d.to_string()).unwrap_or_default())
            .arg(DATA_FIELD);
        // The pending record first, as for any dispatch (a fast worker's result must not be
        // overwritten); if another task holds the key, it is deleted again below.
        if self.config.track_pending {
            self.pool()
                .query::<(), _>(&self.set_record(
                    &msg.id,
                    &msg.pending_record,
                    self.pending_ttl_s(),
                ))
                .await
                .map_err(err)?;
        }
        let owner: String = self.pool().invoke(&inv).await.map_err(err)?;
        // (Record and key live in different slots: two steps, the record first.)
        if owner != msg.id {
            if self.config.track_pending {
                let _ = self
                    .pool()
                    .query::<(), _>(redis::cmd("DEL").arg(self.keys.task(&msg.id)))
                    .await;
            }
        } else if let Some(due) = msg.due_ms {
            self.announce_delayed(&msg.lane, due).await;
        }
        Ok(owner)
    }

    /// Enqueues `msg` unless a message with its id was enqueued this way within `ttl`;
    /// returns whether it enqueued. The mark, the pending record and the entry are one step.
    pub(crate) async fn enqueue_once(
        &self,
        msg: &OutgoingMessage,
        ttl: Duration,
    ) -> Result<bool, DispatchError> {
        let err = |e| broker_err(&msg.task, &msg.id, e);
        self.refresh_partitions(false).await.map_err(err)?;
        // The id picks the partition: a delivery tried again lands where the first did.
        let lane = self.route(&msg.lane, &msg.id);
        self.ensure_group(&lane).await.map_err(err)?;
        // The pending record first, in the task's slot, written only if absent: delivering
        // again after the task ran must not turn its result back into "pending".
        if self.config.track_pending {
            let mut set = self.set_record(&msg.id, &msg.pending_record, self.pending_ttl_s());
            set.arg("NX");
            self.pool().query::<(), _>(&set).await.map_err(err)?;
        }
        let keys = scripts::enqueue_once_keys(&self.keys, &lane, &msg.id);
        let mut inv = ENQUEUE_ONCE.with_keys(&keys);
        inv.arg(ttl.as_millis().max(1) as u64)
            .arg(&msg.payload)
            .arg(msg.due_ms.map(|d| d.to_string()).unwrap_or_default())
            .arg(DATA_FIELD);
        let n: i64 = self.pool().invoke(&inv).await.map_err(err)?;
        if n == 1 {
            if let Some(due) = msg.due_ms {
                self.announce_delayed(&lane, due).await;
            }
        }
        Ok(n == 1)
    }

    /// [`RedisBackend::enqueue_once`] of many messages in one round trip (one pipeline per
    /// slot on a cluster): each one's pending record (`SET NX`), then its idempotent enqueue.
    /// Returns, per message, whether this call enqueued it. On error, any of them may have
    /// been enqueued (each at most once: sending them again is safe).
    pub(crate) async fn enqueue_once_many(
        &self,
        msgs: &[OutgoingMessage],
        ttl: Duration,
    ) -> Result<Vec<bool>, BrokerError> {
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        self.refresh_partitions(false).await?;
        let lanes: Vec<String> = msgs.iter().map(|m| self.route(&m.lane, &m.id)).collect();
        let mut groups: Vec<&str> = lanes.iter().map(String::as_str).collect();
        groups.sort_unstable();
        groups.dedup();
        for lane in groups {
            self.ensure_group(lane).await?;
        }
        let mut batch = self.pool().new_batch();
        let mut scripts = Vec::with_capacity(msgs.len());
        for (msg, lane) in msgs.iter().zip(&lanes) {
            if self.config.track_pending {
                let mut set = self.set_record(&msg.id, &msg.pending_record, self.pending_ttl_s());
                set.arg("NX");
                batch.add(&self.keys.task(&msg.id), set);
            }
            let keys = scripts::enqueue_once_keys(&self.keys, lane, &msg.id);
            let mut cmd = ENQUEUE_ONCE.eval(&keys);
            cmd.arg(ttl.as_millis().max(1) as u64)
                .arg(&msg.payload)
                .arg(msg.due_ms.map(|d| d.to_string()).unwrap_or_default())
                .arg(DATA_FIELD);
            scripts.push(batch.len());
            batch.add(&keys[0], cmd);
        }
        let replies = self.pool().batch(batch).await?;
        let mut out = Vec::with_capacity(msgs.len());
        for ((i, msg), lane) in scripts.into_iter().zip(msgs).zip(&lanes) {
            let sent = matches!(replies.get(i), Some(redis::Value::Int(1)));
            if sent {
                if let Some(due) = msg.due_ms {
                    self.announce_delayed(lane, due).await;
                }
            }
            out.push(sent);
        }
        Ok(out)
    }

    /// Tells workers' forwarders that a message on `lane` is due at `due` (best effort: they
    /// also wake at least once a second).
    async fn announce_delayed(&self, lane: &str, due: u64) {
        let _ = self.pool().query::<(), _>(&self.wake(lane, due)).await;
    }

    /// `PUBLISH` of the wake notice of a message on `lane` due at `due`.
    fn wake(&self, lane: &str, due: u64) -> redis::Cmd {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(self.keys.wake_channel(lane)).arg(due);
        cmd
    }

    /// Writes the pending records of a chain's later steps (sent one by one as their
    /// predecessors finish), making sure their lanes have consumer groups.
    pub(crate) async fn prepare_chain(&self, later: &[Envelope]) -> Result<(), DispatchError> {
        if later.is_empty() {
            return Ok(());
        }
        self.refresh_partitions(false)
            .await
            .map_err(|e| broker_err(&later[0].task, &later[0].id, e))?;
        let mut batch = self.pool().new_batch();
        for step in later {
            // The worker that finishes the step before sends it: its lane must have a group.
            self.ensure_group(&self.route(&step.priority.lane(&step.queue), &step.id))
                .await
                .map_err(|e| broker_err(&step.task, &step.id, e))?;
            let record = self
                .wire
                .encode_record(&TaskRecord::accepted(
                    &step.task,
                    &step.queue,
                    step.enqueued_at_ms,
                    false,
                ))
                .map_err(|error| DispatchError::Encode {
                    task: step.task.clone(),
                    error,
                })?;
            batch.add(
                &self.keys.task(&step.id),
                self.set_record(&step.id, &record, self.pending_ttl_s()),
            );
        }
        self.pool()
            .batch(batch)
            .await
            .map(drop)
            .map_err(|e| broker_err(&later[0].task, &later[0].id, e))
    }

    /// Stores a group's size and callback (with the callback's pending record) before its
    /// members are sent.
    pub(crate) async fn register_group(
        &self,
        group_id: &str,
        size: usize,
        callback: Option<&OutgoingMessage>,
        task: &str,
    ) -> Result<(), DispatchError> {
        let err = |error| DispatchError::Broker {
            task: task.to_string(),
            id: callback.map(|cb| cb.id.clone()),
            error,
        };
        let ttl = self.pending_ttl_s();
        // The group lives in its callback's queue's slot, so that the last member's count and
        // the callback's send are one script.
        let key = self.keys.group(
            group_id,
            callback.map(|cb| crate::model::priority::split_lane(&cb.lane).0),
        );
        let mut batch = self.pool().new_batch();
        let mut hset = redis::cmd("HSET");
        hset.arg(&key).arg("size").arg(size);
        if let Some(cb) = callback {
            self.ensure_group(&cb.lane).await.map_err(err)?;
            hset.arg("callback").arg(&cb.payload);
            batch.add(
                &self.keys.task(&cb.id),
                self.set_record(&cb.id, &cb.pending_record, ttl),
            );
        }
        batch.add(&key, hset);
        batch.add(&key, redis::cmd("EXPIRE").arg(&key).arg(ttl).clone());
        self.pool().batch(batch).await.map(drop).map_err(err)
    }
}
