//! Queue control and history for operators: pause, resume, purge, drain, quiet a worker, and
//! the throughput history.

use std::time::Duration;

use super::inspector::Inspector;
use super::status::QueueStats;
use crate::error::BrokerError;
use crate::model::history::{History, TaskTotals};

/// How often [`Inspector::drain`] looks at the queue.
const DRAIN_POLL: Duration = Duration::from_millis(250);

impl Inspector {
    fn check_queue(queue: &str) -> Result<(), BrokerError> {
        if crate::client::dispatch::valid_queue_name(queue) {
            Ok(())
        } else {
            Err(BrokerError::Invalid(format!(
                "{queue:?} is not a queue name (1-64 letters, digits, '-', '_', '.')"
            )))
        }
    }

    /// Pauses `queue`: it still accepts dispatches, but workers stop reading it (every
    /// partition and priority lane) within about a second; tasks they hold finish. Returns
    /// whether it was running.
    pub async fn pause_queue(&self, queue: &str) -> Result<bool, BrokerError> {
        Self::check_queue(queue)?;
        self.redis("queue control")?.pause_queue(queue).await
    }

    /// Resumes a paused `queue`; returns whether it was paused.
    pub async fn resume_queue(&self, queue: &str) -> Result<bool, BrokerError> {
        Self::check_queue(queue)?;
        self.redis("queue control")?.resume_queue(queue).await
    }

    /// Paused queues, with when each was paused (ms since the epoch).
    pub async fn paused_queues(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u64>, BrokerError> {
        self.redis("queue control")?.paused_queues().await
    }

    /// Deletes every waiting and delayed task of `queue` (every partition and priority lane),
    /// recording each as `cancelled` (its waiters hear it); tasks workers hold are left to
    /// finish. Returns how many were deleted. Works in steps of a few hundred messages, so
    /// Redis is never held for long; tasks dispatched meanwhile may or may not be taken.
    pub async fn purge_queue(&self, queue: &str) -> Result<u64, BrokerError> {
        Self::check_queue(queue)?;
        self.redis("queue control")?.purge_queue(queue).await
    }

    /// `queue`'s numbers (partitions and lanes summed): zeros for a queue never used.
    pub async fn queue_totals(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        Self::check_queue(queue)?;
        Ok(self
            .all_queue_stats()
            .await?
            .into_iter()
            .find(|q| q.queue == queue)
            .unwrap_or_else(|| QueueStats {
                queue: queue.to_string(),
                ..QueueStats::default()
            }))
    }

    /// Waits until `queue` holds nothing (no waiting, delayed or in-flight task), at most
    /// `timeout`; `progress` is called with its numbers at each look (every 250 ms). Returns
    /// the last numbers: empty ones unless the timeout ran out.
    pub async fn drain(
        &self,
        queue: &str,
        timeout: Duration,
        mut progress: impl FnMut(&QueueStats),
    ) -> Result<QueueStats, BrokerError> {
        let now = tokio::time::Instant::now();
        // A timeout too long to add is a year: as good as none.
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400));
        loop {
            let s = self.queue_totals(queue).await?;
            progress(&s);
            if s.depth + s.delayed == 0 || tokio::time::Instant::now() >= deadline {
                return Ok(s);
            }
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + DRAIN_POLL)).await;
        }
    }

    /// Tells worker `consumer` (a process of `taskctl worker`, as listed by
    /// [`Inspector::workers`]) to go quiet: it stops taking new work within about a second
    /// and finishes what it holds; it stays quiet until it exits. Returns whether such a
    /// worker has a heartbeat.
    pub async fn quiet_worker(&self, consumer: &str) -> Result<bool, BrokerError> {
        self.redis("queue control")?.quiet_worker(consumer).await
    }

    /// Finished, failed and retried tasks per queue and task name from `from_ms` to `to_ms`,
    /// one point per `step_s` seconds (rounded up to whole minutes; to whole hours where the
    /// range reaches back past the 48 hours minute buckets are kept). At most 2,000 points.
    pub async fn history(
        &self,
        from_ms: u64,
        to_ms: u64,
        step_s: u64,
    ) -> Result<History, BrokerError> {
        self.redis("history")?.history(from_ms, to_ms, step_s).await
    }

    /// Every task name's numbers over the last `range` (throughput, failure rate, run-time
    /// percentiles, latest failure), busiest first.
    pub async fn task_totals(&self, range: Duration) -> Result<Vec<TaskTotals>, BrokerError> {
        self.redis("history")?
            .task_totals(range.as_secs().max(60))
            .await
    }
}
