//! The worker's surface: what one worker process reads and writes as its consumer.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::completion::Write;
use super::delivery::{Notice, Promotion, Reclaimed, WorkerInfo};
use super::Gate;
use crate::backend::redis::reader::StreamReader;
use crate::client::broker::Broker;
use crate::codec::{CodecError, ValueCodec};
use crate::error::BrokerError;
use crate::model::envelope::Envelope;
use crate::model::record::TaskRecord;

/// A worker's handle on kiq, as one named consumer of the consumer group: obtained with
/// [`Broker::consumer`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Consumer {
    broker: Broker,
    name: String,
}

impl Consumer {
    pub(crate) fn new(broker: Broker, name: String) -> Self {
        Self { broker, name }
    }

    /// The consumer name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The broker this consumer belongs to (for dispatches from inside tasks).
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The codec of task arguments and outputs.
    pub fn codec(&self) -> ValueCodec {
        self.broker.codec()
    }

    /// Decodes a delivered message's envelope with the broker's wire format.
    pub fn decode(&self, payload: &[u8]) -> Result<Envelope, CodecError> {
        self.broker.wire().decode_envelope(payload)
    }

    /// A delivered message's task id, without decoding the rest of its envelope.
    pub fn task_id(&self, payload: &[u8]) -> Option<String> {
        self.broker.wire().task_id(payload)
    }

    /// How `lanes` (most urgent first) are split among readers, one fetch loop each: on a
    /// Redis Cluster a reader reads one queue (its keys must keep to one slot), elsewhere one
    /// reader reads every lane.
    pub fn reader_groups(&self, lanes: &[String]) -> Vec<Vec<String>> {
        match self.redis("reading through a consumer group") {
            Ok(r) => r.reader_groups(lanes),
            Err(_) => vec![lanes.to_vec()],
        }
    }

    /// Whether Redis holds keys of kiq 0.1's data model (v1), which this version does not read.
    pub async fn holds_v1_data(&self) -> Result<bool, BrokerError> {
        self.redis("checking for v1 data")?.has_v1_keys().await
    }

    /// The physical queues to read for `queues`: each queue, and its partitions if it has
    /// several (`mail`, `mail#1`, …), as stored in Redis now. Without Redis, the queues.
    pub async fn physical_queues(&self, queues: &[String]) -> Result<Vec<String>, BrokerError> {
        let Ok(redis) = self.redis("partitions") else {
            return Ok(queues.to_vec());
        };
        redis.refresh_partitions(true).await?;
        Ok(queues
            .iter()
            .flat_map(|q| redis.physical_queues(q))
            .collect())
    }

    /// Opens a reader of `lanes` (most urgent first), on a connection of its own.
    pub async fn reader(&self, lanes: &[String]) -> Result<StreamReader, BrokerError> {
        self.redis("reading through a consumer group")?
            .reader(lanes, &self.name)
            .await
    }

    /// Writes a batch (records first, then the acknowledgements of completed messages). If it
    /// fails, nothing of the batch is acknowledged: the messages stay pending.
    pub async fn write(&self, batch: &[Write]) -> Result<(), BrokerError> {
        self.broker.backend().write(&self.broker, batch).await
    }

    /// Keeps this consumer's leases on messages `ids` of `lane` fresh. Returns the ids it no
    /// longer owns (another worker reclaimed them).
    pub async fn refresh_leases(
        &self,
        lane: &str,
        ids: &[String],
    ) -> Result<Vec<String>, BrokerError> {
        self.redis("message leases")?
            .refresh_leases(lane, &self.name, ids)
            .await
    }

    /// Claims up to `count` messages of `lane` idle for at least `min_idle` (their worker
    /// stopped refreshing them). Those already delivered `max_deliveries` times come back as
    /// poisoned. `visibility_of`, when given, names a longer visibility timeout for some
    /// tasks: only messages idle past their own task's timeout are claimed.
    pub async fn reclaim(
        &self,
        lane: &str,
        min_idle: Duration,
        max_deliveries: u64,
        count: usize,
        visibility_of: Option<&(dyn Fn(&Envelope) -> Duration + Sync)>,
    ) -> Result<Reclaimed, BrokerError> {
        self.redis("reclaiming messages")?
            .reclaim(
                lane,
                &self.name,
                min_idle,
                max_deliveries,
                count,
                visibility_of,
            )
            .await
    }

    /// Moves up to `limit` delayed messages of `lane` due by `now_ms` into its stream.
    pub async fn promote_due(
        &self,
        lane: &str,
        now_ms: u64,
        limit: usize,
    ) -> Result<Promotion, BrokerError> {
        self.redis("delayed messages")?
            .promote_due(lane, now_ms, limit)
            .await
    }

    /// Records this worker's heartbeat.
    pub async fn heartbeat(&self, info: &WorkerInfo) -> Result<(), BrokerError> {
        self.redis("heartbeats")?.heartbeat(info).await
    }

    /// What this worker must not do now: the paused queues, and whether it was told to go
    /// quiet (one round trip).
    pub async fn gate(&self) -> Result<Gate, BrokerError> {
        self.redis("queue control")?.gate(&self.name).await
    }

    /// Removes this worker's heartbeat entry (on a clean exit).
    pub async fn remove_heartbeat(&self) -> Result<(), BrokerError> {
        self.redis("heartbeats")?.remove_heartbeat(&self.name).await
    }

    /// Leaves `lane`'s consumer group if this consumer holds nothing there (a clean exit).
    pub async fn leave(&self, lane: &str) -> Result<bool, BrokerError> {
        self.redis("consumer groups")?
            .remove_consumer(lane, &self.name)
            .await
    }

    /// Removes consumers of `lane`'s group that hold nothing and have been idle longer than
    /// `idle`: workers that died long ago. Returns how many.
    pub async fn prune_consumers(&self, lane: &str, idle: Duration) -> Result<u64, BrokerError> {
        self.redis("consumer groups")?
            .prune_consumers(lane, idle)
            .await
    }

    /// Drops `queue`'s finished-task index entries older than the result TTL or beyond the
    /// size cap. Workers call it about once a minute.
    pub async fn trim_indexes(&self, queue: &str) -> Result<(), BrokerError> {
        self.redis("finished-task indexes")?
            .trim_indexes(queue)
            .await
    }

    /// Makes the history's rollups of the last settled ten-minute windows that have none yet
    /// (workers' janitors call it once a minute, so charts by ten minutes stay cheap to read).
    pub async fn roll_up_history(&self) -> Result<(), BrokerError> {
        self.redis("history")?.roll_up_recent().await
    }

    /// Which of `ids` are marked cancelled (one round trip).
    pub async fn cancelled(&self, ids: &[&str]) -> Result<Vec<bool>, BrokerError> {
        self.redis("cancel marks")?.cancelled(ids).await
    }

    /// Subscribes to what this worker must hear between reads: new delayed work on `lanes`
    /// and cancellations, until `stop` (see [`Notice`]).
    pub fn notices(
        &self,
        lanes: &[String],
        stop: CancellationToken,
    ) -> Result<mpsc::Receiver<Notice>, BrokerError> {
        Ok(self.redis("notices")?.notices(lanes, stop))
    }

    /// Takes a token from rate-limit bucket `name` (shared by every worker), which refills
    /// `per_second` tokens a second and holds at most `burst`. `None`: taken, go ahead;
    /// `Some(d)`: empty, the next token is due in `d`.
    pub async fn take_token(
        &self,
        name: &str,
        per_second: f64,
        burst: u32,
    ) -> Result<Option<Duration>, BrokerError> {
        if !(per_second > 0.0 && per_second.is_finite()) {
            return Err(BrokerError::Config(format!(
                "rate {per_second} per second must be positive"
            )));
        }
        self.broker
            .backend()
            .take_token(name, per_second, burst)
            .await
    }

    /// The records of tasks `ids` (a group callback gathers its members' outputs).
    pub async fn records(&self, ids: &[String]) -> Result<Vec<Option<TaskRecord>>, BrokerError> {
        self.broker.records(ids).await
    }

    fn redis(&self, what: &'static str) -> Result<&crate::backend::RedisBackend, BrokerError> {
        self.broker.backend().redis(what)
    }
}
