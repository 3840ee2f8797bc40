//! The worker's side of a Taskiq stream: reading it through Taskiq's consumer group, taking
//! over what stopped kiq workers held, and settling entries.

use std::time::Duration;

use crate::backend::redis::connection::RedisConnection;
pub use crate::backend::redis::taskiq::Settle;
use crate::consumer::Consumer;
use crate::error::BrokerError;

use super::stream::{TaskiqEntry, TaskiqStream};

/// The prefix of every kiq consumer name in a Taskiq group (Python's are bare UUIDs), so that
/// kiq takes over only its own stopped consumers' entries.
pub const KIQ_CONSUMER_PREFIX: &str = "kiq-";

/// Reads one Taskiq stream for a worker, on a connection of its own.
pub struct TaskiqReader {
    consumer: Consumer,
    stream: TaskiqStream,
    name: String,
    conn: RedisConnection,
}

impl std::fmt::Debug for TaskiqReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskiqReader")
            .field("stream", &self.stream.stream)
            .field("consumer", &self.name)
            .finish()
    }
}

impl Consumer {
    /// Opens a reader of the Taskiq stream `stream` (its group is made if missing, at `$`).
    /// The reader's consumer name is this consumer's, prefixed with `kiq-`.
    pub async fn taskiq_reader(&self, stream: &TaskiqStream) -> Result<TaskiqReader, BrokerError> {
        stream.check().map_err(BrokerError::Invalid)?;
        let name = format!("{KIQ_CONSUMER_PREFIX}{}", self.name());
        let conn = self
            .broker()
            .backend()
            .redis("Taskiq streams")?
            .taskiq_connection(stream, &name)
            .await?;
        Ok(TaskiqReader {
            consumer: self.clone(),
            stream: stream.clone(),
            name,
            conn,
        })
    }
}

impl TaskiqReader {
    /// The stream read.
    pub fn stream(&self) -> &TaskiqStream {
        &self.stream
    }

    /// This reader's consumer name in Taskiq's group.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The consumer this reader belongs to.
    pub fn consumer(&self) -> &Consumer {
        &self.consumer
    }

    /// Reads up to `count` new entries, waiting at most `block` for the first.
    pub async fn read(
        &mut self,
        count: usize,
        block: Duration,
    ) -> Result<Vec<TaskiqEntry>, BrokerError> {
        crate::backend::redis::taskiq::taskiq_read(
            &mut self.conn,
            &self.stream,
            &self.name,
            count,
            block,
        )
        .await
        .map_err(|e| e.at(&self.consumer.broker().config().described_url()))
    }

    /// Takes over up to `count` entries that kiq consumers held longer than the stream's
    /// `reclaim_after` (never a Python consumer's).
    pub async fn reclaim(&self, count: usize) -> Result<Vec<TaskiqEntry>, BrokerError> {
        self.consumer
            .broker()
            .backend()
            .redis("Taskiq streams")?
            .taskiq_claim(&self.stream, &self.name, KIQ_CONSUMER_PREFIX, count)
            .await
    }

    /// Writes dead letters and results, then acks and deletes the entries. On error nothing
    /// is acked: the entries stay pending and are taken over later.
    pub async fn settle(&self, settled: &[Settle]) -> Result<(), BrokerError> {
        self.consumer
            .broker()
            .backend()
            .redis("Taskiq streams")?
            .taskiq_settle(&self.stream, settled)
            .await
    }
}

impl Consumer {
    /// Hands Taskiq messages on to their tasks' kiq queues, in one round trip: each `(d,
    /// reply)` becomes a kiq message that carries `reply` (where its result goes for Python),
    /// enqueued at most once per task id within the result TTL, however often its Taskiq
    /// entry is delivered. Returns, per message, `Ok` (enqueued now or before) or why kiq
    /// refused it (a dispatch layer, a delay past ten years, a message over the payload
    /// limit); `Err` when Redis did not take the batch (sending it again is safe).
    pub async fn taskiq_forward(
        &self,
        items: Vec<(
            crate::client::RawDispatch<'_>,
            crate::model::reply::TaskiqReply,
        )>,
    ) -> Result<Vec<Result<(), crate::error::DispatchError>>, BrokerError> {
        let broker = self.broker();
        let now = crate::model::envelope::now_ms();
        let mut out = Vec::with_capacity(items.len());
        let mut msgs = Vec::new();
        for (d, reply) in items {
            let due_ms = d.due_ms;
            let msg = broker.envelope_for(d, now).and_then(|mut envelope| {
                envelope.taskiq = Some(reply);
                broker.outgoing(envelope, due_ms, None)
            });
            match msg {
                Ok(m) => {
                    msgs.push(m);
                    out.push(Ok(()));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        broker
            .backend()
            .redis("Taskiq streams")?
            .enqueue_once_many(&msgs, broker.config().result_ttl)
            .await?;
        Ok(out)
    }
}
