//! Queue partitions (see [`crate::model::partition`]): the lists kept in the control slot and
//! cached by every process, the routing of a message to its partition's lane, and the choice
//! of new partitions' names (on a cluster, so that the masters share a queue evenly).
//!
//! Producers read the lists at most every [`FRESH_FOR`] (one `HGETALL` pair, not one per
//! dispatch); workers read them at start and then every few seconds, and start reading new
//! partitions when a queue gains some.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::error::BrokerError;
use crate::model::partition::{self, Partitions, MAX_PARTITIONS};
use crate::model::priority::split_lane;

use super::scripts::{self, SET_PARTITIONS};
use super::RedisBackend;

/// How long a process trusts its cached lists before reading them again.
pub(crate) const FRESH_FOR: Duration = Duration::from_secs(2);

/// How long a dispatch that holds lists already waits for them to be read again before it goes
/// on with the ones it has.
const STALE_READ_WAIT: Duration = Duration::from_millis(250);

/// The lists this process last read, and when.
#[derive(Default)]
pub(crate) struct PartitionCache {
    cached: RwLock<Cached>,
    /// Held while the lists are read, so that concurrent dispatches wait for one read.
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Cached {
    at: Option<Instant>,
    queues: HashMap<String, Partitions>,
}

impl PartitionCache {
    fn fresh(&self) -> bool {
        self.cached
            .read()
            .map(|c| c.at.is_some_and(|at| at.elapsed() < FRESH_FOR))
            .unwrap_or(false)
    }

    fn loaded(&self) -> bool {
        self.cached.read().map(|c| c.at.is_some()).unwrap_or(false)
    }

    fn route(&self, queue: &str, lane: &str, key: &str) -> Option<String> {
        let cached = self.cached.read().ok()?;
        Some(cached.queues.get(queue)?.route(lane, key))
    }

    fn names(&self, queue: &str) -> Option<Vec<String>> {
        let cached = self.cached.read().ok()?;
        Some(cached.queues.get(queue)?.names.clone())
    }
}

impl RedisBackend {
    /// Reads the lists again if the cached ones are older than [`FRESH_FOR`] (or always, with
    /// `force`). Without `force`, a failed read keeps lists read before and is tried again
    /// after [`FRESH_FOR`]; it is an error only if none were ever read (routing without them
    /// could put a unique key on the wrong partition).
    pub(crate) async fn refresh_partitions(&self, force: bool) -> Result<(), BrokerError> {
        let cache = &self.partitions;
        if !force && cache.fresh() {
            return Ok(());
        }
        // With lists at hand, no dispatch waits for another's read, nor long for its own: the
        // control slot's node may be slow or failing over while the queue's node is fine.
        let have = cache.loaded();
        let _gate = if !force && have {
            match cache.refreshing.try_lock() {
                Ok(gate) => gate,
                Err(_) => return Ok(()),
            }
        } else {
            cache.refreshing.lock().await
        };
        if !force && cache.fresh() {
            return Ok(());
        }
        let read = if !force && have {
            tokio::time::timeout(STALE_READ_WAIT, self.read_partitions())
                .await
                .ok()
        } else {
            Some(self.read_partitions().await)
        };
        let mut c = match cache.cached.write() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        match read {
            Some(Ok(queues)) => {
                c.at = Some(Instant::now());
                c.queues = queues;
                Ok(())
            }
            // Lists read before stay in use (a dispatch to a queue's node need not fail
            // because the control slot's node is out); tried again after FRESH_FOR.
            Some(Err(_)) | None if !force && c.at.is_some() => {
                c.at = Some(Instant::now());
                Ok(())
            }
            Some(Err(e)) => Err(e),
            None => Ok(()),
        }
    }

    /// Every partitioned queue, read from Redis. Values anyone could have written are
    /// checked: a name that is not a partition of its queue is dropped, and the count is kept
    /// within the list.
    pub(crate) async fn read_partitions(&self) -> Result<HashMap<String, Partitions>, BrokerError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(self.keys.partitions());
        pipe.cmd("HGETALL").arg(self.keys.partitions_read());
        let (spread, read): (HashMap<String, String>, HashMap<String, String>) =
            self.pool().query(&pipe).await?;
        let mut out = HashMap::new();
        for queue in spread.keys().chain(read.keys()) {
            let mut names = vec![queue.clone()];
            for name in read.get(queue).map(|l| l.split(',')).into_iter().flatten() {
                let (q, n) = partition::split(name);
                if q == queue && n > 0 && !names.iter().any(|x| x == name) {
                    names.push(name.to_string());
                }
            }
            names.truncate(usize::from(MAX_PARTITIONS));
            let spread = spread
                .get(queue)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1)
                .clamp(1, names.len() as u64) as u16;
            out.insert(queue.clone(), Partitions { spread, names });
        }
        Ok(out)
    }

    /// The lane a message for `lane` keyed by `key` goes to, by the cached lists (call
    /// [`RedisBackend::refresh_partitions`] first on an async path).
    pub(crate) fn route(&self, lane: &str, key: &str) -> String {
        let queue = split_lane(lane).0;
        self.partitions
            .route(queue, lane, key)
            .unwrap_or_else(|| lane.to_string())
    }

    /// Every physical queue workers read for `queue`, by the cached lists.
    pub(crate) fn physical_queues(&self, queue: &str) -> Vec<String> {
        let queue = partition::logical(queue);
        self.partitions
            .names(queue)
            .unwrap_or_else(|| vec![queue.to_string()])
    }

    /// Sets how many partitions producers spread `queue` over, making the partitions it does
    /// not have yet. Workers read every partition the queue ever had, so lowering the count
    /// strands nothing. Returns the queue's partitions before and after.
    pub(crate) async fn set_partitions(
        &self,
        queue: &str,
        count: u16,
    ) -> Result<(Partitions, Partitions), BrokerError> {
        let count = count.clamp(1, MAX_PARTITIONS);
        // Two operators growing one queue at once: the second one's list is refused by the
        // script and made again from the first one's.
        for _ in 0..5 {
            let before = self
                .read_partitions()
                .await?
                .remove(queue)
                .unwrap_or_else(|| Partitions::single(queue));
            let names = if self.target().is_cluster() {
                let owners = self.slot_owners().await?;
                partition::grow(queue, &before.names, count, |names| {
                    self.place_on_cluster(queue, names, &owners)
                })
            } else {
                partition::grow(queue, &before.names, count, partition::next_number)
            };
            let joined = |names: &[String]| {
                if names.len() > 1 {
                    names.join(",")
                } else {
                    String::new()
                }
            };
            let mut inv = SET_PARTITIONS.with_keys(&scripts::set_partitions_keys(&self.keys));
            inv.arg(queue)
                .arg(count)
                .arg(joined(&before.names))
                .arg(joined(&names));
            let set: i64 = self.pool().invoke(&inv).await?;
            if set == 1 {
                self.refresh_partitions(true).await?;
                let after = Partitions {
                    spread: count,
                    names,
                };
                return Ok((before, after));
            }
        }
        Err(BrokerError::Invalid(format!(
            "the partitions of {queue:?} kept changing while being set; try again"
        )))
    }

    /// The number of `queue`'s next partition on a cluster: the smallest unused one whose slot
    /// lies on the master that holds the fewest of `names` (each new partition goes where the
    /// queue is thinnest, so N partitions over M masters differ by at most one per master).
    fn place_on_cluster(
        &self,
        queue: &str,
        names: &[String],
        owners: &[(u16, u16, String)],
    ) -> u32 {
        let mut load: BTreeMap<&str, usize> =
            owners.iter().map(|(_, _, n)| (n.as_str(), 0)).collect();
        for name in names {
            if let Some(node) = super::inspect::node_of(owners, &self.keys.queue_tag(name)) {
                if let Some(l) = load.iter_mut().find(|(k, _)| **k == node) {
                    *l.1 += 1;
                }
            }
        }
        let next_free = || partition::next_number(names);
        let Some(target) = load
            .iter()
            .min_by_key(|(_, l)| **l)
            .map(|(n, _)| n.to_string())
        else {
            return next_free();
        };
        // A master owns at least a few slots, so this ends within a few thousand tries.
        (1..=1_000_000u32)
            .find(|&n| {
                let name = partition::physical(queue, n);
                !names.contains(&name)
                    && super::inspect::node_of(owners, &self.keys.queue_tag(&name)).as_deref()
                        == Some(target.as_str())
            })
            .unwrap_or_else(next_free)
    }
}
