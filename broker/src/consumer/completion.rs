//! What a worker writes back: a message's end, the effects that go with it, and the state
//! changes that are not ends.

use crate::model::envelope::{Envelope, GroupRef};
use crate::model::record::TaskRecord;

/// One write of a worker, in the order it happened: the consumer writes a batch of them in
/// one round trip (then acks the completed messages in a second).
#[derive(Debug, Clone)]
pub enum Write {
    /// A task's record changed without the task ending (it started running, or its worker
    /// stopped before it finished): stored, not announced, nothing acknowledged.
    State(StoredRecord),
    /// A message is done with: its task's record, its end, and the end's effects are written,
    /// then the message is acknowledged.
    Completion(Completion),
}

/// A task's record, to store under its id.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    /// The task id.
    pub id: String,
    /// The record.
    pub record: TaskRecord,
}

/// What a worker writes when it is done with a message.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The lane (stream) the message was read from.
    pub lane: String,
    /// Its stream entry id.
    pub stream_id: String,
    /// The task's record as the message leaves it (`None` when the message did not decode).
    pub task: Option<StoredRecord>,
    /// What becomes of the message.
    pub end: End,
    /// What else the end sets off (workflow steps, group counts, a uniqueness key released).
    pub effects: Vec<Effect>,
}

/// What becomes of a message a worker is done with.
#[derive(Debug, Clone)]
pub enum End {
    /// The task finished for good (succeeded, failed or cancelled): its record is announced
    /// to waiters, listed in its queue's index and counted.
    Done,
    /// The task failed and is tried again: `next` (the next attempt's envelope) waits in its
    /// lane's delayed set until `at_ms`.
    Retry {
        /// The next attempt.
        next: Box<Envelope>,
        /// When it is due, ms since the epoch.
        at_ms: u64,
    },
    /// A middleware put the task off (not an attempt): the message goes back, byte for byte,
    /// to its lane's delayed set until `at_ms`.
    Defer {
        /// The message as it came.
        payload: Vec<u8>,
        /// When it is due, ms since the epoch.
        at_ms: u64,
    },
    /// The message cannot ever succeed as it is: it goes to its lane's dead letters (and its
    /// task, when it decoded, finishes as dead).
    Dead(DeadLetter),
}

impl End {
    /// Whether the task's record is final (announced and indexed).
    pub fn is_final(&self) -> bool {
        matches!(self, End::Done | End::Dead(_))
    }
}

/// Something a message's end sets off, written with it.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Send a message: a chain's next step.
    Send(Box<Envelope>),
    /// Store and announce another task's final record: a chain's steps that will never run.
    Finish(Box<StoredRecord>),
    /// Count this task towards its group's end; the last member sends the group's callback.
    GroupMemberDone(GroupRef),
    /// Give up the uniqueness key this task held on `queue` (it finished for good).
    ReleaseUnique {
        /// The queue the key belongs to.
        queue: String,
        /// The key.
        key: String,
        /// The task that holds it (the key is released only if it still does).
        holder: String,
    },
    /// Store bytes under a key outside kiq's own (a Taskiq result, where Python reads it).
    StoreValue {
        /// The key.
        key: String,
        /// The bytes.
        value: Vec<u8>,
        /// How long it is kept (ms); `None`: as long as kiq keeps results.
        ttl_ms: Option<u64>,
    },
}

/// A message that could not be processed, with why.
#[derive(Debug, Clone, Default)]
pub struct DeadLetter {
    /// A short machine-readable reason, e.g. `malformed`, `unknown_task`.
    pub reason: String,
    /// The last error, for people.
    pub error: String,
    /// The task id, when the message decoded.
    pub task_id: Option<String>,
    /// The task name, when the message decoded.
    pub task: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// The original payload, byte for byte.
    pub payload: Vec<u8>,
}
