//! Queue partitions: one hot queue spread over several hash tags, so that on a Redis Cluster
//! its traffic is shared by several masters.
//!
//! A queue with `n` partitions is read as `n` physical queues: partition 0 is the queue itself
//! (`mail`, tag `{kiq:mail}`), partition `i` is `mail#i` (tag `{kiq:mail#i}`). Each physical
//! queue has its own lanes, delayed set, dead letters, unique keys and indexes, exactly as any
//! queue; `#` cannot appear in a queue name, so no queue collides with a partition. A task's
//! envelope keeps the queue it was dispatched to (`mail`); only the lane it is written to names
//! the partition. Producers pick a partition from a stable hash of the task's unique key (so
//! one key always lands on one partition and uniqueness holds) or else of its id (so a retried
//! enqueue-once lands where the first try did). Order is FIFO per partition.

use super::priority::{split_lane, Priority};

/// Separates a queue's name from its partition number in a physical queue name.
pub const SEPARATOR: char = '#';

/// Most partitions a queue can have.
pub const MAX_PARTITIONS: u16 = 256;

/// One queue's partition counts, as stored in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PartitionCount {
    /// How many partitions producers spread new tasks over.
    pub spread: u16,
    /// How many partitions workers read: the most the queue ever had, so that lowering the
    /// count strands no message.
    pub read: u16,
}

/// The physical queue of `queue`'s partition `index` (partition 0 is the queue itself).
pub fn physical(queue: &str, index: u16) -> String {
    if index == 0 {
        queue.to_string()
    } else {
        format!("{queue}{SEPARATOR}{index}")
    }
}

/// Every physical queue of `queue` when it has `count` partitions, partition 0 first.
pub fn physical_queues(queue: &str, count: u16) -> Vec<String> {
    (0..count.max(1)).map(|i| physical(queue, i)).collect()
}

/// The queue a physical queue belongs to, and its partition number.
pub fn split(physical: &str) -> (&str, u16) {
    if let Some((queue, index)) = physical.rsplit_once(SEPARATOR) {
        if let Ok(i) = index.parse::<u16>() {
            return (queue, i);
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

/// The lane that carries a message of `lane` (a queue's lane, not yet partitioned) keyed by
/// `key`, when its queue has `count` partitions. A lane that already names a partition is
/// returned as it is.
pub fn route(lane: &str, key: &str, count: u16) -> String {
    let (queue, level): (&str, Priority) = split_lane(lane);
    if count <= 1 || queue.contains(SEPARATOR) {
        return lane.to_string();
    }
    level.lane(&physical(queue, pick(key, count)))
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
        assert_eq!(physical_queues("q", 3), ["q", "q#1", "q#2"]);
        assert_eq!(physical_queues("q", 0), ["q"]);
    }

    #[test]
    fn routes_keep_the_priority_and_spread_evenly() {
        assert_eq!(route("mail:high", "x", 1), "mail:high");
        assert_eq!(route("mail#1:high", "x", 4), "mail#1:high");
        let mut counts = [0u32; 4];
        for i in 0..40_000 {
            let lane = route("mail:high", &format!("{i:08x}-task"), 4);
            let (q, p) = split_lane(&lane);
            assert_eq!(p, Priority::High);
            counts[split(q).1 as usize] += 1;
        }
        // A fixed input: the spread is deterministic, and even within 5 %.
        for c in counts {
            assert!((9_500..=10_500).contains(&c), "{counts:?}");
        }
        // The same key always picks the same partition.
        assert_eq!(pick("order-17", 8), pick("order-17", 8));
    }
}
