//! Redis key names.
//!
//! Every key of a queue shares the hash tag `{<prefix>:<queue>}` so that one Lua script or
//! MULTI over a queue's keys stays in one Redis Cluster slot. Per-task keys are tagged by
//! task id: they are touched alone.

/// Builds every key name kiq uses under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

/// The consumer group every kiq worker reads through.
pub const CONSUMER_GROUP: &str = "kiq";

/// The stream entry field that carries the encoded envelope (the same name Taskiq uses).
pub const DATA_FIELD: &str = "data";

impl Keys {
    /// Key names under `prefix` (default `kiq`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The configured prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The stream holding a queue's ready messages.
    pub fn stream(&self, queue: &str) -> String {
        format!("{{{}:{}}}:stream", self.prefix, queue)
    }

    /// The sorted set of a queue's delayed messages (retries), scored by due time in ms.
    pub fn delayed(&self, queue: &str) -> String {
        format!("{{{}:{}}}:delayed", self.prefix, queue)
    }

    /// The pub/sub channel on which producers announce a new delayed message on a queue, so
    /// workers' promoters re-plan their wake-up at once.
    pub fn wake_channel(&self, queue: &str) -> String {
        format!("{}:wake:{}", self.prefix, queue)
    }

    /// A uniqueness key of a queue: holds the id of the task that owns it.
    pub fn unique(&self, queue: &str, key: &str) -> String {
        format!("{{{}:{}}}:unique:{}", self.prefix, queue, key)
    }

    /// The dead-letter stream of a queue.
    pub fn dead(&self, queue: &str) -> String {
        format!("{{{}:{}}}:dead", self.prefix, queue)
    }

    /// The record (state, then result) of one task.
    pub fn task(&self, task_id: &str) -> String {
        format!("{}:task:{}", self.prefix, task_id)
    }

    /// A task's latest progress report (set by the running task).
    pub fn progress(&self, task_id: &str) -> String {
        format!("{}:task:{}:progress", self.prefix, task_id)
    }

    /// The pub/sub channel on which a task's completion is announced.
    pub fn done_channel(&self, task_id: &str) -> String {
        format!("{}:done:{}", self.prefix, task_id)
    }

    /// The hash of live workers' heartbeats (consumer → encoded `WorkerInfo`).
    pub fn workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }

    /// The mark that task `task_id` was cancelled.
    pub fn cancel(&self, task_id: &str) -> String {
        format!("{}:cancel:{}", self.prefix, task_id)
    }

    /// Exists while any cancel mark may exist (set with the marks' TTL by every cancel), so
    /// workers skip the per-batch mark check when nothing was cancelled.
    pub fn cancel_active(&self) -> String {
        format!("{}:cancel:active", self.prefix)
    }

    /// The pub/sub channel on which cancellations are announced to workers (payload: task id).
    pub fn cancel_channel(&self) -> String {
        format!("{}:cancelled", self.prefix)
    }

    /// The token bucket of rate limit `name` (usually a task name).
    pub fn rate_limit(&self, name: &str) -> String {
        format!("{}:ratelimit:{}", self.prefix, name)
    }

    /// A group's state: its size, members done, and the callback to send when all are.
    pub fn group(&self, group_id: &str) -> String {
        format!("{}:group:{}", self.prefix, group_id)
    }

    /// The index of `queue`'s finished tasks in `state`: a sorted set of task ids scored by
    /// when they finished (ms), trimmed to the result TTL and a size cap by the workers.
    pub fn index(&self, queue: &str, state: crate::model::record::TaskState) -> String {
        format!("{{{}:{}}}:finished:{}", self.prefix, queue, state.as_str())
    }

    /// Cumulative counters of every worker (a hash: tasks finished per state, `retried`,
    /// `ran`, `wait_ms`, `run_ms`), for throughput and latency charts.
    pub fn stats(&self) -> String {
        format!("{}:stats", self.prefix)
    }

    /// The set of queue names that have ever been dispatched to (for operators' tools).
    pub fn queues(&self) -> String {
        format!("{}:queues", self.prefix)
    }

    /// The idempotency mark of message `id` on `lane`: exists once the message was enqueued by
    /// an enqueue-once (a scheduler tick's delivery).
    pub fn once(&self, lane: &str, id: &str) -> String {
        format!("{{{}:{}}}:once:{}", self.prefix, lane, id)
    }

    /// The hash of stored schedules (id → JSON definition).
    pub fn schedules(&self) -> String {
        format!("{}:schedules", self.prefix)
    }

    /// Bumped on every change to the stored schedules; the active scheduler reloads on change.
    pub fn schedules_version(&self) -> String {
        format!("{}:schedules:version", self.prefix)
    }

    /// A schedule's state hash: `last_tick_ms`, `last_fire_ms`, `next_fire_ms`.
    pub fn schedule_state(&self, id: &str) -> String {
        format!("{}:schedule:{id}:state", self.prefix)
    }

    /// A schedule's latest fire ids (a list, newest first, 20 kept).
    pub fn schedule_fires(&self, id: &str) -> String {
        format!("{}:schedule:{id}:fires", self.prefix)
    }

    /// The mark that a scheduler tick (by its fire id) was decided.
    pub fn fired(&self, fire_id: &str) -> String {
        format!("{}:scheduler:fired:{fire_id}", self.prefix)
    }

    /// Decided ticks not yet delivered (fire id → encoded message).
    pub fn outbox(&self) -> String {
        format!("{}:scheduler:outbox", self.prefix)
    }

    /// The scheduler lease: `<holder> <token>`, with a TTL.
    pub fn lease(&self) -> String {
        format!("{}:scheduler:lease", self.prefix)
    }

    /// The counter fencing tokens are drawn from.
    pub fn fence(&self) -> String {
        format!("{}:scheduler:fence", self.prefix)
    }
}

impl Default for Keys {
    fn default() -> Self {
        Self::new("kiq")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_share_a_hash_tag() {
        let k = Keys::new("app");
        assert_eq!(k.stream("mail"), "{app:mail}:stream");
        assert_eq!(k.dead("mail"), "{app:mail}:dead");
        assert_eq!(k.task("abc"), "app:task:abc");
        assert_eq!(k.done_channel("abc"), "app:done:abc");
    }
}
