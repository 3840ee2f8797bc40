//! A Taskiq stream as kiq sees it: its names on the Python side and how results are written.

use std::time::Duration;

use crate::model::reply::ResultFormat;

/// A Taskiq stream (taskiq-redis's `RedisStreamBroker`) and the result backend its Python
/// side reads: what a kiq worker serves and what a kiq producer sends to.
///
/// ```
/// use kiq_broker::taskiq::{ResultFormat, TaskiqStream};
/// let s = TaskiqStream::new("taskiq").results(ResultFormat::Json).result_prefix("p");
/// assert_eq!(s.result_key("abc"), "p:abc");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskiqStream {
    /// The stream key (`queue_name` of the Python broker; default `taskiq`).
    pub stream: String,
    /// The consumer group (`consumer_group_name`; default `taskiq`). kiq workers join the same
    /// group as Python workers, so each message goes to one of them.
    pub group: String,
    /// The Python result backend's serializer (default pickle).
    pub results: ResultFormat,
    /// The Python result backend's `prefix_str` (results under `<prefix>:<task id>`).
    pub result_prefix: Option<String>,
    /// How long results kiq writes are kept (Taskiq's `result_ex_time`/`result_px_time`);
    /// `None`: as long as the broker keeps kiq's own results (`BrokerConfig::result_ttl`).
    pub result_ttl: Option<Duration>,
    /// The kiq queue under which this stream's dead letters are listed (default `taskiq`).
    /// A message that names a task is run on that task's own queue.
    pub queue: String,
    /// Whether Python workers read this stream too. Then a message for a task no kiq worker
    /// runs is passed back to the stream for them (after a pause that doubles each time it
    /// comes back to kiq) instead of being dead-lettered at once.
    pub shared: bool,
    /// An entry a kiq worker read and did not settle (it stopped) is taken over by a kiq
    /// worker after this long (default 1 min). Python's entries are never taken.
    pub reclaim_after: Duration,
    /// On a shared stream, a message passed back this many times (no Python worker took it)
    /// is dead-lettered as `unknown_task` (default 30: about two minutes of pauses).
    pub max_hops: u64,
}

impl Default for TaskiqStream {
    fn default() -> Self {
        Self {
            stream: "taskiq".into(),
            group: "taskiq".into(),
            results: ResultFormat::Pickle,
            result_prefix: None,
            result_ttl: None,
            queue: "taskiq".into(),
            shared: false,
            reclaim_after: Duration::from_secs(60),
            max_hops: 30,
        }
    }
}

impl TaskiqStream {
    /// The stream `stream`, with Taskiq's defaults otherwise.
    pub fn new(stream: impl Into<String>) -> Self {
        Self {
            stream: stream.into(),
            ..Self::default()
        }
    }

    /// Sets the consumer group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// Sets the result serializer.
    pub fn results(mut self, format: ResultFormat) -> Self {
        self.results = format;
        self
    }

    /// Sets the result key prefix.
    pub fn result_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.result_prefix = Some(prefix.into());
        self
    }

    /// Sets how long written results are kept.
    pub fn result_ttl(mut self, ttl: Duration) -> Self {
        self.result_ttl = Some(ttl);
        self
    }

    /// Sets the kiq queue that lists this stream's dead letters.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Declares that Python workers read this stream too.
    pub fn shared(mut self, shared: bool) -> Self {
        self.shared = shared;
        self
    }

    /// The key of task `id`'s result, as the Python result backend reads it.
    pub fn result_key(&self, id: &str) -> String {
        match &self.result_prefix {
            Some(p) => format!("{p}:{id}"),
            None => id.to_string(),
        }
    }

    /// Checks the names (a clear error rather than a stream nobody reads).
    pub fn check(&self) -> Result<(), String> {
        if self.stream.is_empty() || self.group.is_empty() {
            return Err("a Taskiq stream needs a stream and a group name".into());
        }
        // kiq's once-marks take the stream's hash tag; braces that make no tag would put them
        // in another slot.
        if crate::keys::hash_tag(&self.stream).contains(['{', '}']) {
            return Err(format!(
                "Taskiq stream name {:?} has braces that make no hash tag: use none, or one {{tag}}",
                self.stream
            ));
        }
        if !crate::client::dispatch::valid_queue_name(&self.queue) {
            return Err(format!(
                "invalid kiq queue name {:?} for Taskiq dead letters",
                self.queue
            ));
        }
        Ok(())
    }
}

/// One entry read from a Taskiq stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskiqEntry {
    /// Its stream entry id.
    pub id: String,
    /// Its `data` field (`None` if it has none).
    pub data: Option<Vec<u8>>,
    /// How many times it has been delivered (1 on a first read).
    pub deliveries: u64,
    /// How many times kiq passed it back to the stream for Python workers (its `kiq_hops`
    /// field, which Python ignores).
    pub hops: u64,
}

/// The stream entry field that counts how often kiq passed a message back for Python.
pub const HOPS_FIELD: &str = "kiq_hops";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::redis::connection::slot;
    use crate::keys::Keys;

    #[test]
    fn a_streams_once_marks_share_its_slot_or_it_is_refused() {
        let k = Keys::new("kiq");
        for name in ["taskiq", "{app}:tasks", "x{y}z", "tasks.v2"] {
            assert!(TaskiqStream::new(name).check().is_ok(), "{name}");
            assert_eq!(slot(&k.taskiq_once(name, "s:f:1")), slot(name), "{name}");
        }
        for name in ["a{}b", "x}y", "{a", ""] {
            assert!(TaskiqStream::new(name).check().is_err(), "{name}");
        }
    }
}
