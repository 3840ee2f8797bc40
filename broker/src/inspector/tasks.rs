//! Listing tasks by state and queue, for operators (`taskctl tasks`, the HTTP API).
//!
//! Nothing is indexed twice: waiting and running tasks are listed from the queues themselves
//! (a lane's stream holds every message not yet acknowledged; its delayed set holds scheduled
//! and retrying ones), and their state is read from their records. Finished tasks are listed
//! from one sorted set per queue and final state (`{kiq:<queue>}:finished:<state>`), which
//! the completion adds to (one ZADD per task) and the workers trim to the result TTL and
//! [`INDEX_MAX`] entries.

use crate::model::record::TaskRecord;

/// Most entries kept in one finished-task index.
pub const INDEX_MAX: usize = 100_000;

/// One task in a listing.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskSummary {
    /// The task id.
    pub id: String,
    /// Its record (`None` if it expired while being listed).
    pub record: Option<TaskRecord>,
}
