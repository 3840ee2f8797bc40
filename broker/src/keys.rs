//! Redis key names: data model v2.
//!
//! Every key carries one of three kinds of hash tag, so that each Lua script and each group of
//! pipelined commands touches one Redis Cluster slot:
//!
//! - **per queue** `{<prefix>:<queue>}`: every lane's stream, delayed set and dead letters, the
//!   queue's uniqueness keys, enqueue-once marks, finished-task indexes, its cancel flag, and
//!   the group hashes of workflows whose callback runs on it. (Queue names hold no `:`.)
//! - **per task** `{<prefix>:t:<id>}`: its record, progress, cancel mark and done channel.
//! - **control** `{<prefix>}`: workers, counters, the queue registry, schedules, the
//!   scheduler's lease, fence, fire marks and outbox. Low traffic.
//!
//! Rate-limit buckets have a tag of their own, `{<prefix>:r:<name>}`. A queue's lanes
//! differ by a segment after the tag: `{kiq:mail}:stream` (normal), `{kiq:mail}:high:stream`.
//! Task ids hold no `}`, queue names no `:`, so no two different things share a key name (a
//! task id `active` or `X:progress` cannot land on another key).

use crate::model::priority::{split_lane, Priority};

/// Builds every key name kiq uses under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

/// The consumer group every kiq worker reads through.
pub const CONSUMER_GROUP: &str = "kiq";

/// The stream entry field that carries the encoded envelope (the same name Taskiq uses).
pub const DATA_FIELD: &str = "data";

/// What a task's done channel adds to its record key ([`Keys::task`]): the channel is
/// `<task key>:done` (see [`Keys::done_channel`]).
pub(crate) const DONE_SUFFIX: &str = ":done";

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

    /// The hash tag of `queue`'s keys: `{<prefix>:<queue>}`.
    pub fn queue_tag(&self, queue: &str) -> String {
        format!("{{{}:{}}}", self.prefix, queue)
    }

    /// The hash tag of task `id`'s keys: `{<prefix>:t:<id>}`.
    pub fn task_tag(&self, id: &str) -> String {
        self.task_key_with(id, "")
    }

    /// `{<prefix>:t:<id>}<suffix>`, built in one allocation of the exact size (task keys are
    /// made several times per finished task, on the worker's hot path).
    fn task_key_with(&self, id: &str, suffix: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + id.len() + suffix.len() + 5);
        key.push('{');
        key.push_str(&self.prefix);
        key.push_str(":t:");
        key.push_str(id);
        key.push('}');
        key.push_str(suffix);
        key
    }

    /// The control tag: `{<prefix>}`.
    pub fn control_tag(&self) -> String {
        format!("{{{}}}", self.prefix)
    }

    /// `<queue tag>:[<level>:]<kind>` of a lane, built in one allocation sized up front (a
    /// dispatch makes one; `format!` regrew its string several times).
    fn lane_key(&self, lane: &str, kind: &str) -> String {
        let (queue, level) = split_lane(lane);
        let level = match level {
            Priority::Normal => "",
            p => p.as_str(),
        };
        let mut key =
            String::with_capacity(self.prefix.len() + queue.len() + level.len() + kind.len() + 5);
        key.push('{');
        key.push_str(&self.prefix);
        key.push(':');
        key.push_str(queue);
        key.push_str("}:");
        if !level.is_empty() {
            key.push_str(level);
            key.push(':');
        }
        key.push_str(kind);
        key
    }

    /// The stream holding a lane's ready messages.
    pub fn stream(&self, lane: &str) -> String {
        self.lane_key(lane, "stream")
    }

    /// The sorted set of a lane's delayed messages (retries), scored by due time in ms.
    pub fn delayed(&self, lane: &str) -> String {
        self.lane_key(lane, "delayed")
    }

    /// The dead-letter stream of a lane.
    pub fn dead(&self, lane: &str) -> String {
        self.lane_key(lane, "dead")
    }

    /// The pub/sub channel on which producers announce a new delayed message on a lane, so
    /// workers' promoters re-plan their wake-up at once.
    pub fn wake_channel(&self, lane: &str) -> String {
        format!("{}:wake:{}", self.prefix, lane)
    }

    /// A uniqueness key of a queue: holds the id of the task that owns it.
    pub fn unique(&self, queue: &str, key: &str) -> String {
        format!("{{{}:{}}}:unique:{}", self.prefix, queue, key)
    }

    /// The record (state, then result) of one task.
    pub fn task(&self, task_id: &str) -> String {
        self.task_tag(task_id)
    }

    /// A task's latest progress report (set by the running task).
    pub fn progress(&self, task_id: &str) -> String {
        self.task_key_with(task_id, ":progress")
    }

    /// The pub/sub channel on which a task's completion is announced (sharded on a cluster:
    /// it lives in the task's slot).
    pub fn done_channel(&self, task_id: &str) -> String {
        self.task_key_with(task_id, DONE_SUFFIX)
    }

    /// The task id of a done channel's name (the inverse of [`Keys::done_channel`]).
    pub fn done_channel_id<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix('{')?
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":t:")?
            .strip_suffix("}:done")
    }

    /// The mark that task `task_id` was cancelled.
    pub fn cancel(&self, task_id: &str) -> String {
        self.task_key_with(task_id, ":cancel")
    }

    /// Exists while a cancel mark of one of `queue`'s tasks may exist (set with the marks'
    /// TTL by every cancel), so workers skip the per-batch mark check when nothing was
    /// cancelled.
    pub fn cancel_flag(&self, queue: &str) -> String {
        format!("{{{}:{}}}:cancels", self.prefix, queue)
    }

    /// The pub/sub channel on which cancellations are announced to workers (payload: task id).
    pub fn cancel_channel(&self) -> String {
        format!("{}:cancelled", self.prefix)
    }

    /// The token bucket of rate limit `name` (usually a task name).
    pub fn rate_limit(&self, name: &str) -> String {
        format!("{{{}:r:{}}}", self.prefix, name)
    }

    /// A group's state: its size, members done, and the callback to send when all are. It
    /// lives in the tag of the callback's queue (`callback_queue`), so that counting the last
    /// member and sending the callback are one script; a group without a callback lives in
    /// its own tag.
    pub fn group(&self, group_id: &str, callback_queue: Option<&str>) -> String {
        match callback_queue {
            Some(q) => format!("{{{}:{}}}:group:{}", self.prefix, q, group_id),
            None => format!("{{{}:g:{}}}", self.prefix, group_id),
        }
    }

    /// The index of `queue`'s finished tasks in `state`: a sorted set of task ids scored by
    /// when they finished (ms), trimmed to the result TTL and a size cap by the workers.
    pub fn index(&self, queue: &str, state: crate::model::record::TaskState) -> String {
        format!("{{{}:{}}}:finished:{}", self.prefix, queue, state.as_str())
    }

    /// The idempotency mark of message `id` on `queue`: exists once the message was enqueued
    /// by an enqueue-once (a scheduler tick's delivery, a chain's next step).
    pub fn once(&self, queue: &str, id: &str) -> String {
        format!("{{{}:{}}}:once:{}", self.prefix, queue, id)
    }

    /// When the scheduler first saw each Taskiq schedule (hash: kiq schedule id → ms).
    pub fn taskiq_first_seen(&self) -> String {
        format!("{}:scheduler:taskiq-seen", self.control_tag())
    }

    /// The idempotency mark of a message sent to the Taskiq stream `stream`: in the stream's
    /// own hash slot (its tag is the stream's hash tag, or its whole name), so a script can
    /// check the mark and send in one step.
    pub fn taskiq_once(&self, stream: &str, id: &str) -> String {
        format!("{{{}}}:{}:once:{}", hash_tag(stream), self.prefix, id)
    }

    /// The hash of live workers' heartbeats (consumer → encoded `WorkerInfo`).
    pub fn workers(&self) -> String {
        format!("{{{}}}:workers", self.prefix)
    }

    /// Cumulative counters of every worker (a hash: tasks finished per state, `retried`,
    /// `ran`, `wait_ms`, `run_ms`), for throughput and latency charts.
    pub fn stats(&self) -> String {
        format!("{{{}}}:stats", self.prefix)
    }

    /// The set of queue names that have ever been dispatched to (for operators' tools).
    pub fn queues(&self) -> String {
        format!("{{{}}}:queues", self.prefix)
    }

    /// How many partitions producers spread each partitioned queue over (queue → count; a
    /// queue without a field has one).
    pub fn partitions(&self) -> String {
        format!("{{{}}}:partitions", self.prefix)
    }

    /// The physical queues of each partitioned queue (queue → comma-separated names, the queue
    /// itself first): every partition it ever had, so that lowering the count strands nothing.
    pub fn partitions_read(&self) -> String {
        format!("{{{}}}:partitions:read", self.prefix)
    }

    /// Paused queues (a hash: logical queue → when it was paused, ms). Workers do not read a
    /// paused queue's partitions and lanes; producers still dispatch to it.
    pub fn paused(&self) -> String {
        format!("{{{}}}:paused", self.prefix)
    }

    /// Workers told to go quiet (a set of consumer names): they take no new work and finish
    /// what they hold. A worker's member is removed when it exits.
    pub fn quiet(&self) -> String {
        format!("{{{}}}:quiet", self.prefix)
    }

    /// The pub/sub channel on which a pause, resume or quiet is announced to workers, so they
    /// look at once rather than at their next check (payload: what changed, for logs).
    pub fn control_channel(&self) -> String {
        format!("{}:control", self.prefix)
    }

    /// One bucket of the throughput history: a hash of counters per queue and per task name
    /// (`q:<queue>:<counter>`, `t:<task>:<counter>`) for the minute (`step_s` 60), ten minutes
    /// (`step_s` 600: a rollup of ten minute buckets, made when first read) or hour (`step_s`
    /// 3600) that starts at `start_s` (seconds since the epoch).
    pub fn history(&self, step_s: u64, start_s: u64) -> String {
        let unit = match step_s {
            3600.. => 'h',
            600..=3599 => 't',
            _ => 'm',
        };
        format!("{{{}}}:history:{unit}:{start_s}", self.prefix)
    }

    /// The latest failure of each task name (a hash: task name → MessagePack
    /// `{id, at_ms, error}`), written by the completion batches that record failures.
    pub fn last_failures(&self) -> String {
        format!("{{{}}}:history:last-failure", self.prefix)
    }

    /// Where kiq 0.1 (data model v1) kept its queue registry: a v2 worker that finds it warns
    /// that v1 data is not read.
    pub fn v1_queues(&self) -> String {
        format!("{}:queues", self.prefix)
    }

    /// The hash of stored schedules (id → JSON definition).
    pub fn schedules(&self) -> String {
        format!("{{{}}}:schedules", self.prefix)
    }

    /// Bumped on every change to the stored schedules; the active scheduler reloads on change.
    pub fn schedules_version(&self) -> String {
        format!("{{{}}}:schedules:version", self.prefix)
    }

    /// A schedule's state hash: `last_tick_ms`, `last_fire_ms`, `next_fire_ms`.
    pub fn schedule_state(&self, id: &str) -> String {
        format!("{{{}}}:schedule:{id}:state", self.prefix)
    }

    /// A schedule's latest fire ids (a list, newest first, 20 kept).
    pub fn schedule_fires(&self, id: &str) -> String {
        format!("{{{}}}:schedule:{id}:fires", self.prefix)
    }

    /// The mark that a scheduler tick (by its fire id) was decided.
    pub fn fired(&self, fire_id: &str) -> String {
        format!("{{{}}}:scheduler:fired:{fire_id}", self.prefix)
    }

    /// Decided ticks not yet delivered (fire id → encoded message).
    pub fn outbox(&self) -> String {
        format!("{{{}}}:scheduler:outbox", self.prefix)
    }

    /// The scheduler lease: `<holder> <token>`, with a TTL.
    pub fn lease(&self) -> String {
        format!("{{{}}}:scheduler:lease", self.prefix)
    }

    /// The counter fencing tokens are drawn from.
    pub fn fence(&self) -> String {
        format!("{{{}}}:scheduler:fence", self.prefix)
    }
}

impl Default for Keys {
    fn default() -> Self {
        Self::new("kiq")
    }
}

/// The part of `key` Redis Cluster hashes: the content of its first non-empty `{...}`, or the
/// whole key.
pub fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        if let Some(len) = key[open + 1..].find('}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taskiq_once_mark_shares_its_streams_slot() {
        assert_eq!(hash_tag("taskiq"), "taskiq");
        assert_eq!(hash_tag("{app}:tasks"), "app");
        assert_eq!(hash_tag("a{}b"), "a{}b");
        let k = Keys::new("kiq");
        assert_eq!(k.taskiq_once("taskiq", "f1"), "{taskiq}:kiq:once:f1");
        assert_eq!(k.taskiq_once("{app}:tasks", "f1"), "{app}:kiq:once:f1");
    }

    #[test]
    fn keys_carry_their_hash_tags() {
        let k = Keys::new("app");
        assert_eq!(k.stream("mail"), "{app:mail}:stream");
        assert_eq!(k.stream("mail:high"), "{app:mail}:high:stream");
        assert_eq!(k.dead("mail:low"), "{app:mail}:low:dead");
        // A partition is a queue of its own tag.
        assert_eq!(k.stream("mail#2:high"), "{app:mail#2}:high:stream");
        assert_eq!(k.task("abc"), "{app:t:abc}");
        assert_eq!(k.done_channel("abc"), "{app:t:abc}:done");
        assert_eq!(k.done_channel("abc"), k.task("abc") + DONE_SUFFIX);
        assert_eq!(k.task_tag("abc"), "{app:t:abc}");
        assert_eq!(k.progress("abc"), "{app:t:abc}:progress");
        assert_eq!(k.cancel("abc"), "{app:t:abc}:cancel");
        assert_eq!(k.done_channel_id("{app:t:a:b}:done"), Some("a:b"));
        assert_eq!(k.done_channel_id("{other:t:a}:done"), None);
        assert_eq!(k.lease(), "{app}:scheduler:lease");
    }

    /// Task ids that spell other keys' names land on keys of their own (a task `active` is
    /// not the cancel flag; a task `X:progress` is not X's progress).
    #[test]
    fn task_ids_cannot_collide_with_other_keys() {
        let k = Keys::new("kiq");
        assert_ne!(k.cancel("active"), k.cancel_flag("default"));
        assert_ne!(k.task("X:progress"), k.progress("X"));
        assert_ne!(k.task("X:cancel"), k.cancel("X"));
        assert_ne!(k.task("t"), k.queue_tag("t"));
    }
}
