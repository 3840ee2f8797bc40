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

/// Where a listing of finished tasks goes on from: the last task of a page (when it finished,
/// and its id). Written as `<at_ms>:<id>` ([`std::fmt::Display`], [`std::str::FromStr`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCursor {
    /// When the page's last task finished (its index score), ms.
    pub at_ms: u64,
    /// Its id.
    pub id: String,
}

impl std::fmt::Display for TaskCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.at_ms, self.id)
    }
}

impl std::str::FromStr for TaskCursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a listing cursor (`<ms>:<task id>`, as `next` gives)");
        let (at, id) = s.split_once(':').ok_or_else(bad)?;
        if id.is_empty() || id.len() > 128 {
            return Err(bad());
        }
        Ok(TaskCursor {
            at_ms: at.parse().map_err(|_| bad())?,
            id: id.to_string(),
        })
    }
}

/// One page of a listing.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskPage {
    /// The tasks, in the listing's order.
    pub tasks: Vec<TaskSummary>,
    /// Where the next page starts (finished states only; `None`: this was the last page).
    pub next: Option<TaskCursor>,
}

/// One task in a listing.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskSummary {
    /// The task id.
    pub id: String,
    /// Its record (`None` if it expired while being listed).
    pub record: Option<TaskRecord>,
}
