//! What a worker reads: messages, and what each background pass returns.

use serde::{Deserialize, Serialize};

/// One message read from a lane.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The lane (stream) it was read from.
    pub lane: String,
    /// Its stream entry id.
    pub stream_id: String,
    /// The `data` field, if the entry has one.
    pub payload: Option<Vec<u8>>,
    /// How many times the group has delivered it, this delivery included.
    pub deliveries: u64,
}

/// What one read returned.
#[derive(Debug, Default)]
pub struct ReadBatch {
    /// The messages.
    pub deliveries: Vec<Delivery>,
    /// Whether any task may have been cancelled lately (see `Broker::cancel`).
    pub cancels_active: bool,
}

/// What a reclaim took over.
#[derive(Debug, Default)]
pub struct Reclaimed {
    /// Messages to run again.
    pub deliveries: Vec<Delivery>,
    /// Messages delivered more than the allowed number of times: dead letters.
    pub poisoned: Vec<Delivery>,
}

/// What one promotion pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promotion {
    /// Messages moved into the stream.
    pub moved: u64,
    /// When the next delayed message is due (ms since the epoch), if there is one.
    pub next_due_ms: Option<u64>,
}

/// A worker process's heartbeat entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct WorkerInfo {
    /// Its consumer name.
    pub consumer: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Tasks it runs at once.
    pub concurrency: usize,
    /// Queues it reads.
    pub queues: Vec<String>,
    /// When it started, ms since the epoch.
    pub started_ms: u64,
    /// Its last heartbeat, ms since the epoch.
    pub heartbeat_ms: u64,
    /// Messages it holds right now.
    #[serde(default)]
    pub in_flight: u64,
    /// The names of the tasks it runs (what `taskctl kiq` checks a name against).
    #[serde(default)]
    pub tasks: Vec<String>,
    /// Whether it went quiet: it takes no new work and finishes what it holds.
    #[serde(default)]
    pub quiet: bool,
}

impl WorkerInfo {
    /// This process's heartbeat entry as consumer `consumer`, starting now: `concurrency` tasks at
    /// once from `queues`, running the tasks named `tasks`.
    pub fn new(
        consumer: String,
        concurrency: usize,
        queues: Vec<String>,
        tasks: Vec<String>,
    ) -> Self {
        let now = crate::envelope::now_ms();
        WorkerInfo {
            consumer,
            host: crate::config::hostname(),
            pid: std::process::id(),
            concurrency,
            queues,
            started_ms: now,
            heartbeat_ms: now,
            in_flight: 0,
            tasks,
            quiet: false,
        }
    }

    /// A worker whose last heartbeat is older than this (ms) is not counted as live.
    pub const LIVE_MS: u64 = 60_000;

    /// Whether its last heartbeat is recent enough, at `now_ms`, to count it as running.
    pub fn is_live(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.heartbeat_ms) < Self::LIVE_MS
    }
}

/// What a worker is told between reads.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// A delayed message was added to one of the worker's lanes: re-plan the promotion.
    Wake,
    /// Task `id` was cancelled: stop it if it runs here.
    Cancelled(String),
    /// The subscription was (re)established: anything announced while it was down is unknown.
    Resubscribed,
    /// A queue was paused or resumed, or a worker told to go quiet: look at the gate again
    /// (see [`Consumer::gate`](crate::Consumer::gate)).
    Control,
}
