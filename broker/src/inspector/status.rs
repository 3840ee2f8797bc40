//! What operators see: queue depths and the workers that are alive.

use serde::Serialize;

/// One queue's numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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
}
