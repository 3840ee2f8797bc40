//! Queue partitions: one hot queue spread over several hash tags, so that on a Redis Cluster
//! its traffic is shared by several masters.
//!
//! A queue with partitions is read as several physical queues, listed in Redis in order:
//! partition 0 is the queue itself (`mail`, tag `{kiq:mail}`), each other one is
//! `mail#<n>` (tag `{kiq:mail#<n>}`), where `n` is a number chosen when the partition is made:
//! on one Redis the next one (`mail#1`, `mail#2`, …); on a cluster one whose slot lies on the
//! master that holds the fewest of the queue's partitions, so that the masters share the
//! queue evenly. Each physical queue has its own lanes, delayed set, dead letters, unique keys
//! and indexes, exactly as any queue; `#` cannot appear in a queue name, so no queue collides
//! with a partition. A task's envelope keeps the queue it was dispatched to (`mail`); only the
//! lane it is written to names the partition. Producers pick a partition from a stable hash of
//! the task's unique key (so one key always lands on one partition and uniqueness holds) or
//! else of its id (so a retried enqueue-once lands where the first try did). Order is FIFO per
//! partition.

use serde::Serialize;

use super::priority::{split_lane, Priority};

/// Separates a queue's name from its partition's number in a physical queue name.
pub const SEPARATOR: char = '#';

/// Most partitions a queue can have.
pub const MAX_PARTITIONS: u16 = 256;

/// A partitioned queue, as stored in Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partitions {
    /// How many partitions producers spread new tasks over: the first `spread` of `names`.
    pub spread: u16,
    /// Every physical queue workers read, partition 0 (the queue itself) first: every
    /// partition the queue ever had, so that lowering `spread` strands no message.
    pub names: Vec<String>,
}

impl Partitions {
    /// A queue of one partition.
    pub fn single(queue: &str) -> Self {
        Self {
            spread: 1,
            names: vec![queue.to_string()],
        }
    }

    /// The lane a message for `lane` (of this queue, not yet partitioned) keyed by `key` goes
    /// to.
    pub fn route(&self, lane: &str, key: &str) -> String {
        let spread = usize::from(self.spread).clamp(1, self.names.len().max(1));
        let (_, level): (&str, Priority) = split_lane(lane);
        match self.names.get(pick(key, spread as u16) as usize) {
            Some(name) if spread > 1 => level.lane(name),
            _ => lane.to_string(),
        }
    }
}

/// The physical queue of `queue` numbered `n` (0 is the queue itself).
pub fn physical(queue: &str, n: u32) -> String {
    if n == 0 {
        queue.to_string()
    } else {
        format!("{queue}{SEPARATOR}{n}")
    }
}

/// The queue a physical queue belongs to, and its partition's number (0 for the queue itself).
pub fn split(physical: &str) -> (&str, u32) {
    if let Some((queue, n)) = physical.rsplit_once(SEPARATOR) {
        if let Ok(n) = n.parse::<u32>() {
            return (queue, n);
        }
    }
    (physical, 0)
}

/// The queue a physical queue belongs to (`mail#2` → `mail`).
pub fn logical(physical: &str) -> &str {
    split(physical).0
}

/// The partition (of `count`) that `key` belongs to: FNV-1a of the key, modulo `count`. The
/// hash is fixed (not Rust's randomised one), so every producer agrees.
pub fn pick(key: &str, count: u16) -> u16 {
    if count <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(count)) as u16
}

/// The smallest partition number above every one in `names` (1 for a queue of one).
pub fn next_number(names: &[String]) -> u32 {
    names.iter().map(|n| split(n).1).max().unwrap_or(0) + 1
}

/// `names` grown to `count` partitions of `queue`, each new one numbered by `place`: given
/// the names so far, it returns the number of the next (see the module's documentation).
pub fn grow(
    queue: &str,
    names: &[String],
    count: u16,
    mut place: impl FnMut(&[String]) -> u32,
) -> Vec<String> {
    let mut names: Vec<String> = if names.is_empty() {
        vec![queue.to_string()]
    } else {
        names.to_vec()
    };
    while names.len() < usize::from(count) {
        let n = place(&names);
        names.push(physical(queue, n));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn physical_names_split_back() {
        assert_eq!(physical("mail", 0), "mail");
        assert_eq!(physical("mail", 3), "mail#3");
        assert_eq!(split("mail#3"), ("mail", 3));
        assert_eq!(split("mail"), ("mail", 0));
        assert_eq!(logical("mail#12"), "mail");
        let next = |names: &[String]| names.len() as u32;
        assert_eq!(grow("q", &[], 3, next), ["q", "q#1", "q#2"]);
        assert_eq!(
            grow("q", &["q".into(), "q#7".into()], 2, next),
            ["q", "q#7"]
        );
    }

    #[test]
    fn routes_keep_the_priority_and_spread_evenly() {
        let p = Partitions {
            spread: 4,
            names: grow("mail", &[], 6, |n| n.len() as u32 * 10),
        };
        assert_eq!(
            Partitions::single("mail").route("mail:high", "x"),
            "mail:high"
        );
        let mut counts = std::collections::BTreeMap::new();
        for i in 0..40_000 {
            let lane = p.route("mail:high", &format!("{i:08x}-task"));
            let (q, level) = split_lane(&lane);
            assert_eq!(level, Priority::High);
            *counts.entry(q.to_string()).or_insert(0) += 1;
        }
        // Only the first `spread` names; a fixed input, so the spread is deterministic, and
        // even within 5 %.
        assert_eq!(
            counts.keys().collect::<Vec<_>>(),
            ["mail", "mail#10", "mail#20", "mail#30"]
        );
        for c in counts.values() {
            assert!((9_500..=10_500).contains(c), "{counts:?}");
        }
        // The same key always picks the same partition.
        assert_eq!(pick("order-17", 8), pick("order-17", 8));
    }
}
