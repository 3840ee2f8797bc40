//! The messages this process holds: read or reclaimed, and not yet completed in Redis.
//! The lease refresher keeps exactly these fresh.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// Stream ids held by this process, per queue.
#[derive(Debug, Default)]
pub struct InFlight {
    by_queue: Mutex<HashMap<String, HashSet<String>>>,
}

impl InFlight {
    /// Marks `id` of `queue` as held.
    pub fn insert(&self, queue: &str, id: &str) {
        if let Ok(mut m) = self.by_queue.lock() {
            m.entry(queue.to_string())
                .or_default()
                .insert(id.to_string());
        }
    }

    /// Marks `id` of `queue` as no longer held.
    pub fn remove(&self, queue: &str, id: &str) {
        if let Ok(mut m) = self.by_queue.lock() {
            if let Some(ids) = m.get_mut(queue) {
                ids.remove(id);
            }
        }
    }

    /// A copy of what is held, per queue (non-empty queues only).
    pub fn snapshot(&self) -> Vec<(String, Vec<String>)> {
        self.by_queue
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(_, ids)| !ids.is_empty())
                    .map(|(q, ids)| (q.clone(), ids.iter().cloned().collect()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many messages are held.
    pub fn len(&self) -> usize {
        self.by_queue
            .lock()
            .map(|m| m.values().map(HashSet::len).sum())
            .unwrap_or(0)
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
