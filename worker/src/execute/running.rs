//! The tasks running in this process: their cancellation tokens, and the `running` record of
//! those that were marked running (written back as pending if the worker stops first).

use foldhash::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kiq_broker::envelope::now_ms;
use kiq_broker::{StoredRecord, TaskRecord, TaskState, Write};
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
struct Entry {
    token: CancellationToken,
    /// The running record, once written.
    marked: Option<TaskRecord>,
}

/// How long a cancellation heard before its task started here is remembered: far longer than
/// the window it covers (from a batch's cancel-mark check to its tasks' start).
const EARLY_CANCEL_TTL: Duration = Duration::from_secs(60);
/// Most early cancellations remembered.
const EARLY_CANCEL_MAX: usize = 10_000;

#[derive(Debug, Default)]
struct Table {
    tasks: HashMap<String, Entry>,
    /// Cancellations of tasks not running here when heard, and when.
    early: HashMap<String, Instant>,
    /// When `early` was last cleared of expired entries.
    pruned: Option<Instant>,
}

impl Table {
    /// Drops expired early cancellations, at most once per TTL: cancellations of tasks that ran
    /// on other workers would otherwise keep `early` from ever emptying (and every start here
    /// would look in it).
    fn prune(&mut self, now: Instant) {
        if self
            .pruned
            .is_none_or(|at| now.duration_since(at) >= EARLY_CANCEL_TTL)
        {
            self.early
                .retain(|_, at| now.duration_since(*at) < EARLY_CANCEL_TTL);
            self.pruned = Some(now);
        }
    }
}

/// The tasks running in this process, by task id.
#[derive(Debug, Default)]
pub struct RunningTasks {
    table: Mutex<Table>,
}

impl RunningTasks {
    /// Fires the cancellation token of task `id` if it runs here; returns whether it did.
    ///
    /// A task not running here is remembered for a while: one this worker has read, checked
    /// for cancel marks before the cancellation, and not yet started, is cancelled as it starts
    /// (otherwise the announcement would pass between the check and the start, and it would
    /// run to its end).
    pub fn cancel(&self, id: &str) -> bool {
        let Ok(mut t) = self.table.lock() else {
            return false;
        };
        if let Some(e) = t.tasks.get(id) {
            e.token.cancel();
            return true;
        }
        let now = Instant::now();
        if t.early.len() >= EARLY_CANCEL_MAX {
            // Full: prune now, whenever the last time was; clear if that is not enough.
            t.pruned = None;
        }
        t.prune(now);
        if t.early.len() >= EARLY_CANCEL_MAX {
            t.early.clear();
        }
        t.early.insert(id.to_string(), now);
        false
    }

    /// Task `id` starts: its cancellation token (already fired if its cancellation was heard
    /// just before).
    pub(crate) fn start(&self, id: &str) -> CancellationToken {
        let token = CancellationToken::new();
        if let Ok(mut t) = self.table.lock() {
            // Usually empty: no lookup then.
            if !t.early.is_empty() {
                let now = Instant::now();
                t.prune(now);
                if t.early
                    .remove(id)
                    .is_some_and(|at| now.duration_since(at) < EARLY_CANCEL_TTL)
                {
                    token.cancel();
                }
            }
            t.tasks.insert(
                id.to_string(),
                Entry {
                    token: token.clone(),
                    marked: None,
                },
            );
        }
        token
    }

    /// Task `id` was marked running with `record`.
    pub(crate) fn marked(&self, id: &str, record: TaskRecord) {
        if let Ok(mut t) = self.table.lock() {
            if let Some(e) = t.tasks.get_mut(id) {
                e.marked = Some(record);
            }
        }
    }

    /// The ids of the tasks running here now.
    pub(crate) fn ids(&self) -> Vec<String> {
        self.table
            .lock()
            .map(|t| t.tasks.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Task `id` is no longer running here.
    pub(crate) fn finish(&self, id: &str) {
        if let Ok(mut t) = self.table.lock() {
            t.tasks.remove(id);
        }
    }

    /// Records saying "pending again" for every task still marked running here: what a
    /// stopping worker writes for the tasks it abandons (their messages will be redelivered).
    pub fn abandoned(&self) -> Vec<Write> {
        let Ok(t) = self.table.lock() else {
            return Vec::new();
        };
        t.tasks
            .iter()
            .filter_map(|(id, e)| {
                let mut record = e.marked.clone()?;
                let attempt = record.attempts;
                record.enter(
                    TaskState::Pending,
                    now_ms(),
                    attempt,
                    Some("its worker stopped before it finished; it will be redelivered".into()),
                );
                Some(Write::State(StoredRecord {
                    id: id.clone(),
                    record,
                }))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancellation_heard_just_before_the_start_cancels_the_task() {
        let running = RunningTasks::default();
        assert!(!running.cancel("a"), "not running yet");
        assert!(running.start("a").is_cancelled());
        assert!(!running.start("b").is_cancelled());
        assert!(running.cancel("b"));
        running.finish("a");
        // Remembered once only.
        assert!(!running.start("a").is_cancelled());
    }

    /// Early cancellations of tasks that never start here (they ran on another worker) expire:
    /// the table empties again, and starts skip the lookup.
    #[test]
    fn expired_early_cancellations_are_dropped() {
        let now = Instant::now();
        let Some(long_ago) = now.checked_sub(EARLY_CANCEL_TTL + Duration::from_secs(1)) else {
            return; // a clock this close to its origin cannot hold an expired entry
        };
        let mut t = Table::default();
        t.early.insert("elsewhere".into(), long_ago);
        t.early.insert("recent".into(), now);
        t.prune(now);
        assert_eq!(t.early.keys().collect::<Vec<_>>(), ["recent"]);
        // At most once per TTL.
        t.early.insert("elsewhere".into(), long_ago);
        t.prune(now);
        assert_eq!(t.early.len(), 2);
    }
}
