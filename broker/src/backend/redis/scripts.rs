//! Every Lua script kiq runs, loaded once from `broker/lua/*.lua`, with the builder of the keys
//! each one declares. Call sites build their `KEYS` here, so the unit test below checks the
//! very keys that are sent: which scripts keep to one hash slot (what Redis Cluster needs), and
//! which do not yet.

use std::sync::LazyLock;

use crate::keys::Keys;
use crate::model::record::TaskState;

/// One script: its name (the file's) and its source, compiled into a `redis::Script` (which
/// sends EVALSHA, falling back to EVAL once per connection) on first use.
pub(crate) struct Lua {
    /// The file's name, for the unit test below.
    #[cfg(test)]
    pub(crate) name: &'static str,
    /// The source, for EVAL inside a pipeline.
    pub(crate) source: &'static str,
    script: LazyLock<redis::Script>,
}

macro_rules! lua {
    ($id:ident, $file:literal) => {
        pub(crate) static $id: Lua = Lua {
            #[cfg(test)]
            name: $file,
            source: include_str!(concat!("../../../lua/", $file, ".lua")),
            script: LazyLock::new(|| redis::Script::new($id.source)),
        };
    };
}

lua!(ENQUEUE_UNIQUE, "enqueue_unique");
lua!(RELEASE_UNIQUE, "release_unique");
lua!(ENQUEUE_ONCE, "enqueue_once");
lua!(READ_BY_PRIORITY, "read_by_priority");
lua!(LANE_LENGTHS, "lane_lengths");
lua!(GROUP_MEMBER_DONE, "group_member_done");
lua!(PROMOTE_DUE, "promote_due");
lua!(CANCEL, "cancel");
lua!(REFRESH_LEASES, "refresh_leases");
lua!(DELETE_IDLE_CONSUMER, "delete_idle_consumer");
lua!(TAKE_TOKEN, "take_token");
lua!(REPLAY_DEAD, "replay_dead");
lua!(LEASE_ACQUIRE, "lease_acquire");
lua!(LEASE_RELEASE, "lease_release");
lua!(SCHEDULE_DECIDE, "schedule_decide");
lua!(SCHEDULE_SKIP, "schedule_skip");

impl Lua {
    /// An invocation with `keys` declared, ready for arguments.
    pub(crate) fn with_keys<S: AsRef<str>>(&self, keys: &[S]) -> redis::ScriptInvocation<'_> {
        let mut inv = self.script.prepare_invoke();
        for k in keys {
            inv.key(k.as_ref());
        }
        inv
    }

    /// `EVAL` of this script with `keys`, for a pipeline (arguments follow).
    pub(crate) fn eval<S: AsRef<str>>(&self, keys: &[S]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(self.source).arg(keys.len());
        for k in keys {
            cmd.arg(k.as_ref());
        }
        cmd
    }
}

// The keys each script declares, in `KEYS` order.

pub(crate) fn enqueue_unique_keys(k: &Keys, queue: &str, key: &str, lane: &str) -> Vec<String> {
    vec![k.unique(queue, key), k.stream(lane), k.delayed(lane)]
}

pub(crate) fn release_unique_keys(k: &Keys, queue: &str, key: &str) -> Vec<String> {
    vec![k.unique(queue, key)]
}

pub(crate) fn enqueue_once_keys(k: &Keys, lane: &str, id: &str) -> Vec<String> {
    vec![
        k.once(lane, id),
        k.stream(lane),
        k.delayed(lane),
        k.task(id),
    ]
}

pub(crate) fn read_keys(k: &Keys, lanes: &[String]) -> Vec<String> {
    let mut v: Vec<String> = lanes.iter().map(|l| k.stream(l)).collect();
    v.push(k.cancel_active());
    v
}

pub(crate) fn group_member_done_keys(
    k: &Keys,
    group: &str,
    callback_lane: Option<&str>,
) -> Vec<String> {
    let mut v = vec![k.group(group)];
    v.extend(callback_lane.map(|l| k.stream(l)));
    v
}

pub(crate) fn promote_due_keys(k: &Keys, lane: &str) -> Vec<String> {
    vec![k.delayed(lane), k.stream(lane)]
}

pub(crate) fn cancel_keys(k: &Keys, id: &str, queue: &str) -> Vec<String> {
    vec![
        k.task(id),
        k.cancel(id),
        k.cancel_active(),
        k.index(queue, TaskState::Cancelled),
    ]
}

pub(crate) fn lane_keys(k: &Keys, lane: &str) -> Vec<String> {
    vec![k.stream(lane)]
}

pub(crate) fn take_token_keys(k: &Keys, name: &str) -> Vec<String> {
    vec![k.rate_limit(name)]
}

pub(crate) fn replay_dead_keys(k: &Keys, lane: &str) -> Vec<String> {
    vec![k.dead(lane), k.stream(lane)]
}

pub(crate) fn lease_acquire_keys(k: &Keys) -> Vec<String> {
    vec![k.lease(), k.fence()]
}

pub(crate) fn lease_release_keys(k: &Keys) -> Vec<String> {
    vec![k.lease()]
}

pub(crate) fn schedule_decide_keys(k: &Keys, schedule: &str, fire_id: &str) -> Vec<String> {
    vec![
        k.lease(),
        k.fired(fire_id),
        k.schedule_state(schedule),
        k.schedule_fires(schedule),
        k.outbox(),
    ]
}

pub(crate) fn schedule_skip_keys(k: &Keys, schedule: &str) -> Vec<String> {
    vec![k.lease(), k.schedule_state(schedule)]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis Cluster's key slot: CRC16 (XMODEM) of the key's hash tag, or of the whole key,
    /// mod 16384. Written out here (12 lines) rather than pulling in redis-rs's cluster feature
    /// for one test.
    fn slot(key: &str) -> u16 {
        let b = key.as_bytes();
        let tagged = match b.iter().position(|c| *c == b'{') {
            Some(open) => match b[open + 1..].iter().position(|c| *c == b'}') {
                Some(len) if len > 0 => &b[open + 1..open + 1 + len],
                _ => b,
            },
            None => b,
        };
        let mut crc: u16 = 0;
        for byte in tagged {
            crc ^= (*byte as u16) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc % 16384
    }

    #[test]
    fn slots_match_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot("123456789"), 0x31C3);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
    }

    /// Scripts whose keys span several hash slots in today's data model (one Redis or a
    /// primary only). The Redis Cluster work makes this list empty.
    const CROSS_SLOT: &[&str] = &[
        "cancel",
        "enqueue_once",
        "enqueue_unique",
        "group_member_done",
        "lane_lengths",
        "lease_acquire",
        "read_by_priority",
        "schedule_decide",
        "schedule_skip",
    ];

    #[test]
    fn every_script_declares_its_keys_and_the_cross_slot_ones_are_known() {
        let k = Keys::new("kiq");
        let lanes = vec!["mail:critical".to_string(), "mail".to_string()];
        let table: Vec<(&Lua, Vec<String>)> = vec![
            (
                &ENQUEUE_UNIQUE,
                enqueue_unique_keys(&k, "mail", "u1", "mail:high"),
            ),
            (&RELEASE_UNIQUE, release_unique_keys(&k, "mail", "u1")),
            (&ENQUEUE_ONCE, enqueue_once_keys(&k, "mail", "t1")),
            (&READ_BY_PRIORITY, read_keys(&k, &lanes)),
            (&LANE_LENGTHS, read_keys(&k, &lanes[1..])),
            (
                &GROUP_MEMBER_DONE,
                group_member_done_keys(&k, "g1", Some("sums")),
            ),
            (&PROMOTE_DUE, promote_due_keys(&k, "mail")),
            (&CANCEL, cancel_keys(&k, "t1", "mail")),
            (&REFRESH_LEASES, lane_keys(&k, "mail")),
            (&DELETE_IDLE_CONSUMER, lane_keys(&k, "mail")),
            (&TAKE_TOKEN, take_token_keys(&k, "app::send")),
            (&REPLAY_DEAD, replay_dead_keys(&k, "mail")),
            (&LEASE_ACQUIRE, lease_acquire_keys(&k)),
            (&LEASE_RELEASE, lease_release_keys(&k)),
            (&SCHEDULE_DECIDE, schedule_decide_keys(&k, "nightly", "f1")),
            (&SCHEDULE_SKIP, schedule_skip_keys(&k, "nightly")),
        ];
        let mut cross = Vec::new();
        for (lua, keys) in &table {
            let source = std::fs::read_to_string(format!(
                "{}/lua/{}.lua",
                env!("CARGO_MANIFEST_DIR"),
                lua.name
            ))
            .unwrap();
            // Every key is named in the header, and the script builds none: no string in its
            // code could be (part of) a key name, all of which hold a ':'.
            for i in 1..=keys.len() {
                assert!(
                    source.contains(&format!("-- KEYS[{i}]")) || source.contains("-- KEYS[1..n-1]"),
                    "{}'s header does not name KEYS[{i}]",
                    lua.name
                );
            }
            assert!(
                source.starts_with("--"),
                "{} has no header comment",
                lua.name
            );
            for line in source.lines().filter(|l| !l.trim_start().starts_with("--")) {
                for literal in line.split('\'').skip(1).step_by(2) {
                    assert!(
                        !literal.contains(':') && !literal.contains('{'),
                        "{} builds a key-like string {literal:?}",
                        lua.name
                    );
                }
            }
            let first = slot(&keys[0]);
            if keys.iter().any(|key| slot(key) != first) {
                cross.push(lua.name);
            }
        }
        cross.sort();
        println!("scripts spanning several slots: {cross:?}");
        assert_eq!(
            cross, CROSS_SLOT,
            "the cross-slot list changed: update CROSS_SLOT and docs/redis-data-model.md"
        );
        // Every .lua file is in the table.
        let dir = format!("{}/lua", env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .trim_end_matches(".lua")
                    .to_string()
            })
            .collect();
        files.sort();
        let mut named: Vec<&str> = table.iter().map(|(l, _)| l.name).collect();
        named.sort();
        assert_eq!(files, named);
    }
}
