//! The backend seam: where kiq keeps its queues and records. Chosen once, when a broker is
//! made; the producer, consumer, inspector and control surfaces go through it and never ask
//! which backend they are on.
//!
//! - [`redis`]: one Redis (or a primary). Redis Cluster and Sentinel are further variants.
//! - [`memory`]: in process, for users' unit tests; operations that need other processes
//!   (reading through a consumer group, leases, dead-letter tooling, the scheduler) return
//!   [`BrokerError::Unsupported`].
//!
//! Operations both backends serve are matched here, in one place; the rest are reached with
//! [`Backend::redis`].

pub(crate) mod memory;
pub(crate) mod redis;

use std::time::Duration;

use crate::client::broker::Broker;
use crate::client::dispatch::OutgoingMessage;
use crate::consumer::completion::Write;
use crate::error::{BrokerError, DispatchError, WaitError};
use crate::model::envelope::Envelope;
use crate::model::record::TaskRecord;

pub(crate) use self::memory::Memory;
pub(crate) use self::redis::RedisBackend;

/// Where a broker keeps everything.
// One per broker, behind its Arc: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Backend {
    Redis(RedisBackend),
    Memory(Memory),
}

impl Backend {
    /// The Redis backend, or [`BrokerError::Unsupported`] naming `what` needs it.
    pub(crate) fn redis(&self, what: &'static str) -> Result<&RedisBackend, BrokerError> {
        match self {
            Backend::Redis(r) => Ok(r),
            Backend::Memory(_) => Err(BrokerError::Unsupported(what)),
        }
    }

    pub(crate) async fn ping(&self) -> Result<(), BrokerError> {
        match self {
            Backend::Redis(r) => r.ping().await,
            Backend::Memory(_) => Ok(()),
        }
    }

    pub(crate) async fn enqueue_many(
        &self,
        broker: &Broker,
        msgs: Vec<OutgoingMessage>,
    ) -> Result<Vec<String>, DispatchError> {
        match self {
            Backend::Redis(r) => r.enqueue_many(msgs).await,
            Backend::Memory(m) => Ok(m.enqueue(broker, msgs)),
        }
    }

    pub(crate) async fn enqueue_unique(
        &self,
        broker: &Broker,
        msg: OutgoingMessage,
        key: &str,
        ttl: Duration,
    ) -> Result<String, DispatchError> {
        match self {
            Backend::Redis(r) => r.enqueue_unique(msg, key, ttl).await,
            Backend::Memory(m) => Ok(m.enqueue_unique(broker, msg, key)),
        }
    }

    /// The lane a message for `lane` keyed by `key` is written to: its partition's, when its
    /// queue is partitioned (Redis only; in memory every queue is one).
    pub(crate) async fn route_lane(&self, lane: &str, key: &str) -> Result<String, BrokerError> {
        match self {
            Backend::Redis(r) => {
                r.refresh_partitions(false).await?;
                Ok(r.route(lane, key))
            }
            Backend::Memory(_) => Ok(lane.to_string()),
        }
    }

    /// Writes the pending records of a chain's later steps.
    pub(crate) async fn prepare_chain(&self, later: &[Envelope]) -> Result<(), DispatchError> {
        match self {
            Backend::Redis(r) => r.prepare_chain(later).await,
            Backend::Memory(m) => {
                for step in later {
                    m.set_record(
                        &step.id,
                        TaskRecord::accepted(&step.task, &step.queue, step.enqueued_at_ms, false),
                    );
                }
                Ok(())
            }
        }
    }

    /// Stores a group's size and callback before its members are sent.
    pub(crate) async fn register_group(
        &self,
        group_id: &str,
        size: usize,
        callback: Option<&OutgoingMessage>,
        task: &str,
    ) -> Result<(), DispatchError> {
        match self {
            Backend::Redis(r) => r.register_group(group_id, size, callback, task).await,
            Backend::Memory(m) => {
                if let Some(cb) = callback {
                    if let Ok(r) = m.wire().decode_record(&cb.pending_record) {
                        m.set_record(&cb.id, r);
                    }
                }
                m.register_group(
                    group_id,
                    size,
                    callback.map(|cb| (cb.lane.clone(), cb.payload.clone())),
                );
                Ok(())
            }
        }
    }

    pub(crate) async fn record(&self, id: &str) -> Result<Option<TaskRecord>, BrokerError> {
        match self {
            Backend::Redis(r) => r.record(id).await,
            Backend::Memory(m) => Ok(m.record(id)),
        }
    }

    pub(crate) async fn records(
        &self,
        ids: &[String],
    ) -> Result<Vec<Option<TaskRecord>>, BrokerError> {
        match self {
            Backend::Redis(r) => r.records(ids).await,
            Backend::Memory(m) => Ok(ids.iter().map(|id| m.record(id)).collect()),
        }
    }

    pub(crate) async fn wait_record(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<TaskRecord, WaitError> {
        match self {
            Backend::Redis(r) => r.wait_record(id, timeout).await,
            Backend::Memory(m) => m.wait_record(id, timeout).await,
        }
    }

    pub(crate) async fn set_progress(&self, id: &str, bytes: Vec<u8>) -> Result<(), BrokerError> {
        match self {
            Backend::Redis(r) => r.set_progress(id, bytes).await,
            Backend::Memory(m) => {
                m.set_progress(id, bytes);
                Ok(())
            }
        }
    }

    pub(crate) async fn progress(&self, id: &str) -> Result<Option<Vec<u8>>, BrokerError> {
        match self {
            Backend::Redis(r) => r.progress(id).await,
            Backend::Memory(m) => Ok(m.progress(id)),
        }
    }

    /// Cancels task `id` with its `cancelled` record unless it finished; whether it did.
    pub(crate) async fn cancel(&self, id: &str, record: TaskRecord) -> Result<bool, BrokerError> {
        match self {
            Backend::Redis(r) => r.cancel(id, &record).await,
            Backend::Memory(m) => Ok(m.cancel(id, record)),
        }
    }

    pub(crate) async fn write(&self, broker: &Broker, batch: &[Write]) -> Result<(), BrokerError> {
        match self {
            Backend::Redis(r) => r.write(batch).await,
            Backend::Memory(m) => {
                m.write(broker, batch);
                Ok(())
            }
        }
    }

    /// Takes a rate-limit token; the in-memory backend runs tasks unthrottled.
    pub(crate) async fn take_token(
        &self,
        name: &str,
        per_second: f64,
        burst: u32,
    ) -> Result<Option<Duration>, BrokerError> {
        match self {
            Backend::Redis(r) => r.take_token(name, per_second, burst).await,
            Backend::Memory(_) => Ok(None),
        }
    }
}
