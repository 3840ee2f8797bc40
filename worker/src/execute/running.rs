//! The tasks running in this process: their cancellation tokens, and the `running` record of
//! those that were marked running (written back as pending if the worker stops first).

use std::collections::HashMap;
use std::sync::Mutex;

use kiq_broker::envelope::now_ms;
use kiq_broker::{StoredRecord, TaskRecord, TaskState, Write};
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
struct Entry {
    token: CancellationToken,
    /// The running record, once written.
    marked: Option<TaskRecord>,
}

/// The tasks running in this process, by task id.
#[derive(Debug, Default)]
pub struct RunningTasks {
    tasks: Mutex<HashMap<String, Entry>>,
}

impl RunningTasks {
    /// Fires the cancellation token of task `id` if it runs here; returns whether it did.
    pub fn cancel(&self, id: &str) -> bool {
        let token = self
            .tasks
            .lock()
            .ok()
            .and_then(|t| t.get(id).map(|e| e.token.clone()));
        match token {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Task `id` starts: its cancellation token.
    pub(crate) fn start(&self, id: &str) -> CancellationToken {
        let token = CancellationToken::new();
        if let Ok(mut t) = self.tasks.lock() {
            t.insert(
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
        if let Ok(mut t) = self.tasks.lock() {
            if let Some(e) = t.get_mut(id) {
                e.marked = Some(record);
            }
        }
    }

    /// Task `id` is no longer running here.
    pub(crate) fn finish(&self, id: &str) {
        if let Ok(mut t) = self.tasks.lock() {
            t.remove(id);
        }
    }

    /// Records saying "pending again" for every task still marked running here: what a
    /// stopping worker writes for the tasks it abandons (their messages will be redelivered).
    pub fn abandoned(&self) -> Vec<Write> {
        let Ok(tasks) = self.tasks.lock() else {
            return Vec::new();
        };
        tasks
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
