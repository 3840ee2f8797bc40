//! Queue partitions (see [`crate::model::partition`]): their counts, kept in the control slot
//! and cached by every process, and the routing of a message to its partition's lane.
//!
//! Producers read the counts at most every [`FRESH_FOR`] (one `HGETALL` pair, not one per
//! dispatch); workers read them at start and then every few seconds, and start reading new
//! partitions when a queue gains some.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::error::BrokerError;
use crate::model::partition::{self, PartitionCount, MAX_PARTITIONS};
use crate::model::priority::split_lane;

use super::scripts::{self, SET_PARTITIONS};
use super::RedisBackend;

/// How long a process trusts its cached counts before reading them again.
pub(crate) const FRESH_FOR: Duration = Duration::from_secs(2);

/// The counts this process last read, and when.
#[derive(Default)]
pub(crate) struct PartitionCache {
    cached: RwLock<Cached>,
    /// Held while the counts are read, so that concurrent dispatches wait for one read.
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Cached {
    at: Option<Instant>,
    counts: HashMap<String, PartitionCount>,
}

impl PartitionCache {
    fn fresh(&self) -> bool {
        self.cached
            .read()
            .map(|c| c.at.is_some_and(|at| at.elapsed() < FRESH_FOR))
            .unwrap_or(false)
    }

    fn count(&self, queue: &str) -> Option<PartitionCount> {
        self.cached.read().ok()?.counts.get(queue).copied()
    }
}

impl RedisBackend {
    /// Reads the partition counts again if the cached ones are older than [`FRESH_FOR`] (or
    /// always, with `force`). Without `force`, a failed read keeps counts read before and is
    /// tried again after [`FRESH_FOR`]; it is an error only if none were ever read (routing
    /// without them could put a unique key on the wrong partition).
    pub(crate) async fn refresh_partitions(&self, force: bool) -> Result<(), BrokerError> {
        let cache = &self.partitions;
        if !force && cache.fresh() {
            return Ok(());
        }
        let _gate = cache.refreshing.lock().await;
        if !force && cache.fresh() {
            return Ok(());
        }
        let read = self.read_partition_counts().await;
        let mut c = match cache.cached.write() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        match read {
            Ok(counts) => {
                c.at = Some(Instant::now());
                c.counts = counts;
                Ok(())
            }
            // Counts read before stay in use (a dispatch to a queue's node need not fail
            // because the control slot's node is out); tried again after FRESH_FOR.
            Err(_) if !force && c.at.is_some() => {
                c.at = Some(Instant::now());
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Every partitioned queue's counts, read from Redis.
    pub(crate) async fn read_partition_counts(
        &self,
    ) -> Result<HashMap<String, PartitionCount>, BrokerError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(self.keys.partitions());
        pipe.cmd("HGETALL").arg(self.keys.partitions_read());
        let (spread, read): (HashMap<String, String>, HashMap<String, String>) =
            self.pool().query(&pipe).await?;
        // Counts come from Redis, which anyone may write: out-of-range values are clamped.
        let parse = |v: Option<&String>| {
            v.and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1)
                .clamp(1, u64::from(MAX_PARTITIONS)) as u16
        };
        let mut out = HashMap::new();
        for queue in spread.keys().chain(read.keys()) {
            let spread_n = parse(spread.get(queue));
            let count = PartitionCount {
                spread: spread_n,
                read: parse(read.get(queue)).max(spread_n),
            };
            out.insert(queue.clone(), count);
        }
        Ok(out)
    }

    /// The lane a message for `lane` keyed by `key` goes to, by the cached counts (call
    /// [`RedisBackend::refresh_partitions`] first on an async path).
    pub(crate) fn route(&self, lane: &str, key: &str) -> String {
        let queue = split_lane(lane).0;
        match self.partitions.count(queue) {
            Some(c) if c.spread > 1 => partition::route(lane, key, c.spread),
            _ => lane.to_string(),
        }
    }

    /// Every physical queue workers read for `queue`, by the cached counts.
    pub(crate) fn physical_queues(&self, queue: &str) -> Vec<String> {
        let queue = partition::logical(queue);
        let read = self.partitions.count(queue).map_or(1, |c| c.read);
        partition::physical_queues(queue, read)
    }

    /// Sets how many partitions producers spread `queue` over. Workers read every partition
    /// the queue ever had, so lowering the count strands nothing. Returns the counts before
    /// and after.
    pub(crate) async fn set_partitions(
        &self,
        queue: &str,
        count: u16,
    ) -> Result<(PartitionCount, PartitionCount), BrokerError> {
        let before = self
            .read_partition_counts()
            .await?
            .remove(queue)
            .unwrap_or(PartitionCount { spread: 1, read: 1 });
        let count = count.clamp(1, MAX_PARTITIONS);
        let mut inv = SET_PARTITIONS.with_keys(&scripts::set_partitions_keys(&self.keys));
        inv.arg(queue).arg(count);
        let (_, read): (u16, u16) = self.pool().invoke(&inv).await?;
        self.refresh_partitions(true).await?;
        Ok((
            before,
            PartitionCount {
                spread: count,
                read,
            },
        ))
    }
}
