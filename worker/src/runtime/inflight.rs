//! The messages this process holds: read or reclaimed, and not yet completed in Redis.
//! The lease refresher keeps exactly these fresh.

use foldhash::{HashMap, HashSet};
use std::sync::Mutex;

/// Stream ids held by this process, per queue.
#[derive(Debug, Default)]
pub struct InFlight {
    by_queue: Mutex<HashMap<String, HashSet<String>>>,
}

/// The ids of `queue` in `m`, made if new: the queue's name is copied only the first time.
fn ids_of<'m>(m: &'m mut HashMap<String, HashSet<String>>, queue: &str) -> &'m mut HashSet<String> {
    if !m.contains_key(queue) {
        m.insert(queue.to_string(), HashSet::default());
    }
    m.get_mut(queue).expect("just inserted")
}

impl InFlight {
    /// Marks `id` of `queue` as held.
    pub fn insert(&self, queue: &str, id: &str) {
        self.insert_many([(queue, id)]);
    }

    /// Marks each `(queue, id)` of `held` as held, taking the lock once. Runs of one queue
    /// look it up once.
    pub fn insert_many<'a>(&self, held: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let Ok(mut m) = self.by_queue.lock() else {
            return;
        };
        let mut current: Option<(&str, &mut HashSet<String>)> = None;
        for (queue, id) in held {
            let ids = match current {
                Some((q, ids)) if q == queue => ids,
                _ => ids_of(&mut m, queue),
            };
            if !ids.contains(id) {
                ids.insert(id.to_string());
            }
            current = Some((queue, ids));
        }
    }

    /// Marks `id` of `queue` as no longer held.
    pub fn remove(&self, queue: &str, id: &str) {
        self.remove_many([(queue, id)]);
    }

    /// Marks each `(queue, id)` of `done` as no longer held, taking the lock once.
    pub fn remove_many<'a>(&self, done: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let Ok(mut m) = self.by_queue.lock() else {
            return;
        };
        let mut current: Option<(&str, Option<&mut HashSet<String>>)> = None;
        for (queue, id) in done {
            let mut ids = match current {
                Some((q, ids)) if q == queue => ids,
                _ => m.get_mut(queue),
            };
            if let Some(ids) = ids.as_deref_mut() {
                ids.remove(id);
            }
            current = Some((queue, ids));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(f: &InFlight) -> Vec<(String, Vec<String>)> {
        let mut s = f.snapshot();
        for (_, ids) in &mut s {
            ids.sort();
        }
        s.sort();
        s
    }

    /// Batches hold and release exactly what one message at a time would: the lease keeper
    /// refreshes the same ids.
    #[test]
    fn batches_hold_what_single_inserts_hold() {
        let held = [
            ("mail", "1-0"),
            ("mail", "1-1"),
            ("mail:high", "2-0"),
            ("mail", "3-0"),
            ("other", "4-0"),
            ("mail", "1-0"),
        ];
        let one = InFlight::default();
        for (q, id) in held {
            one.insert(q, id);
        }
        let many = InFlight::default();
        many.insert_many(held);
        assert_eq!(sorted(&one), sorted(&many));
        assert_eq!(many.len(), 5);
        assert_eq!(
            sorted(&many),
            vec![
                (
                    "mail".into(),
                    vec!["1-0".into(), "1-1".into(), "3-0".into()]
                ),
                ("mail:high".into(), vec!["2-0".into()]),
                ("other".into(), vec!["4-0".into()]),
            ]
        );

        let done = [
            ("mail", "1-0"),
            ("mail", "3-0"),
            ("gone", "9-9"),
            ("mail", "9-9"),
            ("other", "4-0"),
        ];
        for (q, id) in done {
            one.remove(q, id);
        }
        many.remove_many(done);
        assert_eq!(sorted(&one), sorted(&many));
        assert_eq!(
            sorted(&many),
            vec![
                ("mail".into(), vec!["1-1".into()]),
                ("mail:high".into(), vec!["2-0".into()]),
            ]
        );
        many.remove_many([("mail", "1-1"), ("mail:high", "2-0")]);
        assert!(many.is_empty());
        assert!(many.snapshot().is_empty());
    }
}
