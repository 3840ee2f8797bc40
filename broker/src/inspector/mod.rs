//! The operators' surface: an [`Inspector`] reads queues, workers, task listings, dead letters
//! and counters, and administers dead letters.

pub(crate) mod dead;
#[allow(clippy::module_inception)]
pub(crate) mod inspector;
pub(crate) mod queues;
pub(crate) mod status;
pub(crate) mod tasks;

pub use dead::{valid_dead_letter_id, DeadCursor, DeadEntry, DeadFilter, DeadPage};
pub use inspector::Inspector;
pub use status::QueueStats;
pub use tasks::{TaskCursor, TaskPage, TaskSummary, INDEX_MAX};
