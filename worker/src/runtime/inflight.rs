//! The messages this process holds: read or reclaimed, and not yet completed in Redis.
//! The lease refresher keeps exactly these fresh.

use foldhash::{HashMap, HashSet};
use std::sync::Mutex;

/// A stream entry id as held: Redis's `<ms>-<seq>` as two numbers (nothing to allocate, cheap
/// to hash; every message read and completed passes through here), any other text as it came.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum EntryId {
    Num(u64, u64),
    Text(Box<str>),
}

impl EntryId {
    fn of(id: &str) -> Self {
        Self::numbers(id).unwrap_or_else(|| Self::Text(id.into()))
    }

    /// `<ms>-<seq>` in Redis's own spelling (decimal, no sign, no leading zeros), so that the
    /// id written back is the one read.
    fn numbers(id: &str) -> Option<Self> {
        let (ms, seq) = id.split_once('-')?;
        // Checked and read in one pass (this runs for every message, twice).
        let num = |s: &str| -> Option<u64> {
            let digits = s.as_bytes();
            if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
                return None;
            }
            digits.iter().try_fold(0u64, |n, b| {
                let d = b.wrapping_sub(b'0');
                (d < 10).then_some(())?;
                n.checked_mul(10)?.checked_add(u64::from(d))
            })
        };
        Some(Self::Num(num(ms)?, num(seq)?))
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Num(ms, seq) => write!(f, "{ms}-{seq}"),
            Self::Text(t) => f.write_str(t),
        }
    }
}

/// Stream ids held by this process, per queue.
#[derive(Debug, Default)]
pub struct InFlight {
    by_queue: Mutex<HashMap<String, HashSet<EntryId>>>,
}

/// The ids of `queue` in `m`, made if new: the queue's name is copied only the first time.
fn ids_of<'m>(
    m: &'m mut HashMap<String, HashSet<EntryId>>,
    queue: &str,
) -> &'m mut HashSet<EntryId> {
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
        let mut current: Option<(&str, &mut HashSet<EntryId>)> = None;
        for (queue, id) in held {
            let ids = match current {
                Some((q, ids)) if q == queue => ids,
                _ => ids_of(&mut m, queue),
            };
            ids.insert(EntryId::of(id));
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
        let mut current: Option<(&str, Option<&mut HashSet<EntryId>>)> = None;
        for (queue, id) in done {
            let mut ids = match current {
                Some((q, ids)) if q == queue => ids,
                _ => m.get_mut(queue),
            };
            if let Some(ids) = ids.as_deref_mut() {
                ids.remove(&EntryId::of(id));
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
                    .map(|(q, ids)| (q.clone(), ids.iter().map(EntryId::to_string).collect()))
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

    /// Ids come back exactly as they were read, whatever their form: Redis's `<ms>-<seq>` (held
    /// as numbers) and anything else (held as text), which never meet.
    #[test]
    fn ids_are_given_back_as_read() {
        let odd = [
            "1700000000000-0",
            "18446744073709551615-18446744073709551615",
            "0-0",
            "01-1",
            "1-01",
            "1-",
            "-1",
            "1",
            "18446744073709551616-0",
            "+1-1",
            "1-1-1",
            "x",
            "",
        ];
        let f = InFlight::default();
        f.insert_many(odd.iter().map(|id| ("q", *id)));
        assert_eq!(f.len(), odd.len());
        let mut back = f.snapshot().remove(0).1;
        back.sort();
        let mut want: Vec<String> = odd.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(back, want);
        // "01-1" is not "1-1": removing one leaves the other.
        f.insert("q", "1-1");
        f.remove("q", "01-1");
        assert!(f.snapshot()[0].1.contains(&"1-1".to_string()));
        f.remove_many(odd.iter().map(|id| ("q", *id)));
        f.remove("q", "1-1");
        assert!(f.is_empty());
    }
}
