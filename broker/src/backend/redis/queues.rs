//! Queue control: pausing and resuming a queue, purging what waits in it, and telling a worker
//! to go quiet. Workers learn of a change from an announcement on the control channel, and
//! look again every second in case they missed one (`Consumer::gate`).

use std::collections::BTreeMap;

use crate::error::BrokerError;
use crate::keys::{CONSUMER_GROUP, DATA_FIELD};
use crate::model::envelope::now_ms;
use crate::model::partition;
use crate::model::priority;
use crate::model::record::{FailureKind, TaskFailure, TaskRecord, TaskState};

use super::scripts::{self, PURGE_LANE, RELEASE_UNIQUE};
use super::RedisBackend;

/// A purge takes at most this many messages of each kind per lane per script call, so Redis
/// is never held for long however big the queue.
const PURGE_STEP: usize = 500;

/// What a worker must not do now: the paused queues, and whether it was told to go quiet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Gate {
    /// Paused queues (logical names: every partition and lane of each is paused).
    pub paused: Vec<String>,
    /// Whether this worker was told to go quiet.
    pub quiet: bool,
}

impl Gate {
    /// Whether `lane` (of a queue or one of its partitions) belongs to a paused queue.
    pub fn lane_paused(&self, lane: &str) -> bool {
        let queue = partition::logical(priority::split_lane(lane).0);
        self.paused.iter().any(|p| p == queue)
    }
}

impl RedisBackend {
    /// Pauses `queue` (a logical queue); returns whether it was running.
    pub(crate) async fn pause_queue(&self, queue: &str) -> Result<bool, BrokerError> {
        let key = self.keys.paused();
        let set = redis::cmd("HSETNX")
            .arg(&key)
            .arg(queue)
            .arg(now_ms())
            .clone();
        self.control_change(&key, set, format!("pause {queue}"))
            .await
    }

    /// Resumes `queue`; returns whether it was paused.
    pub(crate) async fn resume_queue(&self, queue: &str) -> Result<bool, BrokerError> {
        let key = self.keys.paused();
        let del = redis::cmd("HDEL").arg(&key).arg(queue).clone();
        self.control_change(&key, del, format!("resume {queue}"))
            .await
    }

    /// Runs `change` (a command on control key `key` answering 1 when it changed something),
    /// then announces `what` to workers; returns whether it changed something. Two slots on a
    /// cluster (the channel has no tag), so a batch.
    async fn control_change(
        &self,
        key: &str,
        change: redis::Cmd,
        what: String,
    ) -> Result<bool, BrokerError> {
        let channel = self.keys.control_channel();
        let mut batch = self.pool().new_batch();
        batch.add(key, change);
        batch.add(
            &channel,
            redis::cmd("PUBLISH").arg(&channel).arg(what).clone(),
        );
        let replies = self.pool().batch(batch).await?;
        Ok(matches!(replies.first(), Some(redis::Value::Int(1))))
    }

    /// Paused queues, with when each was paused (ms).
    pub(crate) async fn paused_queues(&self) -> Result<BTreeMap<String, u64>, BrokerError> {
        self.pool()
            .query(redis::cmd("HGETALL").arg(self.keys.paused()))
            .await
    }

    /// Tells worker `consumer` to go quiet; returns whether such a worker has a heartbeat.
    ///
    /// The mark is added, then the heartbeat looked for in the same round trip, and the mark
    /// taken back if there is none: a worker exiting meanwhile (which removes its heartbeat,
    /// then its mark) leaves no mark behind in any order.
    pub(crate) async fn quiet_worker(&self, consumer: &str) -> Result<bool, BrokerError> {
        let key = self.keys.quiet();
        let mut pipe = redis::pipe();
        pipe.cmd("SADD").arg(&key).arg(consumer).ignore();
        pipe.cmd("HEXISTS").arg(self.keys.workers()).arg(consumer);
        let (exists,): (bool,) = self.pool().query(&pipe).await?;
        if !exists {
            self.pool()
                .query::<(), _>(redis::cmd("SREM").arg(&key).arg(consumer))
                .await?;
            return Ok(false);
        }
        let channel = self.keys.control_channel();
        self.pool()
            .query::<(), _>(
                redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(format!("quiet {consumer}")),
            )
            .await?;
        Ok(true)
    }

    /// The paused queues and whether `consumer` was told to go quiet, in one round trip.
    pub(crate) async fn gate(&self, consumer: &str) -> Result<Gate, BrokerError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HKEYS").arg(self.keys.paused());
        pipe.cmd("SISMEMBER").arg(self.keys.quiet()).arg(consumer);
        let (mut paused, quiet): (Vec<String>, bool) = self.pool().query(&pipe).await?;
        paused.sort();
        Ok(Gate { paused, quiet })
    }

    /// Removes every waiting and delayed message of `queue` (every partition and lane), and
    /// records each task `cancelled`; messages a worker already holds are left to finish.
    /// Returns how many messages were removed.
    pub(crate) async fn purge_queue(&self, queue: &str) -> Result<u64, BrokerError> {
        self.refresh_partitions(true).await?;
        let lanes = priority::lanes(&self.physical_queues(queue));
        let mut removed = 0u64;
        for lane in &lanes {
            loop {
                let k = scripts::purge_lane_keys(&self.keys, lane);
                let mut inv = PURGE_LANE.with_keys(&k);
                inv.arg(CONSUMER_GROUP).arg(PURGE_STEP).arg(DATA_FIELD);
                let (waiting, delayed): (Vec<Vec<u8>>, Vec<Vec<u8>>) =
                    self.pool().invoke(&inv).await?;
                let n = waiting.len() + delayed.len();
                if n == 0 {
                    break;
                }
                removed += n as u64;
                self.record_purged(queue, lane, waiting.iter().chain(&delayed))
                    .await?;
                if waiting.len() < PURGE_STEP && delayed.len() < PURGE_STEP {
                    break;
                }
            }
        }
        Ok(removed)
    }

    /// Writes a `cancelled` record for each purged message whose envelope decodes (and whose
    /// task had not already finished), announces it to waiters, lists it among the queue's
    /// cancelled tasks and releases its uniqueness key.
    async fn record_purged<'a>(
        &self,
        queue: &str,
        lane: &str,
        messages: impl Iterator<Item = &'a Vec<u8>>,
    ) -> Result<(), BrokerError> {
        // The partition the messages were on: its record, index and uniqueness keys.
        let physical = priority::split_lane(lane).0;
        let envelopes: Vec<_> = messages
            .filter_map(|m| match self.wire.decode_envelope(m) {
                Ok(e) => Some(e),
                Err(e) => {
                    tracing::warn!(queue, error = %e, "purged a message that does not decode: no record written");
                    None
                }
            })
            .collect();
        if envelopes.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = envelopes.iter().map(|e| e.id.clone()).collect();
        let previous = self.records(&ids).await?;
        let now = now_ms();
        let ttl = self.result_ttl_s();
        let mut writes = self.pool().new_batch();
        let mut indexed: Vec<&str> = Vec::new();
        for (env, prev) in envelopes.iter().zip(&previous) {
            if prev.as_ref().is_some_and(|r| r.state.is_final()) {
                continue;
            }
            let mut record = TaskRecord::cancelled_on_request(prev.as_ref(), now);
            record.task = env.task.clone();
            record.queue = physical.to_string();
            record.enqueued_at_ms = env.enqueued_at_ms;
            record.attempts = record.attempts.max(env.attempt);
            if env.args.len() <= crate::model::record::ARGS_KEPT_MAX {
                record.args = Some(env.args.clone());
            }
            record.failure = Some(TaskFailure::new(
                FailureKind::Cancelled,
                format!("purged with queue {queue}"),
            ));
            record.history = match prev {
                Some(p) if !p.history.is_empty() => p.history.clone(),
                _ => env.history.clone(),
            };
            record.enter(
                TaskState::Cancelled,
                now,
                env.attempt,
                Some(format!("purged with queue {queue}")),
            );
            let bytes = self.wire.encode_record(&record)?;
            let key = self.keys.task(&env.id);
            writes.add(&key, super::set_record_at(&key, &bytes, ttl));
            let publish = super::complete::publish_done(self.publish_command(), &key, &bytes);
            writes.add(&key, publish);
            indexed.push(env.id.as_str());
            if let Some(unique) = &env.unique_key {
                let k = scripts::release_unique_keys(&self.keys, physical, unique);
                writes.add(&k[0], RELEASE_UNIQUE.eval(&k).arg(&env.id).clone());
            }
        }
        if !indexed.is_empty() {
            // Counted as cancelled, in the counters and the history, as a cancel by a worker is.
            let stats = self.keys.stats();
            writes.add(
                &stats,
                redis::cmd("HINCRBY")
                    .arg(&stats)
                    .arg("cancelled")
                    .arg(indexed.len())
                    .clone(),
            );
            let mut per_task: BTreeMap<&str, u64> = BTreeMap::new();
            for env in envelopes
                .iter()
                .filter(|e| indexed.contains(&e.id.as_str()))
            {
                *per_task.entry(env.task.as_str()).or_default() += 1;
            }
            let mut fields = vec![(
                crate::model::history::queue_field(partition::logical(physical), "cancelled"),
                indexed.len() as u64,
            )];
            fields.extend(
                per_task
                    .into_iter()
                    .map(|(t, n)| (crate::model::history::task_field(t, "cancelled"), n)),
            );
            super::history::add_counts(&mut writes, &self.keys, now, &fields);
            let index = self.keys.index(physical, TaskState::Cancelled);
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(&index);
            for id in indexed {
                cmd.arg(now).arg(id);
            }
            writes.add(&index, cmd);
        }
        self.pool().batch(writes).await.map(drop)
    }
}
