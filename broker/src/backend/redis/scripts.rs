//! Every Lua script kiq runs, loaded once from `broker/lua/*.lua`, with the builder of the keys
//! each one declares. Call sites build their `KEYS` here, so the unit test below checks the
//! very keys that are sent: every script keeps to one hash slot, as Redis Cluster needs.

use std::sync::LazyLock;

use crate::keys::Keys;
use crate::model::priority::split_lane;

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
lua!(SET_PARTITIONS, "set_partitions");
lua!(TASKIQ_SEND_ONCE, "taskiq_send_once");
lua!(TASKIQ_PASS_BACK, "taskiq_pass_back");
lua!(HISTORY_ADD, "history_add");
lua!(PURGE_LANE, "purge_lane");

impl Lua {
    /// The compiled script (its SHA1, and loading it), for a caller that sends `EVALSHA`
    /// itself.
    pub(crate) fn script(&self) -> &redis::Script {
        &self.script
    }

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
        k.once(split_lane(lane).0, id),
        k.stream(lane),
        k.delayed(lane),
    ]
}

/// The lanes' streams, then the cancel flag of each queue they belong to (once each). The
/// script is told how many streams come first.
pub(crate) fn read_keys(k: &Keys, lanes: &[String]) -> Vec<String> {
    let mut v: Vec<String> = lanes.iter().map(|l| k.stream(l)).collect();
    let mut queues: Vec<&str> = Vec::new();
    for l in lanes {
        let q = split_lane(l).0;
        if !queues.contains(&q) {
            queues.push(q);
        }
    }
    v.extend(queues.into_iter().map(|q| k.cancel_flag(q)));
    v
}

pub(crate) fn group_member_done_keys(
    k: &Keys,
    group: &str,
    callback_lane: Option<&str>,
) -> Vec<String> {
    let mut v = vec![k.group(group, callback_lane.map(|l| split_lane(l).0))];
    v.extend(callback_lane.map(|l| k.stream(l)));
    v
}

pub(crate) fn promote_due_keys(k: &Keys, lane: &str) -> Vec<String> {
    vec![k.delayed(lane), k.stream(lane)]
}

pub(crate) fn cancel_keys(k: &Keys, id: &str) -> Vec<String> {
    vec![k.task(id), k.cancel(id)]
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

pub(crate) fn set_partitions_keys(k: &Keys) -> Vec<String> {
    vec![k.partitions(), k.partitions_read()]
}

pub(crate) fn purge_lane_keys(k: &Keys, lane: &str) -> Vec<String> {
    vec![k.stream(lane), k.delayed(lane)]
}

pub(crate) fn history_add_keys(k: &Keys, now_s: u64) -> Vec<String> {
    vec![
        k.history(60, now_s - now_s % 60),
        k.history(3600, now_s - now_s % 3600),
        k.history(600, now_s - now_s % 600),
    ]
}

pub(crate) fn taskiq_pass_back_keys(stream: &str) -> Vec<String> {
    vec![stream.to_string()]
}

pub(crate) fn taskiq_send_once_keys(k: &Keys, stream: &str, id: &str) -> Vec<String> {
    vec![k.taskiq_once(stream, id), stream.to_string()]
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::backend::redis::connection::slot;

    #[test]
    fn every_script_declares_its_keys_and_keeps_to_one_slot() {
        let k = Keys::new("kiq");
        // A reader on a cluster reads one queue's lanes.
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
            (&GROUP_MEMBER_DONE, group_member_done_keys(&k, "g2", None)),
            (
                &GROUP_MEMBER_DONE,
                group_member_done_keys(&k, "g1", Some("sums")),
            ),
            (&PROMOTE_DUE, promote_due_keys(&k, "mail")),
            (&CANCEL, cancel_keys(&k, "t1")),
            (&REFRESH_LEASES, lane_keys(&k, "mail")),
            (&DELETE_IDLE_CONSUMER, lane_keys(&k, "mail")),
            (&TAKE_TOKEN, take_token_keys(&k, "app::send")),
            (&REPLAY_DEAD, replay_dead_keys(&k, "mail")),
            (&LEASE_ACQUIRE, lease_acquire_keys(&k)),
            (&LEASE_RELEASE, lease_release_keys(&k)),
            (&SCHEDULE_DECIDE, schedule_decide_keys(&k, "nightly", "f1")),
            (&SCHEDULE_SKIP, schedule_skip_keys(&k, "nightly")),
            (&SET_PARTITIONS, set_partitions_keys(&k)),
            (&PURGE_LANE, purge_lane_keys(&k, "mail#2:high")),
            (&HISTORY_ADD, history_add_keys(&k, 1_800_000_123)),
            // Taskiq's stream is named by the Python side, tagged or not.
            (&TASKIQ_SEND_ONCE, taskiq_send_once_keys(&k, "taskiq", "f1")),
            (&TASKIQ_PASS_BACK, taskiq_pass_back_keys("taskiq")),
            (
                &TASKIQ_SEND_ONCE,
                taskiq_send_once_keys(&k, "{app}:tasks", "f1"),
            ),
            // A partition's keys keep to its own slot.
            (
                &ENQUEUE_UNIQUE,
                enqueue_unique_keys(&k, "mail#3", "u1", "mail#3:high"),
            ),
            (&ENQUEUE_ONCE, enqueue_once_keys(&k, "mail#3:low", "t1")),
            (
                &GROUP_MEMBER_DONE,
                group_member_done_keys(&k, "g1", Some("sums#2:high")),
            ),
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
                    source.contains(&format!("-- KEYS[{i}]")) || source.contains("-- KEYS[1..n]"),
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
        assert!(
            cross.is_empty(),
            "scripts spanning several slots (Redis Cluster refuses them): {cross:?}"
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
        named.dedup();
        assert_eq!(files, named);
    }
}
