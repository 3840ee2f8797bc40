//! The Redis streams broker: dispatch, consumer groups, and what workers read and write.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::streams::StreamReadReply;
use redis::{Client, Value};
use serde::{de::DeserializeOwned, Serialize};

use crate::codec;
use crate::config::BrokerConfig;
use crate::connection::{self, Pool};
use crate::envelope::{self, Envelope, ENVELOPE_VERSION};
use crate::error::{BrokerError, DispatchError};
use crate::handle::TaskHandle;
use crate::keys::{Keys, CONSUMER_GROUP, DATA_FIELD};
use crate::record::{TaskRecord, TaskState};
use crate::task::Kicker;
use crate::waiter::Waiters;

/// Most messages sent in one pipeline by [`Broker::enqueue_many`].
const ENQUEUE_CHUNK: usize = 1000;

/// A handle on kiq's Redis: cheap to clone, share one per process.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    config: BrokerConfig,
    keys: Keys,
    client: Client,
    pool: Pool,
    waiters: Waiters,
    /// Queues whose consumer group this process has already made sure of.
    groups_ready: Mutex<HashSet<String>>,
    /// Set for an in-memory broker: everything goes there instead of Redis.
    memory: Option<crate::memory::Memory>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field(
                "redis_url",
                &connection::redact(&self.inner.config.redis_url),
            )
            .field("prefix", &self.inner.config.prefix)
            .finish()
    }
}

/// A message ready to be enqueued: encoded and checked, not yet sent.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// The task id.
    pub id: String,
    /// The target queue.
    pub queue: String,
    /// The lane of the queue that carries its priority (see [`crate::priority`]).
    pub lane: String,
    /// The task name.
    pub task: String,
    /// The encoded envelope.
    pub payload: Vec<u8>,
    /// The encoded pending record (shared by every message of a batch: it is the same for all).
    pub pending_record: Arc<Vec<u8>>,
    /// When it is due (ms since the epoch), for a delayed dispatch.
    pub due_ms: Option<u64>,
}

/// A dispatch by task name with pre-encoded arguments (see [`Broker::prepare_raw`]).
#[derive(Debug, Clone)]
pub struct RawDispatch<'a> {
    /// The task name.
    pub task: &'a str,
    /// The target queue.
    pub queue: &'a str,
    /// The argument tuple, encoded by the wire codec.
    pub args: Vec<u8>,
    /// A caller-chosen task id, or `None` for a fresh one.
    pub task_id: Option<&'a str>,
    /// Labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// A retry policy overriding the task's own.
    pub retry: Option<crate::retry::RetryPolicy>,
    /// A per-attempt timeout overriding the task's own.
    pub timeout: Option<Duration>,
    /// Start no earlier than this (ms since the epoch).
    pub due_ms: Option<u64>,
    /// The uniqueness key the task will hold (set by [`Kicker::unique`]).
    pub unique_key: Option<String>,
    /// Its priority.
    pub priority: crate::priority::Priority,
}

/// One message read from a queue.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The queue it was read from.
    pub queue: String,
    /// Its stream entry id.
    pub stream_id: String,
    /// The `data` field, if the entry has one.
    pub payload: Option<Vec<u8>>,
    /// How many times the group has delivered it, this delivery included.
    pub deliveries: u64,
}

/// What a worker writes when it is done with a message: the task's final record, a dead
/// letter, or both. Both are written before the message is acknowledged.
#[derive(Debug, Clone, Default)]
pub struct Completion {
    /// The queue the message came from.
    pub queue: String,
    /// Its stream entry id.
    pub stream_id: String,
    /// The task id and its encoded final record, to store and announce.
    pub record: Option<(String, Vec<u8>)>,
    /// A dead letter, when the message cannot ever succeed as it is.
    pub dead: Option<DeadLetter>,
    /// The next attempt (its encoded envelope) and when it is due (ms since the epoch).
    pub retry: Option<(Vec<u8>, u64)>,
    /// A uniqueness key to release (queue, key, holder task id): the task finished for good.
    pub release_unique: Option<(String, String, String)>,
    /// The next step of a chain to send: its lane and encoded envelope.
    pub next: Option<(String, Vec<u8>)>,
    /// More final records to store and announce (id, encoded record): a failed chain's
    /// remaining steps.
    pub also: Vec<(String, Vec<u8>)>,
    /// The group this task ended in (group id, index): counted towards the group's end.
    pub group_done: Option<(String, u32)>,
    /// A state mark, not an end: only `record` is written (a task started running); nothing
    /// is announced or acknowledged.
    pub mark: bool,
    /// A task that finished for good: listed in its queue's index and counted in the stats.
    pub finished: Option<Finished>,
}

/// What the indexes and counters need of a task that finished for good.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The queue it was dispatched to.
    pub queue: String,
    /// Its final state.
    pub state: TaskState,
    /// When it was accepted (ms since the epoch).
    pub enqueued_ms: u64,
    /// When its last attempt started, if it ran.
    pub started_ms: Option<u64>,
    /// When it finished.
    pub finished_ms: u64,
}

/// A message that could not be processed, with why.
#[derive(Debug, Clone, Default)]
pub struct DeadLetter {
    /// A short machine-readable reason, e.g. `malformed`, `unknown_task`.
    pub reason: String,
    /// The last error, for people.
    pub error: String,
    /// The task id, when the message decoded.
    pub task_id: Option<String>,
    /// The task name, when the message decoded.
    pub task: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// The original payload, byte for byte.
    pub payload: Vec<u8>,
}

/// Takes a uniqueness key for a task and enqueues it, or returns the id that holds the key.
const UNIQUE_ENQUEUE: &str = r#"
local owner = redis.call('GET', KEYS[1])
if owner then return owner end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[4] == '' then
  redis.call('XADD', KEYS[2], '*', ARGV[5], ARGV[3])
else
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
end
return ARGV[1]
"#;

/// Releases a uniqueness key if the finishing task still holds it.
const UNIQUE_RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Results up to this size are published with the completion, sparing waiters a GET.
const INLINE_RESULT_MAX: usize = 64 * 1024;

/// Dead-letter streams are capped at about this many entries.
pub(crate) const DEAD_LETTER_MAX_LEN: usize = 100_000;

impl Broker {
    /// Connects to the Redis at `url` with default settings and checks it answers.
    pub async fn connect(url: &str) -> Result<Self, BrokerError> {
        Self::from_config(BrokerConfig::new(url)).await
    }

    /// Connects with `config` and checks Redis answers.
    pub async fn from_config(config: BrokerConfig) -> Result<Self, BrokerError> {
        let broker = Self::lazy(config)?;
        broker.ping().await?;
        Ok(broker)
    }

    /// Builds a broker without contacting Redis: connections are made on first use.
    pub fn lazy(config: BrokerConfig) -> Result<Self, BrokerError> {
        if config.prefix.is_empty() || config.prefix.contains(['{', '}', ' ']) {
            return Err(BrokerError::Config(format!(
                "prefix {:?} must be non-empty, without braces or spaces",
                config.prefix
            )));
        }
        let client = connection::open_client(&config.redis_url)?;
        let pool = Pool::new(client.clone(), &config)?;
        let keys = Keys::new(config.prefix.clone());
        let waiters = Waiters::new(client.clone(), keys.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                keys,
                client,
                pool,
                waiters,
                groups_ready: Mutex::new(HashSet::new()),
                memory: None,
            }),
        })
    }

    pub(crate) fn with_memory(memory: crate::memory::Memory) -> Self {
        let config = BrokerConfig::new("redis://in-memory.invalid:1");
        let keys = Keys::new(config.prefix.clone());
        // Never connected: every Redis path checks for the memory backend first.
        let client = match connection::open_client(&config.redis_url) {
            Ok(c) => c,
            Err(_) => unreachable_client(),
        };
        let pool = match Pool::new(client.clone(), &config) {
            Ok(p) => p,
            Err(_) => unreachable_client(),
        };
        let waiters = Waiters::new(client.clone(), keys.clone());
        Self {
            inner: Arc::new(Inner {
                config,
                keys,
                client,
                pool,
                waiters,
                groups_ready: Mutex::new(HashSet::new()),
                memory: Some(memory),
            }),
        }
    }

    pub(crate) fn memory(&self) -> Option<&crate::memory::Memory> {
        self.inner.memory.as_ref()
    }

    /// The configuration in use.
    pub fn config(&self) -> &BrokerConfig {
        &self.inner.config
    }

    /// The key names in use.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The command pool.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The underlying redis client (for dedicated connections).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    pub(crate) fn waiters(&self) -> &Waiters {
        &self.inner.waiters
    }

    /// Checks Redis answers.
    pub async fn ping(&self) -> Result<(), BrokerError> {
        if self.memory().is_some() {
            return Ok(());
        }
        self.inner.pool.query::<(), _>(&redis::cmd("PING")).await
    }

    /// A handle on task `id`, to wait for its result.
    pub fn handle<T: DeserializeOwned>(&self, id: impl Into<String>) -> TaskHandle<T> {
        TaskHandle::new(self.clone(), id.into())
    }

    /// Reads task `id`'s record: `None` if it is unknown or expired.
    pub async fn record(&self, id: &str) -> Result<Option<TaskRecord>, BrokerError> {
        if let Some(m) = self.memory() {
            return Ok(m.record(id));
        }
        let bytes: Option<Vec<u8>> = self
            .inner
            .pool
            .query(redis::cmd("GET").arg(self.inner.keys.task(id)))
            .await?;
        match bytes {
            None => Ok(None),
            Some(b) => Ok(Some(codec::decode(&b)?)),
        }
    }

    /// Reads the records of tasks `ids` (one MGET), in order; `None` for unknown or expired.
    pub async fn records(&self, ids: &[String]) -> Result<Vec<Option<TaskRecord>>, BrokerError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(m) = self.memory() {
            return Ok(ids.iter().map(|id| m.record(id)).collect());
        }
        let mut cmd = redis::cmd("MGET");
        for id in ids {
            cmd.arg(self.inner.keys.task(id));
        }
        let raw: Vec<Option<Vec<u8>>> = self.inner.pool.query(&cmd).await?;
        raw.into_iter()
            .map(|b| b.map(|b| codec::decode(&b)).transpose().map_err(Into::into))
            .collect()
    }

    /// Waits up to `timeout` for task `id` to finish and returns its final record (see
    /// [`TaskHandle::wait_result`] for the typed form).
    pub async fn wait_record(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<TaskRecord, crate::error::WaitError> {
        crate::handle::wait_record(self, id, timeout).await
    }

    /// Stores task `id`'s progress report (kept as long as results are).
    pub async fn set_progress<P: Serialize + ?Sized>(
        &self,
        id: &str,
        progress: &P,
    ) -> Result<(), BrokerError> {
        let bytes = codec::encode(progress)?;
        if let Some(m) = self.memory() {
            m.set_progress(id, bytes);
            return Ok(());
        }
        self.inner
            .pool
            .query::<(), _>(
                redis::cmd("SET")
                    .arg(self.inner.keys.progress(id))
                    .arg(bytes)
                    .arg("EX")
                    .arg(self.inner.config.result_ttl.as_secs().max(1)),
            )
            .await
    }

    /// Task `id`'s latest progress report, if it made one.
    pub async fn progress<P: DeserializeOwned>(&self, id: &str) -> Result<Option<P>, BrokerError> {
        if let Some(m) = self.memory() {
            return Ok(m.progress(id).map(|b| codec::decode(&b)).transpose()?);
        }
        let bytes: Option<Vec<u8>> = self
            .inner
            .pool
            .query(redis::cmd("GET").arg(self.inner.keys.progress(id)))
            .await?;
        Ok(bytes.map(|b| codec::decode(&b)).transpose()?)
    }

    /// Makes sure `queue`'s stream and consumer group exist. Idempotent; done once per
    /// process and queue. The group starts at `0` so that nothing enqueued before it existed
    /// is missed.
    pub async fn ensure_group(&self, queue: &str) -> Result<(), BrokerError> {
        if self.memory().is_some() || self.group_known(queue) {
            return Ok(());
        }
        let create = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.inner.keys.stream(queue))
            .arg(CONSUMER_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .clone();
        match self.inner.pool.query::<(), _>(&create).await {
            Ok(()) => {}
            Err(BrokerError::Redis(e)) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e),
        }
        self.inner
            .pool
            .query::<(), _>(redis::cmd("SADD").arg(self.inner.keys.queues()).arg(queue))
            .await?;
        if let Ok(mut ready) = self.inner.groups_ready.lock() {
            ready.insert(queue.to_string());
        }
        Ok(())
    }

    fn forget_group(&self, queue: &str) {
        if let Ok(mut ready) = self.inner.groups_ready.lock() {
            ready.remove(queue);
        }
    }

    fn group_known(&self, queue: &str) -> bool {
        self.inner
            .groups_ready
            .lock()
            .map(|r| r.contains(queue))
            .unwrap_or(false)
    }

    /// Encodes and checks one dispatch without sending it.
    pub fn prepare<A: Serialize, T>(
        &self,
        kicker: &Kicker<A, T>,
        args: &A,
    ) -> Result<OutgoingMessage, DispatchError> {
        let args = codec::encode(args).map_err(|error| DispatchError::Encode {
            task: kicker.spec.name.to_string(),
            error,
        })?;
        self.prepare_raw(kicker.raw_dispatch(args))
    }

    /// Prepares one message per item of `args` with the same options: the pending record (the
    /// same for all) is encoded once.
    pub fn prepare_batch<A: Serialize, T>(
        &self,
        kicker: &Kicker<A, T>,
        args: impl IntoIterator<Item = A>,
    ) -> Result<Vec<OutgoingMessage>, DispatchError> {
        let task = kicker.spec.name;
        let queue = kicker.queue.as_deref().unwrap_or(kicker.spec.queue);
        let now = envelope::now_ms();
        let delayed = kicker.due.map(system_ms).is_some_and(|d| d > now);
        let pending = Arc::new(pending_record(task, queue, now, delayed).map_err(|error| {
            DispatchError::Encode {
                task: task.to_string(),
                error,
            }
        })?);
        args.into_iter()
            .map(|a| {
                let args = codec::encode(&a).map_err(|error| DispatchError::Encode {
                    task: task.to_string(),
                    error,
                })?;
                self.build(kicker.raw_dispatch(args), now, Some(pending.clone()))
            })
            .collect()
    }

    /// Like [`Broker::prepare`], for a task known only by name, with arguments already encoded
    /// by the wire codec (as one tuple).
    pub fn prepare_raw(&self, d: RawDispatch<'_>) -> Result<OutgoingMessage, DispatchError> {
        self.build(d, envelope::now_ms(), None)
    }

    fn build(
        &self,
        d: RawDispatch<'_>,
        now: u64,
        pending: Option<Arc<Vec<u8>>>,
    ) -> Result<OutgoingMessage, DispatchError> {
        let due_ms = d.due_ms;
        let envelope = self.envelope_for(d, now)?;
        self.outgoing(envelope, due_ms, pending)
    }

    /// Checks one dispatch and makes its envelope, passed through the dispatch layers.
    pub(crate) fn envelope_for(
        &self,
        d: RawDispatch<'_>,
        now: u64,
    ) -> Result<Envelope, DispatchError> {
        let RawDispatch {
            task,
            queue,
            args,
            task_id,
            labels,
            retry,
            timeout,
            due_ms,
            unique_key,
            priority,
        } = d;
        if task.is_empty() {
            return Err(DispatchError::Invalid {
                what: "task name",
                value: String::new(),
            });
        }
        if !valid_queue_name(queue) {
            return Err(DispatchError::Invalid {
                what: "queue name",
                value: queue.to_string(),
            });
        }
        let id = match task_id {
            Some(id) if envelope::validate_task_id(id) => id.to_string(),
            Some(id) => {
                return Err(DispatchError::Invalid {
                    what: "task id",
                    value: id.to_string(),
                })
            }
            None => envelope::new_task_id(),
        };
        let mut envelope = Envelope {
            v: ENVELOPE_VERSION,
            id,
            task: task.to_string(),
            queue: queue.to_string(),
            args,
            labels,
            enqueued_at_ms: now,
            attempt: 0,
            retry,
            timeout_ms: timeout.map(|t| t.as_millis() as u64),
            unique_key,
            priority,
            due_ms: due_ms.filter(|d| *d > now),
            trace: Some(crate::trace_context::for_dispatch()),
            ..Envelope::default()
        };
        for layer in &self.inner.config.dispatch_layers {
            layer
                .on_dispatch(&mut envelope)
                .map_err(|reason| DispatchError::Refused {
                    task: envelope.task.clone(),
                    reason,
                })?;
        }
        // A layer may have re-routed it: check the queue it ends up on.
        if !valid_queue_name(&envelope.queue) {
            return Err(DispatchError::Invalid {
                what: "queue name",
                value: envelope.queue.clone(),
            });
        }
        Ok(envelope)
    }

    /// Encodes `envelope` into a message, with its pending record (`pending` if given, else
    /// made here).
    pub(crate) fn outgoing(
        &self,
        envelope: Envelope,
        due_ms: Option<u64>,
        pending: Option<Arc<Vec<u8>>>,
    ) -> Result<OutgoingMessage, DispatchError> {
        let encode_err = |error| DispatchError::Encode {
            task: envelope.task.clone(),
            error,
        };
        let payload = codec::encode(&envelope).map_err(encode_err)?;
        let limit = self.inner.config.max_payload_bytes;
        if payload.len() > limit {
            return Err(DispatchError::PayloadTooLarge {
                task: envelope.task.clone(),
                size: payload.len(),
                limit,
            });
        }
        let now = envelope.enqueued_at_ms;
        let due_ms = due_ms.filter(|d| *d > now);
        let pending_record = match pending {
            Some(p) => p,
            None => Arc::new(
                pending_record(&envelope.task, &envelope.queue, now, due_ms.is_some())
                    .map_err(encode_err)?,
            ),
        };
        Ok(OutgoingMessage {
            id: envelope.id.clone(),
            lane: envelope.priority.lane(&envelope.queue),
            queue: envelope.queue,
            task: envelope.task,
            payload,
            pending_record,
            due_ms,
        })
    }

    /// Enqueues one prepared message: its pending record, then its stream entry, in one round
    /// trip. Returns the task id once Redis has accepted both.
    pub async fn enqueue(&self, msg: OutgoingMessage) -> Result<String, DispatchError> {
        let mut ids = self.enqueue_many(vec![msg]).await?;
        Ok(ids.pop().unwrap_or_default())
    }

    /// Enqueues many prepared messages, pipelined. On error, some messages of the batch may
    /// have been enqueued; the error says which task the failure hit.
    pub async fn enqueue_many(
        &self,
        msgs: Vec<OutgoingMessage>,
    ) -> Result<Vec<String>, DispatchError> {
        let Some(first) = msgs.first() else {
            return Ok(Vec::new());
        };
        if let Some(m) = self.memory() {
            return Ok(m.enqueue(self, msgs));
        }
        let broker_err = |task: &str, error| DispatchError::Broker {
            task: task.to_string(),
            error,
        };
        let queues: HashSet<&str> = msgs.iter().map(|m| m.lane.as_str()).collect();
        for q in queues {
            self.ensure_group(q)
                .await
                .map_err(|e| broker_err(&first.task, e))?;
        }
        let ttl = self.inner.config.pending_ttl.as_secs().max(1);
        let track = self.inner.config.track_pending;
        let mut ids = Vec::with_capacity(msgs.len());
        let mut stream_keys: HashMap<&str, String> = HashMap::new();
        let mut wake: HashMap<&str, u64> = HashMap::new();
        for chunk in msgs.chunks(ENQUEUE_CHUNK) {
            let mut pipe = redis::Pipeline::with_capacity(chunk.len() * 2);
            for m in chunk {
                let stream = stream_keys
                    .entry(m.lane.as_str())
                    .or_insert_with(|| self.inner.keys.stream(&m.lane));
                // The record first: a worker that finishes quickly must not have its result
                // overwritten by a late "pending".
                if track {
                    pipe.cmd("SET")
                        .arg(self.inner.keys.task(&m.id))
                        .arg(m.pending_record.as_slice())
                        .arg("EX")
                        .arg(ttl)
                        .ignore();
                }
                match m.due_ms {
                    // Delayed: it waits in the queue's sorted set until a worker promotes it.
                    Some(due) => {
                        pipe.cmd("ZADD")
                            .arg(self.inner.keys.delayed(&m.lane))
                            .arg(due)
                            .arg(&m.payload)
                            .ignore();
                        let earliest = wake.entry(m.lane.as_str()).or_insert(due);
                        *earliest = (*earliest).min(due);
                    }
                    None => {
                        pipe.cmd("XADD")
                            .arg(stream.as_str())
                            .arg("*")
                            .arg(DATA_FIELD)
                            .arg(&m.payload)
                            .ignore();
                    }
                }
            }
            // Tell workers' promoters about new delayed work, once per queue per chunk.
            for (queue, due) in wake.drain() {
                pipe.cmd("PUBLISH")
                    .arg(self.inner.keys.wake_channel(queue))
                    .arg(due)
                    .ignore();
            }
            self.inner
                .pool
                .query::<(), _>(&pipe)
                .await
                .map_err(|e| broker_err(&chunk[0].task, e))?;
            ids.extend(chunk.iter().map(|m| m.id.clone()));
        }
        Ok(ids)
    }

    /// Enqueues `msg` unless a task holding uniqueness `key` on its queue is pending or running;
    /// returns the id of the task that holds the key (this one, or the earlier one). The check
    /// and the enqueue are one atomic step.
    pub async fn enqueue_unique(
        &self,
        msg: OutgoingMessage,
        key: &str,
        ttl: Duration,
    ) -> Result<String, DispatchError> {
        let broker_err = |error| DispatchError::Broker {
            task: msg.task.clone(),
            error,
        };
        if key.is_empty() || key.len() > 200 {
            return Err(DispatchError::Invalid {
                what: "unique key",
                value: key.to_string(),
            });
        }
        if let Some(m) = self.memory() {
            return Ok(m.enqueue_unique(self, msg, key));
        }
        self.ensure_group(&msg.lane).await.map_err(broker_err)?;
        let keys = &self.inner.keys;
        let script = redis::Script::new(UNIQUE_ENQUEUE);
        let mut inv = script.key(keys.unique(&msg.queue, key));
        inv.key(keys.stream(&msg.lane))
            .key(keys.delayed(&msg.lane))
            .arg(&msg.id)
            .arg(ttl.as_secs().max(1))
            .arg(&msg.payload)
            .arg(msg.due_ms.map(|d| d.to_string()).unwrap_or_default())
            .arg(DATA_FIELD);
        // The pending record first, as for any dispatch (a fast worker's result must not be
        // overwritten); if another task holds the key, it is deleted again below.
        if self.inner.config.track_pending {
            self.inner
                .pool
                .query::<(), _>(
                    redis::cmd("SET")
                        .arg(keys.task(&msg.id))
                        .arg(msg.pending_record.as_slice())
                        .arg("EX")
                        .arg(self.inner.config.pending_ttl.as_secs().max(1)),
                )
                .await
                .map_err(broker_err)?;
        }
        let owner: String = self.inner.pool.invoke(&inv).await.map_err(broker_err)?;
        if owner != msg.id {
            if self.inner.config.track_pending {
                let _ = self
                    .inner
                    .pool
                    .query::<(), _>(redis::cmd("DEL").arg(keys.task(&msg.id)))
                    .await;
            }
        } else if let Some(due) = msg.due_ms {
            let _ = self
                .inner
                .pool
                .query::<(), _>(
                    redis::cmd("PUBLISH")
                        .arg(keys.wake_channel(&msg.lane))
                        .arg(due),
                )
                .await;
        }
        Ok(owner)
    }

    /// Opens a reader for `queues` as consumer `consumer`, on a connection of its own.
    pub async fn reader(
        &self,
        queues: &[String],
        consumer: &str,
    ) -> Result<StreamReader, BrokerError> {
        for q in queues {
            // Not the per-process cache: a reader is (re)opened after errors, and a Redis that
            // restarted without persistence has lost the group.
            self.forget_group(q);
            self.ensure_group(q).await?;
            // Make the consumer visible at once (XINFO CONSUMERS), not at its first message.
            self.inner
                .pool
                .query::<(), _>(
                    redis::cmd("XGROUP")
                        .arg("CREATECONSUMER")
                        .arg(self.inner.keys.stream(q))
                        .arg(CONSUMER_GROUP)
                        .arg(consumer),
                )
                .await?;
        }
        let conn = connection::dedicated_connection(&self.inner.client, &self.inner.config).await?;
        Ok(StreamReader {
            conn,
            cancel_active: self.inner.keys.cancel_active(),
            streams: queues.iter().map(|q| self.inner.keys.stream(q)).collect(),
            queues: queues.to_vec(),
            consumer: consumer.to_string(),
            // The first read drains by priority too: a worker starting on a backlog must not
            // take a blocking read's mix of every lane.
            backlog: true,
            busy_lanes: None,
            fetch_script: redis::Script::new(FETCH_BY_PRIORITY),
        })
    }

    /// Writes a batch of completions: first every result and dead letter, then, once Redis has
    /// accepted them, the acks (XACK) and deletions (XDEL) of their stream entries. If the
    /// first step fails nothing is acked, and the messages stay pending for redelivery.
    pub async fn complete(&self, batch: &[Completion]) -> Result<(), BrokerError> {
        if batch.is_empty() {
            return Ok(());
        }
        if let Some(m) = self.memory() {
            m.complete(self, batch);
            return Ok(());
        }
        let keys = &self.inner.keys;
        let ttl = self.inner.config.result_ttl.as_secs().max(1);
        let mut writes = redis::pipe();
        let pending_ttl = self.inner.config.pending_ttl.as_secs().max(1);
        let mut indexed: HashMap<(&str, TaskState), Vec<(u64, &str)>> = HashMap::new();
        for c in batch {
            if c.mark {
                if let Some((task_id, record)) = &c.record {
                    writes
                        .cmd("SET")
                        .arg(keys.task(task_id))
                        .arg(record)
                        .arg("EX")
                        .arg(pending_ttl)
                        .ignore();
                }
                continue;
            }
            if let (Some(f), Some((task_id, _))) = (&c.finished, &c.record) {
                indexed
                    .entry((f.queue.as_str(), f.state))
                    .or_default()
                    .push((f.finished_ms, task_id.as_str()));
            }
            if let Some((task_id, record)) = &c.record {
                writes
                    .cmd("SET")
                    .arg(keys.task(task_id))
                    .arg(record)
                    .arg("EX")
                    .arg(ttl)
                    .ignore();
                // A retrying task is not finished: only final records are announced.
                if c.retry.is_none() {
                    let inline: &[u8] = if record.len() <= INLINE_RESULT_MAX {
                        record
                    } else {
                        b""
                    };
                    writes
                        .cmd("PUBLISH")
                        .arg(keys.done_channel(task_id))
                        .arg(inline)
                        .ignore();
                }
            }
            if let Some((queue, key, holder)) = &c.release_unique {
                writes
                    .cmd("EVAL")
                    .arg(UNIQUE_RELEASE)
                    .arg(1)
                    .arg(keys.unique(queue, key))
                    .arg(holder)
                    .ignore();
            }
            for (task_id, record) in &c.also {
                writes
                    .cmd("SET")
                    .arg(keys.task(task_id))
                    .arg(record)
                    .arg("EX")
                    .arg(ttl)
                    .ignore();
                writes
                    .cmd("PUBLISH")
                    .arg(keys.done_channel(task_id))
                    .arg(record)
                    .ignore();
            }
            if let Some((lane, envelope)) = &c.next {
                writes
                    .cmd("XADD")
                    .arg(keys.stream(lane))
                    .arg("*")
                    .arg(DATA_FIELD)
                    .arg(envelope)
                    .ignore();
            }
            if let Some((group, index)) = &c.group_done {
                writes
                    .cmd("EVAL")
                    .arg(crate::workflow::GROUP_MEMBER_DONE)
                    .arg(1)
                    .arg(keys.group(group))
                    .arg(*index)
                    .arg(DATA_FIELD)
                    .ignore();
            }
            if let Some((envelope, due_ms)) = &c.retry {
                writes
                    .cmd("ZADD")
                    .arg(keys.delayed(&c.queue))
                    .arg(*due_ms)
                    .arg(envelope)
                    .ignore();
            }
            if let Some(letter) = &c.dead {
                let mut cmd = redis::cmd("XADD");
                cmd.arg(keys.dead(&c.queue))
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(DEAD_LETTER_MAX_LEN)
                    .arg("*")
                    .arg("reason")
                    .arg(&letter.reason)
                    .arg("error")
                    .arg(&letter.error)
                    .arg("stream_id")
                    .arg(&c.stream_id)
                    .arg("attempts")
                    .arg(letter.attempts)
                    .arg("at_ms")
                    .arg(envelope::now_ms())
                    .arg("payload")
                    .arg(&letter.payload);
                if let Some(id) = &letter.task_id {
                    cmd.arg("task_id").arg(id);
                }
                if let Some(t) = &letter.task {
                    cmd.arg("task").arg(t);
                }
                writes.add_command(cmd).ignore();
            }
        }
        // One variadic ZADD per index touched by the batch, not one per task.
        for ((queue, state), members) in indexed {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(keys.index(queue, state));
            for (at, id) in members {
                cmd.arg(at).arg(id);
            }
            writes.add_command(cmd).ignore();
        }
        add_stats(&mut writes, &keys.stats(), batch);
        self.inner.pool.query::<(), _>(&writes).await?;

        let mut by_queue: HashMap<&str, Vec<&str>> = HashMap::new();
        for c in batch.iter().filter(|c| !c.mark) {
            by_queue.entry(&c.queue).or_default().push(&c.stream_id);
        }
        if by_queue.is_empty() {
            return Ok(());
        }
        let mut acks = redis::pipe();
        for (queue, ids) in by_queue {
            let stream = keys.stream(queue);
            acks.cmd("XACK")
                .arg(&stream)
                .arg(CONSUMER_GROUP)
                .arg(&ids)
                .ignore();
            // Acked entries are deleted at once: the stream only ever holds live work.
            acks.cmd("XDEL").arg(&stream).arg(&ids).ignore();
        }
        self.inner.pool.query::<(), _>(&acks).await
    }
}

/// Adds the batch's totals to the cumulative counters (one HINCRBY per counter per batch):
/// tasks finished per state, retries, and the summed queue wait and run time of those that ran.
fn add_stats(pipe: &mut redis::Pipeline, key: &str, batch: &[Completion]) {
    let mut counts: HashMap<&'static str, u64> = HashMap::new();
    for c in batch.iter().filter(|c| !c.mark) {
        if c.retry.is_some() && c.record.is_some() {
            *counts.entry("retried").or_default() += 1;
        }
        if let Some(f) = &c.finished {
            *counts.entry(f.state.as_str()).or_default() += 1;
            if let Some(started) = f.started_ms {
                *counts.entry("ran").or_default() += 1;
                *counts.entry("wait_ms").or_default() += started.saturating_sub(f.enqueued_ms);
                *counts.entry("run_ms").or_default() += f.finished_ms.saturating_sub(started);
            }
        }
    }
    for (field, n) in counts {
        pipe.cmd("HINCRBY").arg(key).arg(field).arg(n).ignore();
    }
}

fn unreachable_client() -> ! {
    // A fixed, well-formed URL: opening a client for it cannot fail.
    panic!("the in-memory broker's placeholder Redis URL was refused")
}

/// The encoded record of a task accepted at `now`, waiting in `queue`.
pub(crate) fn pending_record(
    task: &str,
    queue: &str,
    now: u64,
    delayed: bool,
) -> Result<Vec<u8>, crate::codec::CodecError> {
    codec::encode(&pending_record_struct(task, queue, now, delayed))
}

/// The record of a task accepted at `now`, waiting in `queue`.
pub(crate) fn pending_record_struct(
    task: &str,
    queue: &str,
    now: u64,
    delayed: bool,
) -> TaskRecord {
    TaskRecord {
        state: if delayed {
            TaskState::Scheduled
        } else {
            TaskState::Pending
        },
        task: task.to_string(),
        queue: queue.to_string(),
        enqueued_at_ms: now,
        finished_at_ms: None,
        attempts: 0,
        output: None,
        failure: None,
        worker: None,
        ..Default::default()
    }
}

pub(crate) fn system_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Queue names become part of key names: keep them to a safe alphabet.
pub fn valid_queue_name(q: &str) -> bool {
    !q.is_empty()
        && q.len() <= 64
        && q.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Reads a set of queues through the consumer group, on a dedicated connection.
pub struct StreamReader {
    conn: redis::aio::MultiplexedConnection,
    cancel_active: String,
    streams: Vec<String>,
    queues: Vec<String>,
    consumer: String,
    /// Whether the last read found work: then the next one drains lanes in priority order
    /// without blocking (see [`FETCH_BY_PRIORITY`]).
    backlog: bool,
    /// How many lanes held messages at the last look (`None`: unknown). While at most one
    /// does, strict order needs no script: one plain non-blocking read takes the same messages.
    busy_lanes: Option<usize>,
    fetch_script: redis::Script,
}

/// Reads up to `ARGV[3]` new entries from the streams in `KEYS[1..n-1]`, in that order: a
/// lane is read only when the ones before it did not fill the count, so higher priorities
/// drain first. `KEYS[n]` is the cancel flag, returned alongside (as in a blocking read).
const FETCH_BY_PRIORITY: &str = r#"
local want = tonumber(ARGV[3])
local out = {}
for i = 1, #KEYS - 1 do
  if want <= 0 then break end
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', want, 'STREAMS', KEYS[i], '>')
  if r then
    want = want - #r[1][2]
    out[#out + 1] = r[1]
  end
end
local lens = {}
for i = 1, #KEYS - 1 do lens[i] = redis.call('XLEN', KEYS[i]) end
return {out, redis.call('EXISTS', KEYS[#KEYS]), lens}
"#;

/// The length of each stream in `KEYS[1..n-1]` (acknowledged entries are deleted, so a lane of
/// length 0 holds nothing), then whether the cancel flag `KEYS[n]` exists.
const LANE_LENGTHS: &str = r#"
local out = {}
for i = 1, #KEYS - 1 do out[i] = redis.call('XLEN', KEYS[i]) end
out[#KEYS] = redis.call('EXISTS', KEYS[#KEYS])
return out
"#;

impl StreamReader {
    /// The consumer name this reader reads as.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Reads up to `count` new messages per queue, waiting at most `block` for the first.
    pub async fn read(
        &mut self,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, BrokerError> {
        Ok(self.read_batch(count, block).await?.deliveries)
    }

    /// Like [`StreamReader::read`], and also says whether any task may have been cancelled
    /// lately: the flag is read in the same round trip as the messages.
    ///
    /// While messages keep coming (a backlog), reads take lanes strictly in the order the reader
    /// was opened with (workers open it by priority) and do not block; once a read comes back
    /// empty, the next one blocks on every lane at once.
    pub async fn read_batch(
        &mut self,
        count: usize,
        block: Duration,
    ) -> Result<ReadBatch, BrokerError> {
        let (reply, active) = if self.backlog && self.streams.len() > 1 {
            if self.busy_lanes.is_some_and(|n| n <= 1) {
                // Only one lane had work: a plain read returns what the script would. Should a
                // more urgent lane have received work since, the reply lists it first, and the
                // lane lengths read alongside switch the next read back to the script.
                self.read_plain(count).await?
            } else {
                let mut inv = self.fetch_script.prepare_invoke();
                for s in &self.streams {
                    inv.key(s);
                }
                inv.key(&self.cancel_active)
                    .arg(CONSUMER_GROUP)
                    .arg(&self.consumer)
                    .arg(count.max(1));
                let (reply, active, lens): (StreamReadReply, i64, Vec<i64>) =
                    inv.invoke_async(&mut self.conn).await?;
                self.busy_lanes = Some(lens.iter().filter(|n| **n > 0).count());
                (Some(reply), active > 0)
            }
        } else {
            self.busy_lanes = None;
            self.read_blocking(count, block).await?
        };
        let mut out = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            let Some(idx) = self.streams.iter().position(|s| *s == key.key) else {
                continue;
            };
            for mut entry in key.ids {
                let payload = match entry.map.remove(DATA_FIELD) {
                    Some(Value::BulkString(b)) => Some(b),
                    Some(Value::SimpleString(s)) => Some(s.into_bytes()),
                    _ => None,
                };
                out.push(Delivery {
                    queue: self.queues[idx].clone(),
                    stream_id: entry.id,
                    payload,
                    deliveries: 1,
                });
            }
        }
        self.backlog = !out.is_empty();
        Ok(ReadBatch {
            deliveries: out,
            cancels_active: active,
        })
    }
}

impl StreamReader {
    /// `XREADGROUP` of up to `count` new messages per lane, over every lane, blocking up to
    /// `block` when given.
    fn read_command(&self, count: usize, block: Option<Duration>) -> redis::Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(CONSUMER_GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count.max(1));
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&self.streams);
        for _ in &self.streams {
            cmd.arg(">");
        }
        cmd
    }

    /// One non-blocking XREADGROUP over every lane, with the lanes' lengths and the cancel
    /// flag in the same round trip.
    async fn read_plain(
        &mut self,
        count: usize,
    ) -> Result<(Option<StreamReadReply>, bool), BrokerError> {
        let read = self.read_command(count, None);
        let mut lens = redis::cmd("EVAL");
        lens.arg(LANE_LENGTHS)
            .arg(self.streams.len() + 1)
            .arg(&self.streams)
            .arg(&self.cancel_active);
        let mut pipe = redis::pipe();
        pipe.add_command(read).add_command(lens);
        let (reply, mut lens): (Option<StreamReadReply>, Vec<i64>) =
            pipe.query_async(&mut self.conn).await?;
        let active = lens.pop().unwrap_or(0) > 0;
        self.busy_lanes = Some(lens.iter().filter(|n| **n > 0).count());
        Ok((reply, active))
    }

    /// One XREADGROUP over every lane, blocking up to `block` for the first message, with the
    /// cancel flag read in the same round trip.
    async fn read_blocking(
        &mut self,
        count: usize,
        block: Duration,
    ) -> Result<(Option<StreamReadReply>, bool), BrokerError> {
        let cmd = self.read_command(count, Some(block));
        let mut pipe = redis::pipe();
        pipe.add_command(cmd).cmd("GET").arg(&self.cancel_active);
        let (reply, active): (Option<StreamReadReply>, Option<String>) =
            pipe.query_async(&mut self.conn).await?;
        Ok((reply, active.is_some()))
    }
}

/// What one read returned.
#[derive(Debug, Default)]
pub struct ReadBatch {
    /// The messages.
    pub deliveries: Vec<Delivery>,
    /// Whether any task may have been cancelled lately (see `Broker::cancel`).
    pub cancels_active: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_checked() {
        assert!(valid_queue_name("default"));
        assert!(valid_queue_name("mail.high-prio_2"));
        assert!(!valid_queue_name(""));
        assert!(!valid_queue_name("a b"));
        assert!(!valid_queue_name("{x}"));
    }
}
