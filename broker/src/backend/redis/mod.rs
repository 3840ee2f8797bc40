//! The Redis backend: every Redis command kiq sends lives under this module.
//!
//! - [`connection`]: the command pool and dedicated connections for blocking reads.
//! - [`scripts`]: the Lua scripts (`broker/lua/*.lua`) and the keys each declares.
//! - `dispatch`, `complete`: the write paths of producers and workers.
//! - `reader`, `recovery`, `delayed`, `notices`: what a worker's background loops call.
//! - `cancel`, `rate_limit`, `inspect`, `control`: cancellation, the shared token bucket,
//!   operators' reads, and the scheduler's lease and store.
//! - `waiter`: result waiters woken by pub/sub.

pub(crate) mod cancel;
pub(crate) mod complete;
pub(crate) mod connection;
pub(crate) mod control;
pub(crate) mod delayed;
pub(crate) mod dispatch;
pub(crate) mod history;
pub(crate) mod inspect;
pub(crate) mod mux;
pub(crate) mod notices;
pub(crate) mod partitions;
pub(crate) mod queues;
pub(crate) mod rate_limit;
pub(crate) mod reader;
pub(crate) mod recovery;
pub(crate) mod resp;
pub(crate) mod scripts;
pub(crate) mod stream_reply;
pub(crate) mod taskiq;
pub(crate) mod waiter;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::codec::WireFormat;
use crate::config::BrokerConfig;
use crate::error::{BrokerError, WaitError};
use crate::keys::{Keys, CONSUMER_GROUP};
use crate::model::record::TaskRecord;
use connection::Pool;
use waiter::Waiters;

/// kiq on one Redis (or a primary).
pub(crate) struct RedisBackend {
    pub(crate) config: BrokerConfig,
    pub(crate) keys: Keys,
    pub(crate) wire: Arc<dyn WireFormat>,
    pool: Pool,
    waiters: Waiters,
    /// Lanes whose consumer group this process has already made sure of.
    groups_ready: Mutex<HashSet<String>>,
    /// The partition counts this process last read.
    partitions: partitions::PartitionCache,
}

impl RedisBackend {
    /// A backend for `config` (connections are made on first use).
    pub(crate) fn new(config: &BrokerConfig) -> Result<Self, BrokerError> {
        let target = connection::Target::parse(&config.redis_url, config)?;
        let pool = Pool::new(target.clone(), config)?;
        let keys = Keys::new(config.prefix.clone());
        let waiters = Waiters::new(target, keys.clone(), config.clone());
        Ok(Self {
            config: config.clone(),
            keys,
            wire: config.wire.clone(),
            pool,
            waiters,
            groups_ready: Mutex::new(HashSet::new()),
            partitions: Default::default(),
        })
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Where Redis is (one server, Sentinel's primary, or a cluster).
    pub(crate) fn target(&self) -> &connection::Target {
        self.pool.target()
    }

    /// The command that announces on a task's done channel: SPUBLISH (sharded, in the task's
    /// slot) on a cluster, PUBLISH elsewhere (which works on Redis before 7 too).
    pub(crate) fn publish_command(&self) -> &'static str {
        if self.target().is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// Seconds a result is kept.
    pub(crate) fn result_ttl_s(&self) -> u64 {
        self.config.result_ttl.as_secs().max(1)
    }

    /// Seconds a pending record is kept.
    pub(crate) fn pending_ttl_s(&self) -> u64 {
        self.config.pending_ttl.as_secs().max(1)
    }

    /// `SET <task record> <bytes> EX <ttl_s>` of task `id`: how every record is stored.
    pub(crate) fn set_record(&self, id: &str, bytes: &[u8], ttl_s: u64) -> redis::Cmd {
        set_record_at(&self.keys.task(id), bytes, ttl_s)
    }

    /// Checks that Redis answers, and that it is what the URL says: a plain URL that reaches
    /// a Redis Cluster node fails here, naming the cluster URL form.
    pub(crate) async fn ping(&self) -> Result<(), BrokerError> {
        let result = self.ping_once().await;
        if let (Err(_), Some((host, port))) = (&result, self.target().tls_addr()) {
            if connection::speaks_plain_text(&host, port).await {
                return Err(BrokerError::Topology(format!(
                    "{} asks for TLS (rediss://), but the server at {host}:{port} answers in plain \
                     text: use redis://, or turn TLS on in the server",
                    self.config.described_url()
                )));
            }
        }
        result
    }

    async fn ping_once(&self) -> Result<(), BrokerError> {
        if self.target().is_cluster() {
            return self.pool.query::<(), _>(&redis::cmd("PING")).await;
        }
        let info: String = self.pool.query(redis::cmd("INFO").arg("cluster")).await?;
        if info.lines().any(|l| l.trim() == "cluster_enabled:1") {
            return Err(connection::cluster_node_error(&crate::config::redact(
                &self.config.redis_url,
            )));
        }
        Ok(())
    }

    /// Whether Redis holds keys of kiq's data model v1 (kiq 0.1), which this version does not
    /// read: said once, clearly, by workers at start.
    pub(crate) async fn has_v1_keys(&self) -> Result<bool, BrokerError> {
        let n: u64 = self
            .pool
            .query(redis::cmd("EXISTS").arg(self.keys.v1_queues()))
            .await?;
        Ok(n > 0)
    }

    pub(crate) async fn record(&self, id: &str) -> Result<Option<TaskRecord>, BrokerError> {
        let bytes: Option<Vec<u8>> = self
            .pool
            .query(redis::cmd("GET").arg(self.keys.task(id)))
            .await?;
        match bytes {
            None => Ok(None),
            Some(b) => Ok(Some(self.wire.decode_record(&b)?)),
        }
    }

    pub(crate) async fn records(
        &self,
        ids: &[String],
    ) -> Result<Vec<Option<TaskRecord>>, BrokerError> {
        let keys: Vec<String> = ids.iter().map(|id| self.keys.task(id)).collect();
        let raw: Vec<Option<Vec<u8>>> = self.get_many(&keys).await?;
        raw.into_iter()
            .map(|b| {
                b.map(|b| self.wire.decode_record(&b))
                    .transpose()
                    .map_err(Into::into)
            })
            .collect()
    }

    /// GET of each of `keys`, which may be in different slots: one MGET on one server, one
    /// pipeline per slot on a cluster.
    pub(crate) async fn get_many(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, BrokerError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if !self.target().is_cluster() {
            return self.pool.query(redis::cmd("MGET").arg(keys)).await;
        }
        let mut batch = self.pool.new_batch();
        for k in keys {
            batch.add(k, redis::cmd("GET").arg(k).clone());
        }
        self.pool
            .batch(batch)
            .await?
            .into_iter()
            .map(|v| redis::from_redis_value(v).map_err(|e| BrokerError::redis(e.into())))
            .collect()
    }

    pub(crate) async fn set_progress(&self, id: &str, bytes: Vec<u8>) -> Result<(), BrokerError> {
        self.pool
            .query::<(), _>(
                redis::cmd("SET")
                    .arg(self.keys.progress(id))
                    .arg(bytes)
                    .arg("EX")
                    .arg(self.result_ttl_s()),
            )
            .await
    }

    pub(crate) async fn progress(&self, id: &str) -> Result<Option<Vec<u8>>, BrokerError> {
        self.pool
            .query(redis::cmd("GET").arg(self.keys.progress(id)))
            .await
    }

    pub(crate) async fn wait_record(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<TaskRecord, WaitError> {
        waiter::wait_record(self, id, timeout).await
    }

    /// Makes sure `lane`'s stream and consumer group exist. Idempotent; done once per process
    /// and lane. The group starts at `0` so that nothing enqueued before it existed is missed.
    pub(crate) async fn ensure_group(&self, lane: &str) -> Result<(), BrokerError> {
        if self.group_known(lane) {
            return Ok(());
        }
        self.create_group(&self.keys.stream(lane), CONSUMER_GROUP, "0")
            .await?;
        self.pool
            .query::<(), _>(redis::cmd("SADD").arg(self.keys.queues()).arg(lane))
            .await?;
        if let Ok(mut ready) = self.groups_ready.lock() {
            ready.insert(lane.to_string());
        }
        Ok(())
    }

    /// `XGROUP CREATE <stream> <group> <start> MKSTREAM`; a group that exists already is fine.
    pub(crate) async fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: &str,
    ) -> Result<(), BrokerError> {
        let create = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg(start)
            .arg("MKSTREAM")
            .clone();
        match self.pool.query::<(), _>(&create).await {
            Ok(()) => Ok(()),
            Err(BrokerError::Redis(e)) if e.code.as_deref() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn forget_group(&self, lane: &str) {
        if let Ok(mut ready) = self.groups_ready.lock() {
            ready.remove(lane);
        }
    }

    pub(crate) fn mark_group_known(&self, name: &str) {
        if let Ok(mut ready) = self.groups_ready.lock() {
            ready.insert(name.to_string());
        }
    }

    pub(crate) fn group_known(&self, lane: &str) -> bool {
        self.groups_ready
            .lock()
            .map(|r| r.contains(lane))
            .unwrap_or(false)
    }
}

/// `SET <key> <bytes> EX <ttl_s>`: a record stored under its key (when the caller has it).
pub(crate) fn set_record_at(key: &str, bytes: &[u8], ttl_s: u64) -> redis::Cmd {
    // Sized once (five arguments; a TTL has at most 20 digits): no regrowth per argument.
    let mut cmd = redis::Cmd::with_capacity(5, key.len() + bytes.len() + 3 + 2 + 20);
    cmd.arg("SET").arg(key).arg(bytes).arg("EX").arg(ttl_s);
    cmd
}

/// The `data` field of a stream entry's field map.
pub(crate) fn data_field(
    map: &mut std::collections::HashMap<String, redis::Value>,
) -> Option<Vec<u8>> {
    match map.remove(crate::keys::DATA_FIELD) {
        Some(redis::Value::BulkString(b)) => Some(b),
        Some(redis::Value::SimpleString(s)) => Some(s.into_bytes()),
        _ => None,
    }
}
