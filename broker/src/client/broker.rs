//! The producer's handle on kiq: dispatch, waiting, progress and cancellation, and the doors to
//! the other roles ([`Broker::consumer`], [`Broker::inspector`], [`Broker::control`]).

use std::sync::Arc;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};

use super::handle::TaskHandle;
use crate::backend::{Backend, Memory, RedisBackend};
use crate::codec::{ValueCodec, WireFormat};
use crate::config::BrokerConfig;
use crate::consumer::completion::DeadLetter;
use crate::consumer::Consumer;
use crate::control::Control;
use crate::error::BrokerError;
use crate::inspector::Inspector;
use crate::model::record::TaskRecord;

/// A handle on kiq's Redis (or on an in-memory backend): cheap to clone, share one per process.
///
/// This is what producers hold: `.kiq()` and workflows dispatch through it, handles wait
/// through it. Workers take a [`Consumer`] from it, operators' tools an [`Inspector`], the
/// scheduler a [`Control`].
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    config: BrokerConfig,
    backend: Backend,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field(
                "redis_url",
                &crate::config::redact(&self.inner.config.redis_url),
            )
            .field("prefix", &self.inner.config.prefix)
            .field("in_memory", &self.is_in_memory())
            .finish()
    }
}

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
        let backend = Backend::Redis(RedisBackend::new(&config)?);
        Ok(Self {
            inner: Arc::new(Inner { config, backend }),
        })
    }

    /// A broker with no Redis behind it: messages are run in this process by `runner`, and
    /// records live in memory (kiq's in-memory backend). Use
    /// `kiq::testing::broker()`, which runs the linked `#[task]`s. Needs a Tokio runtime.
    pub fn in_memory(runner: Arc<dyn crate::LocalRunner>) -> Self {
        let config = BrokerConfig::new("memory://");
        let backend = Backend::Memory(Memory::new(runner, config.wire.clone()));
        Self {
            inner: Arc::new(Inner { config, backend }),
        }
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    /// The configuration in use.
    pub fn config(&self) -> &BrokerConfig {
        &self.inner.config
    }

    /// The wire format of envelopes and records.
    pub fn wire(&self) -> &dyn WireFormat {
        &*self.inner.config.wire
    }

    /// The codec of task arguments, outputs and progress reports.
    pub fn codec(&self) -> ValueCodec {
        self.inner.config.wire.values()
    }

    /// Whether this broker is in-memory.
    pub fn is_in_memory(&self) -> bool {
        matches!(self.inner.backend, Backend::Memory(_))
    }

    /// The worker's surface, reading and writing as consumer `name`.
    pub fn consumer(&self, name: impl Into<String>) -> Consumer {
        Consumer::new(self.clone(), name.into())
    }

    /// The operators' surface: queues, workers, task listings, dead letters, counters.
    pub fn inspector(&self) -> Inspector {
        Inspector::new(self.clone())
    }

    /// The scheduler's surface: its lease, the stored schedules, and firing ticks.
    pub fn control(&self) -> Control {
        Control::new(self.clone())
    }

    /// Checks Redis answers.
    pub async fn ping(&self) -> Result<(), BrokerError> {
        self.backend().ping().await
    }

    /// A handle on task `id`, to wait for its result.
    pub fn handle<T: DeserializeOwned>(&self, id: impl Into<String>) -> TaskHandle<T> {
        TaskHandle::new(self.clone(), id.into())
    }

    /// Reads task `id`'s record: `None` if it is unknown or expired.
    pub async fn record(&self, id: &str) -> Result<Option<TaskRecord>, BrokerError> {
        self.backend().record(id).await
    }

    /// Reads the records of tasks `ids` (one round trip), in order; `None` for unknown or
    /// expired.
    pub async fn records(&self, ids: &[String]) -> Result<Vec<Option<TaskRecord>>, BrokerError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.backend().records(ids).await
    }

    /// Waits up to `timeout` for task `id` to finish and returns its final record (see
    /// [`TaskHandle::wait_result`] for the typed form). Woken by the completion notice.
    pub async fn wait_record(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<TaskRecord, crate::error::WaitError> {
        self.backend().wait_record(id, timeout).await
    }

    /// Stores task `id`'s progress report (kept as long as results are).
    pub async fn set_progress<P: Serialize + ?Sized>(
        &self,
        id: &str,
        progress: &P,
    ) -> Result<(), BrokerError> {
        let bytes = self.codec().encode(progress)?;
        self.backend().set_progress(id, bytes).await
    }

    /// Task `id`'s latest progress report, if it made one.
    pub async fn progress<P: DeserializeOwned>(&self, id: &str) -> Result<Option<P>, BrokerError> {
        let bytes = self.backend().progress(id).await?;
        Ok(bytes.map(|b| self.codec().decode(&b)).transpose()?)
    }

    /// An in-memory broker's dead letters (empty for a Redis broker: see the inspector).
    pub fn memory_dead_letters(&self) -> Vec<DeadLetter> {
        match self.backend() {
            Backend::Memory(m) => m.dead_letters(),
            Backend::Redis(_) => Vec::new(),
        }
    }

    /// Whether task `id` of an in-memory broker was cancelled before it ran.
    pub fn memory_cancelled(&self, id: &str) -> bool {
        match self.backend() {
            Backend::Memory(m) => m.is_cancelled(id),
            Backend::Redis(_) => false,
        }
    }
}
