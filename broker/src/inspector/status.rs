//! What operators see: queue depths and the workers that are alive.

use serde::Serialize;

/// One queue's numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct QueueStats {
    /// The queue.
    pub queue: String,
    /// Messages in the stream: waiting plus in flight (acked ones are deleted).
    pub depth: u64,
    /// Messages delivered to a worker and not yet acked.
    pub in_flight: u64,
    /// Waiting = depth − in flight.
    pub waiting: u64,
    /// Delayed messages (delays and retries) not yet due.
    pub delayed: u64,
    /// Dead letters.
    pub dead: u64,
    /// On a Redis Cluster, the node (`host:port`) serving the queue's (or partition's) slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// A partitioned queue's partitions, each with its own numbers and node (the queue's
    /// numbers are their sums). Empty for a queue of one partition.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(no_recursion))]
    pub partitions: Vec<QueueStats>,
    /// Whether the queue is paused (workers do not read it; dispatches are accepted).
    #[serde(default)]
    pub paused: bool,
    /// When it was paused, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_at_ms: Option<u64>,
}

impl QueueStats {
    /// Adds `other`'s numbers to these.
    pub fn add(&mut self, other: &QueueStats) {
        self.depth += other.depth;
        self.in_flight += other.in_flight;
        self.waiting += other.waiting;
        self.delayed += other.delayed;
        self.dead += other.dead;
    }
}
