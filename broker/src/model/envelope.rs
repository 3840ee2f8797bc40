//! The message envelope: what one stream entry carries.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The envelope version this build writes. Readers accept any version: fields they do not know
/// are ignored and fields they lack take defaults.
pub const ENVELOPE_VERSION: u16 = 1;

/// One task invocation as it travels through a queue.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Envelope version (see [`ENVELOPE_VERSION`]).
    #[serde(default)]
    pub v: u16,
    /// The task id: 32 lowercase hex characters (a UUID v4 without dashes, as Taskiq's).
    pub id: String,
    /// The registered task name.
    pub task: String,
    /// The queue the message was dispatched to.
    #[serde(default)]
    pub queue: String,
    /// The arguments, encoded by the wire codec as one tuple (a positional array).
    #[serde(with = "serde_bytes")]
    pub args: Vec<u8>,
    /// Free-form metadata carried from producer to worker.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When the producer accepted it, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub enqueued_at_ms: u64,
    /// How many times it has been attempted before this delivery (0 on the first).
    #[serde(default)]
    pub attempt: u32,
    /// A per-call retry policy that overrides the task's own.
    #[serde(default)]
    pub retry: Option<crate::retry::RetryPolicy>,
    /// A per-call timeout (ms) for each attempt, overriding the task's own.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The uniqueness key this task holds until it finishes (see `Kicker::unique`).
    #[serde(default)]
    pub unique_key: Option<String>,
    /// Its priority (which lane of the queue carries it).
    #[serde(default, skip_serializing_if = "crate::priority::Priority::is_normal")]
    pub priority: crate::priority::Priority,
    /// A chain's remaining steps: on success, `then[0]` is sent with this task's output as its
    /// argument, carrying `then[1..]`. Their arguments are filled in then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub then: Vec<Envelope>,
    /// The group this task belongs to: its end (success or failure) counts towards the
    /// group's, which sends the group's callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupRef>,
    /// For a group's callback: the members whose outputs, in order, become its argument.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gather: Vec<String>,
    /// When a delayed dispatch is due (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_ms: Option<u64>,
    /// The states of earlier attempts (carried across retries into the final record).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<crate::record::StateChange>,
    /// The W3C `traceparent` of the dispatch: the worker's execution joins this trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// For a task that came from a Taskiq message: where its result goes for the Python side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taskiq: Option<crate::model::reply::TaskiqReply>,
}

/// A task's place in a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRef {
    /// The group id.
    pub id: String,
    /// The task's position in the group.
    pub index: u32,
    /// The lane the group's callback goes to, if it has one (so that the member finishing last
    /// names the callback's stream to the script that sends it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_lane: Option<String>,
}

/// A fresh task id: 32 lowercase hex characters.
pub fn new_task_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    system_ms(SystemTime::now())
}

/// The longest delay and the longest per-attempt timeout a dispatch may ask for (about ten
/// years): larger values are refused with a clear error rather than wrapped around.
pub const MAX_DELAY: Duration = Duration::from_secs(10 * 366 * 86_400);

/// `d` in whole milliseconds, saturating at `u64::MAX` (a `Duration` holds more).
pub fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// When a task delayed by `delay` from now is due, in milliseconds since the Unix epoch,
/// saturating (a dispatch refuses a due time beyond [`MAX_DELAY`] from now).
pub fn due_in(delay: Duration) -> u64 {
    now_ms().saturating_add(duration_ms(delay))
}

/// `t` in milliseconds since the Unix epoch (0 before it).
pub fn system_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(duration_ms).unwrap_or(0)
}

/// Checks that a caller-supplied task id is usable as part of a Redis key.
pub fn validate_task_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| ID_BYTES[b as usize])
        // `.` and `..` are path segments: a URL naming them does not reach the task.
        && !id.bytes().all(|b| b == b'.')
}

/// The bytes a task id may hold (ASCII letters and digits, `-`, `_`, `.`, `:`), as a table: a
/// worker checks every id it reads, and a lookup beats the chain of comparisons.
const ID_BYTES: [bool; 256] = byte_set(b"-_.:");

/// ASCII letters and digits, and `extra`, as a table indexed by byte.
pub(crate) const fn byte_set(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

/// Most labels one message may carry. Like every limit here, checked on dispatch and again on
/// read (a message written to Redis by someone else is held to the same rules).
pub const MAX_LABELS: usize = 256;
/// Longest label key, in bytes.
pub const MAX_LABEL_KEY_BYTES: usize = 256;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_BYTES: usize = 16 * 1024;
/// Most later steps a chain may have.
pub const MAX_CHAIN_STEPS: usize = 1_000;
/// Most members a group may have (its callback gathers one id per member).
pub const MAX_GROUP_MEMBERS: usize = 100_000;

impl Envelope {
    /// About how many bytes its MessagePack encoding takes (the field names, the strings it
    /// holds, a margin), to size the buffer once. Chains, groups and history grow it.
    pub(crate) fn encoded_size_hint(&self) -> usize {
        const FIXED: usize = 256;
        FIXED
            + self.id.len()
            + self.task.len()
            + self.queue.len()
            + self.args.len()
            + self
                .labels
                .iter()
                .map(|(k, v)| k.len() + v.len() + 6)
                .sum::<usize>()
            + self.unique_key.as_ref().map_or(0, String::len)
            + self.trace.as_ref().map_or(0, String::len)
    }

    /// Checks the message's lists and labels against kiq's limits ([`MAX_LABELS`],
    /// [`MAX_CHAIN_STEPS`], [`MAX_GROUP_MEMBERS`], ...), its chain steps' too. Returns what is
    /// over.
    pub fn check_limits(&self) -> Result<(), String> {
        if self.labels.len() > MAX_LABELS {
            return Err(format!(
                "{} labels, over the limit of {MAX_LABELS}",
                self.labels.len()
            ));
        }
        for (k, v) in &self.labels {
            if k.len() > MAX_LABEL_KEY_BYTES || v.len() > MAX_LABEL_VALUE_BYTES {
                return Err(format!(
                    "label {:?} is over the size limit ({MAX_LABEL_KEY_BYTES}-byte keys, \
                     {MAX_LABEL_VALUE_BYTES}-byte values)",
                    k.chars().take(64).collect::<String>()
                ));
            }
        }
        if self.then.len() > MAX_CHAIN_STEPS {
            return Err(format!(
                "a chain of {} later steps, over the limit of {MAX_CHAIN_STEPS}",
                self.then.len()
            ));
        }
        if self.gather.len() > MAX_GROUP_MEMBERS {
            return Err(format!(
                "a group of {} members, over the limit of {MAX_GROUP_MEMBERS}",
                self.gather.len()
            ));
        }
        self.then.iter().try_for_each(Envelope::check_limits)
    }

    /// Checks what a worker is about to act on in a message it read, by the rules dispatch
    /// applies: the task id, the queue, and those of every chain step and of the group's
    /// callback lane (a message written to Redis by someone else may break them). Returns
    /// what is wrong.
    pub fn check(&self) -> Result<(), String> {
        self.check_limits()?;
        if !validate_task_id(&self.id) {
            return Err(format!("invalid task id {:?}", self.id));
        }
        let queue_ok = |q: &str| {
            q.is_empty() || crate::client::dispatch::valid_queue_name(crate::partition::logical(q))
        };
        if !queue_ok(&self.queue) {
            return Err(format!("invalid queue {:?}", self.queue));
        }
        for step in &self.then {
            if !validate_task_id(&step.id) || !queue_ok(&step.queue) || step.queue.is_empty() {
                return Err(format!(
                    "invalid chain step (id {:?}, queue {:?})",
                    step.id, step.queue
                ));
            }
        }
        if let Some(g) = &self.group {
            let lane_ok = g
                .callback_lane
                .as_deref()
                .is_none_or(|l| queue_ok(crate::priority::split_lane(l).0));
            if !validate_task_id(&g.id) || !lane_ok {
                return Err(format!(
                    "invalid group reference (id {:?}, callback lane {:?})",
                    g.id, g.callback_lane
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    /// One rule for ids and queues, on dispatch and on read: nothing a crafted message carries
    /// can reach another key.
    #[test]
    fn read_messages_are_checked_like_dispatches() {
        assert!(!validate_task_id(".") && !validate_task_id(".."));
        // The byte tables hold what the rules say, byte for byte.
        for b in 0..=255u8 {
            let id = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':');
            assert_eq!(ID_BYTES[b as usize], id, "byte {b}");
            let one = [b];
            let as_str = std::str::from_utf8(&one).ok();
            let queue = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
            if let Some(q) = as_str {
                assert_eq!(
                    crate::client::dispatch::valid_queue_name(q),
                    queue,
                    "byte {b}"
                );
            }
        }
        assert!(validate_task_id("a.b") && validate_task_id("s:tick:1"));
        let ok = Envelope {
            id: "t1".into(),
            queue: "mail".into(),
            ..Envelope::default()
        };
        assert_eq!(ok.check(), Ok(()));
        let partition = Envelope {
            queue: "mail#2".into(),
            ..ok.clone()
        };
        assert_eq!(partition.check(), Ok(()));
        for bad in [
            Envelope {
                id: String::new(),
                ..ok.clone()
            },
            Envelope {
                id: "a\r\nb".into(),
                ..ok.clone()
            },
            Envelope {
                id: "a}b".into(),
                ..ok.clone()
            },
            Envelope {
                queue: "x}{y".into(),
                ..ok.clone()
            },
            Envelope {
                then: vec![Envelope {
                    queue: "x}{y".into(),
                    ..ok.clone()
                }],
                ..ok.clone()
            },
            Envelope {
                then: vec![Envelope {
                    id: "".into(),
                    ..ok.clone()
                }],
                ..ok.clone()
            },
            Envelope {
                group: Some(GroupRef {
                    id: "g".into(),
                    index: 0,
                    callback_lane: Some("x}{y:high".into()),
                }),
                ..ok.clone()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn round_trips_and_ids_look_like_taskiq() {
        let id = new_task_id();
        assert_eq!(id.len(), 32);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let e = Envelope {
            v: ENVELOPE_VERSION,
            id,
            task: "app::add".into(),
            queue: "default".into(),
            args: codec::encode(&(1i64, 2i64)).unwrap(),
            labels: BTreeMap::from([("k".into(), "v".into())]),
            enqueued_at_ms: now_ms(),
            attempt: 0,
            retry: Some(crate::retry::RetryPolicy::retries(3)),
            timeout_ms: Some(5_000),
            unique_key: None,
            priority: crate::priority::Priority::High,
            then: Vec::new(),
            group: Some(GroupRef {
                id: "g".into(),
                index: 3,
                callback_lane: None,
            }),
            gather: Vec::new(),
            ..Envelope::default()
        };
        let back: Envelope = codec::decode(&codec::encode(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn task_ids_are_checked() {
        assert!(validate_task_id("order-42:v1"));
        assert!(!validate_task_id(""));
        assert!(!validate_task_id("has space"));
        assert!(!validate_task_id(&"x".repeat(129)));
    }

    /// Lists and labels a message carries are bounded, on dispatch (`outgoing`) and on read
    /// (`check`): a crafted message with a huge `gather` or label map once took a worker from
    /// 12 MB to 233 MB.
    #[test]
    fn labels_chains_and_gathers_are_bounded() {
        let ok = Envelope {
            id: "t1".into(),
            queue: "q".into(),
            ..Envelope::default()
        };
        assert_eq!(ok.check(), Ok(()));
        let mut many_labels = ok.clone();
        for i in 0..=MAX_LABELS {
            many_labels.labels.insert(format!("k{i}"), "v".into());
        }
        let mut big_label = ok.clone();
        big_label
            .labels
            .insert("k".into(), "v".repeat(MAX_LABEL_VALUE_BYTES + 1));
        let long_chain = Envelope {
            then: vec![ok.clone(); MAX_CHAIN_STEPS + 1],
            ..ok.clone()
        };
        let big_gather = Envelope {
            gather: vec!["m".into(); MAX_GROUP_MEMBERS + 1],
            ..ok.clone()
        };
        let nested = Envelope {
            then: vec![many_labels.clone()],
            ..ok.clone()
        };
        for bad in [many_labels, big_label, long_chain, big_gather, nested] {
            let err = bad.check().unwrap_err();
            assert!(err.contains("limit"), "{err}");
        }
    }
}
