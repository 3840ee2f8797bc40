//! The operators' surface: what `taskctl` and the HTTP server read and administer.

use std::collections::HashMap;

use super::dead::{DeadCursor, DeadEntry, DeadFilter, DeadPage};
use super::status::QueueStats;
use super::tasks::{TaskCursor, TaskPage, TaskSummary};
use crate::backend::RedisBackend;
use crate::client::broker::Broker;
use crate::consumer::delivery::WorkerInfo;
use crate::control::LeaseInfo;
use crate::error::BrokerError;
use crate::model::partition::Partitions;
use crate::model::record::{TaskRecord, TaskState};

/// Operators' reads and admin over one broker: obtained with [`Broker::inspector`].
#[derive(Clone, Debug)]
pub struct Inspector {
    broker: Broker,
}

impl Inspector {
    pub(crate) fn new(broker: Broker) -> Self {
        Self { broker }
    }

    /// The broker inspected.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    pub(super) fn redis(&self, what: &'static str) -> Result<&RedisBackend, BrokerError> {
        self.broker.backend().redis(what)
    }

    /// Task `id`'s record: `None` if unknown or expired.
    pub async fn record(&self, id: &str) -> Result<Option<TaskRecord>, BrokerError> {
        self.broker.record(id).await
    }

    /// Every queue's numbers, its priority lanes summed into it, sorted by name.
    pub async fn all_queue_stats(&self) -> Result<Vec<QueueStats>, BrokerError> {
        self.redis("queue statistics")?.all_queue_stats().await
    }

    /// Every partitioned queue with its partitions (a queue not listed has one).
    pub async fn partitions(&self) -> Result<Vec<(String, Partitions)>, BrokerError> {
        let mut v: Vec<(String, Partitions)> = self
            .redis("partitions")?
            .read_partitions()
            .await?
            .into_iter()
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }

    /// Spreads new tasks of `queue` over `count` partitions (1 to
    /// [`MAX_PARTITIONS`](crate::partition::MAX_PARTITIONS)), making the ones it does not have
    /// yet: on a Redis Cluster each new one goes to the master holding the fewest of the
    /// queue's partitions. Producers follow within seconds, workers within their next check.
    /// Lowering the count stops producers using the partitions above it; workers keep reading
    /// them, so nothing is stranded. Returns the partitions before and after.
    pub async fn set_partitions(
        &self,
        queue: &str,
        count: u16,
    ) -> Result<(Partitions, Partitions), BrokerError> {
        if !crate::client::dispatch::valid_queue_name(queue) {
            return Err(BrokerError::Invalid(format!(
                "{queue:?} is not a queue name (1-64 letters, digits, '-', '_', '.')"
            )));
        }
        if count == 0 || count > crate::partition::MAX_PARTITIONS {
            return Err(BrokerError::Invalid(format!(
                "a queue has 1 to {} partitions, not {count}",
                crate::partition::MAX_PARTITIONS
            )));
        }
        self.redis("partitions")?.set_partitions(queue, count).await
    }

    /// The numbers of one lane.
    pub async fn queue_stats(&self, lane: &str) -> Result<QueueStats, BrokerError> {
        self.redis("queue statistics")?.queue_stats(lane).await
    }

    /// Workers with a heartbeat entry; entries older than `forget_after_ms` (workers that died
    /// without a clean exit) are deleted and not returned.
    pub async fn workers(&self, forget_after_ms: u64) -> Result<Vec<WorkerInfo>, BrokerError> {
        self.redis("worker heartbeats")?
            .workers(forget_after_ms)
            .await
    }

    /// The task names live workers advertise in their heartbeats (sorted, once each): what a
    /// dispatch by name (`taskctl kiq`, `POST /api/tasks`) checks a name against. Empty when
    /// no live worker advertises any. Forgets no one.
    pub async fn advertised_tasks(&self) -> Result<Vec<String>, BrokerError> {
        let now = crate::envelope::now_ms();
        let mut names: Vec<String> = self
            .workers(u64::MAX)
            .await?
            .into_iter()
            .filter(|w| w.is_live(now))
            .flat_map(|w| w.tasks)
            .collect();
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    /// The queues operators see: every queue used, priority lanes folded into their queue.
    pub async fn queue_names(&self) -> Result<Vec<String>, BrokerError> {
        self.redis("queue names")?.queue_names().await
    }

    /// Every lane that has been used (queues and their priority lanes).
    pub async fn lanes(&self) -> Result<Vec<String>, BrokerError> {
        self.redis("queue names")?.lanes().await
    }

    /// Up to `limit` tasks in `state`, of `queue` (or of every queue), newest first for
    /// finished states and oldest first for waiting ones.
    pub async fn list_tasks(
        &self,
        state: TaskState,
        queue: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TaskSummary>, BrokerError> {
        Ok(self.list_tasks_page(state, queue, limit, None).await?.tasks)
    }

    /// Like [`Inspector::list_tasks`], one page at a time: for a finished state, `after` (the
    /// `next` of the page before) continues where that page ended; each page costs the same
    /// however deep it is.
    pub async fn list_tasks_page(
        &self,
        state: TaskState,
        queue: Option<&str>,
        limit: usize,
        after: Option<&TaskCursor>,
    ) -> Result<TaskPage, BrokerError> {
        self.redis("task listings")?
            .list_tasks(state, queue, limit, after)
            .await
    }

    /// Up to `count` dead letters of `lane`, oldest first, from id `start` (`-`: the start).
    pub async fn dead_letters(
        &self,
        lane: &str,
        start: &str,
        count: usize,
    ) -> Result<Vec<DeadEntry>, BrokerError> {
        // `-` and `(<id>` are range bounds too.
        let bound = start.strip_prefix('(').unwrap_or(start);
        if bound != "-" {
            check_dead_letter_ids(&[bound])?;
        }
        self.redis("dead letters")?
            .dead_letters(lane, start, count)
            .await
    }

    /// How many dead letters `lane` holds.
    pub async fn dead_letter_count(&self, lane: &str) -> Result<u64, BrokerError> {
        self.redis("dead letters")?.dead_letter_count(lane).await
    }

    /// Dead letters matching `filter`, oldest first within each lane, at most `limit`.
    pub async fn find_dead_letters(
        &self,
        filter: &DeadFilter,
        limit: usize,
    ) -> Result<Vec<DeadEntry>, BrokerError> {
        self.redis("dead letters")?
            .find_dead_letters(filter, limit)
            .await
    }

    /// One page of the dead letters matching `filter`, after `after` (the `next` of the page
    /// before): at most `limit` entries, having looked at no more than `budget` (so a filter
    /// that matches few answers quickly; its page may then be short, or empty, with a `next`).
    pub async fn dead_letter_page(
        &self,
        filter: &DeadFilter,
        after: Option<&DeadCursor>,
        limit: usize,
        budget: usize,
    ) -> Result<DeadPage, BrokerError> {
        self.redis("dead letters")?
            .dead_letter_page(filter, after, limit.max(1), budget.max(1))
            .await
    }

    /// Puts dead letter `id` of `lane` back into its lane with its attempt count reset.
    /// Returns whether it existed.
    pub async fn replay_dead_letter(&self, lane: &str, id: &str) -> Result<bool, BrokerError> {
        check_dead_letter_ids(std::slice::from_ref(&id))?;
        self.redis("dead letters")?
            .replay_dead_letter(lane, id)
            .await
    }

    /// Deletes dead letters `ids` of `lane`; returns how many existed.
    pub async fn purge_dead_letters(&self, lane: &str, ids: &[String]) -> Result<u64, BrokerError> {
        check_dead_letter_ids(ids)?;
        self.redis("dead letters")?
            .purge_dead_letters(lane, ids)
            .await
    }

    /// Deletes every dead letter of `lane`; returns how many there were.
    pub async fn purge_all_dead_letters(&self, lane: &str) -> Result<u64, BrokerError> {
        self.redis("dead letters")?
            .purge_all_dead_letters(lane)
            .await
    }

    /// The cumulative counters every worker adds to: tasks finished per state, `retried`,
    /// `ran`, `wait_ms`, `run_ms`.
    pub async fn counters(&self) -> Result<HashMap<String, u64>, BrokerError> {
        self.redis("counters")?.counters().await
    }

    /// The scheduler lease, if a scheduler holds it.
    pub async fn scheduler_lease(&self) -> Result<Option<LeaseInfo>, BrokerError> {
        self.redis("the scheduler lease")?.lease().await
    }
}

/// Refuses ids that are no stream entry ids, before Redis is asked (it would answer with an
/// error of its own, which reads like a fault).
fn check_dead_letter_ids<S: AsRef<str>>(ids: &[S]) -> Result<(), BrokerError> {
    match ids
        .iter()
        .find(|id| !super::dead::valid_dead_letter_id(id.as_ref()))
    {
        Some(bad) => Err(BrokerError::Invalid(format!(
            "{:?} is not a dead-letter id (they look like 1700000000000-0)",
            bad.as_ref()
        ))),
        None => Ok(()),
    }
}
