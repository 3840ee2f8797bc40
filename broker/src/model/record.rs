//! The task record: a task's state and, once it has finished, its result.
//!
//! One Redis string per task (`<prefix>:task:<id>`) holds the encoded [`TaskRecord`]. The producer
//! writes it as `pending` before enqueueing, the worker overwrites it with the outcome before
//! acking, and both writes carry a TTL, so a record never outlives its retention.

use serde::{Deserialize, Serialize};

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TaskState {
    /// Accepted by `.kiq()`, waiting in its queue.
    #[default]
    Pending,
    /// A worker is running it.
    Running,
    /// Failed, and waiting for its next attempt.
    Retrying,
    /// Accepted with a delay: waiting for its due time.
    Scheduled,
    /// Finished with an output.
    Succeeded,
    /// Finished with a failure that will not be retried.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
    /// Failed and moved to the dead letters (it can be replayed from there).
    Dead,
    /// A state written by a newer kiq that this build does not know.
    #[serde(other)]
    Unknown,
}

impl TaskState {
    /// Whether this state is an outcome (nothing more will happen to the task).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled | TaskState::Dead
        )
    }

    /// The state's name, as stored: `pending`, `running`, `succeeded`...
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Running => "running",
            TaskState::Retrying => "retrying",
            TaskState::Scheduled => "scheduled",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::Dead => "dead",
            TaskState::Unknown => "unknown",
        }
    }

    /// The states a finished task can be in (each has an index per queue).
    pub const FINAL: [TaskState; 4] = [
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
        TaskState::Dead,
    ];
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TaskState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let all = [
            TaskState::Pending,
            TaskState::Running,
            TaskState::Retrying,
            TaskState::Scheduled,
            TaskState::Succeeded,
            TaskState::Failed,
            TaskState::Cancelled,
            TaskState::Dead,
        ];
        all.into_iter()
            .find(|st| st.as_str() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                format!("unknown state {s:?}: expected pending, running, retrying, scheduled, succeeded, failed, cancelled or dead")
            })
    }
}

impl StateChange {
    /// Entering `state` at `at_ms` (ms since the epoch) in `attempt`, with a note for people.
    pub fn new(state: TaskState, at_ms: u64, attempt: u32, note: Option<String>) -> Self {
        StateChange {
            state,
            at_ms,
            attempt,
            note,
        }
    }
}

/// One step of a task's life: the state it entered, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StateChange {
    /// The state entered.
    pub state: TaskState,
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// The attempt it concerns (0 for the first run).
    #[serde(default)]
    pub attempt: u32,
    /// The worker, the error, or why: for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Why a task failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The task returned `Err`.
    Error,
    /// The task panicked.
    Panic,
    /// The task ran past its timeout and was dropped.
    Timeout,
    /// No worker knows the task name.
    UnknownTask,
    /// The arguments did not decode into the task's parameter types.
    BadArguments,
    /// The message itself could not be decoded.
    Malformed,
    /// Delivered too many times without finishing (its workers kept dying).
    TooManyDeliveries,
    /// It was cancelled.
    Cancelled,
    /// It never ran: the workflow step it depended on failed.
    Aborted,
    /// A kind written by a newer kiq that this build does not know.
    #[serde(other)]
    Other,
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            FailureKind::Error => "error",
            FailureKind::Panic => "panic",
            FailureKind::Timeout => "timeout",
            FailureKind::UnknownTask => "unknown task",
            FailureKind::BadArguments => "bad arguments",
            FailureKind::Malformed => "malformed message",
            FailureKind::TooManyDeliveries => "too many deliveries",
            FailureKind::Cancelled => "cancelled",
            FailureKind::Aborted => "aborted",
            FailureKind::Other => "other",
        };
        f.write_str(s)
    }
}

/// A task's failure as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}{}: {message}", error_type.as_deref().map(|t| format!(" ({t})")).unwrap_or_default())]
#[non_exhaustive]
pub struct TaskFailure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// For [`FailureKind::Error`], the Rust type of the task's error, e.g. `std::io::Error`.
    #[serde(default)]
    pub error_type: Option<String>,
    /// The error's message (`{:#}`, so error chains are included).
    pub message: String,
}

impl FailureKind {
    /// Whether a failure of this kind may succeed if tried again.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            FailureKind::Error | FailureKind::Panic | FailureKind::Timeout
        )
    }
}

impl TaskFailure {
    /// A failure of `kind` with `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self::typed(kind, None, message)
    }

    /// A failure whose error has a type name (`error_type`).
    pub fn typed(
        kind: FailureKind,
        error_type: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        TaskFailure {
            kind,
            error_type,
            message: message.into(),
        }
    }
}

/// What is stored under a task's record key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskRecord {
    /// The task's state.
    pub state: TaskState,
    /// The task name.
    #[serde(default)]
    pub task: String,
    /// The queue it was dispatched to.
    #[serde(default)]
    pub queue: String,
    /// When it was accepted, ms since the epoch.
    #[serde(default)]
    pub enqueued_at_ms: u64,
    /// When it finished, ms since the epoch.
    #[serde(default)]
    pub finished_at_ms: Option<u64>,
    /// How many attempts were made (1 after the first run).
    #[serde(default)]
    pub attempts: u32,
    /// The encoded output, when it succeeded.
    #[serde(default, with = "serde_bytes")]
    pub output: Option<Vec<u8>>,
    /// The failure, when it failed.
    #[serde(default)]
    pub failure: Option<TaskFailure>,
    /// The consumer (worker process) that ran the last attempt.
    #[serde(default)]
    pub worker: Option<String>,
    /// When the last attempt started, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    /// Every state the task went through, oldest first (kept by the workers; a pending
    /// record has none yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<StateChange>,
    /// The W3C `traceparent` of the task's execution, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// The encoded arguments (the envelope's), for people: kept in the records workers write
    /// when they are at most [`ARGS_KEPT_MAX`] bytes; not in a pending record.
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<u8>>,
}

/// Arguments up to this many encoded bytes are kept in a task's records (what the dashboard's
/// and `taskctl task`'s details show); larger ones are not, to keep records small.
pub const ARGS_KEPT_MAX: usize = 1024;

impl TaskRecord {
    /// The record of a task accepted at `now` on `queue`: `pending`, or `scheduled` when it is
    /// delayed.
    pub fn accepted(task: &str, queue: &str, now: u64, delayed: bool) -> Self {
        TaskRecord {
            state: if delayed {
                TaskState::Scheduled
            } else {
                TaskState::Pending
            },
            task: task.to_string(),
            queue: queue.to_string(),
            enqueued_at_ms: now,
            ..Default::default()
        }
    }

    /// This task cancelled on request at `now` (what it was, if known, is kept).
    pub fn cancelled_on_request(previous: Option<&TaskRecord>, now: u64) -> Self {
        TaskRecord {
            state: TaskState::Cancelled,
            task: previous.map(|r| r.task.clone()).unwrap_or_default(),
            queue: previous.map(|r| r.queue.clone()).unwrap_or_default(),
            enqueued_at_ms: previous.map(|r| r.enqueued_at_ms).unwrap_or(0),
            finished_at_ms: Some(now),
            attempts: previous.map(|r| r.attempts).unwrap_or(0),
            failure: Some(TaskFailure::new(
                FailureKind::Cancelled,
                "cancelled on request",
            )),
            args: previous.and_then(|r| r.args.clone()),
            ..Default::default()
        }
    }

    /// A workflow step that will never run because the step it depended on failed: `failed`
    /// with kind `aborted` and `message`, at `now`.
    pub fn aborted(task: &str, queue: &str, enqueued_at_ms: u64, message: &str, now: u64) -> Self {
        TaskRecord {
            state: TaskState::Failed,
            task: task.to_string(),
            queue: queue.to_string(),
            enqueued_at_ms,
            finished_at_ms: Some(now),
            failure: Some(TaskFailure::new(FailureKind::Aborted, message)),
            ..Default::default()
        }
    }

    /// The record of `envelope`'s task while worker `worker` holds it (read from a lane of
    /// `queue`): the starting point of the records a worker writes for an attempt.
    pub fn of_attempt(
        envelope: &crate::model::envelope::Envelope,
        queue: String,
        worker: &str,
    ) -> Self {
        TaskRecord {
            state: TaskState::Pending,
            task: envelope.task.clone(),
            queue,
            enqueued_at_ms: envelope.enqueued_at_ms,
            attempts: envelope.attempt,
            worker: Some(worker.to_string()),
            args: (envelope.args.len() <= ARGS_KEPT_MAX).then(|| envelope.args.clone()),
            ..Default::default()
        }
    }

    /// This attempt running since `at_ms`, with the history so far and the execution's trace.
    pub fn running(self, at_ms: u64, history: Vec<StateChange>, trace: Option<String>) -> Self {
        TaskRecord {
            state: TaskState::Running,
            started_at_ms: Some(at_ms),
            history,
            trace,
            ..self
        }
    }

    /// This attempt over at `at_ms`, leaving the task in `state` (its history already says
    /// so): attempts counted, the output or the failure kept.
    pub fn attempt_ended(
        self,
        state: TaskState,
        at_ms: u64,
        result: Result<Vec<u8>, TaskFailure>,
        history: Vec<StateChange>,
    ) -> Self {
        let (output, failure) = match result {
            Ok(out) => (Some(out), None),
            Err(f) => (None, Some(f)),
        };
        TaskRecord {
            state,
            finished_at_ms: Some(at_ms),
            attempts: self.attempts.saturating_add(1),
            output,
            failure,
            history,
            ..self
        }
    }

    /// Moves the record to `state` at `at_ms`, noting it in the history.
    pub fn enter(&mut self, state: TaskState, at_ms: u64, attempt: u32, note: Option<String>) {
        self.state = state;
        self.history.push(StateChange {
            state,
            at_ms,
            attempt,
            note,
        });
    }

    /// The record of task `id` as people and tools see it (`taskctl task --json`, the HTTP
    /// API): its output decoded by `codec` (the broker's), and its latest `progress` report if
    /// given.
    pub fn view(
        &self,
        codec: crate::codec::ValueCodec,
        id: &str,
        progress: Option<serde_json::Value>,
    ) -> TaskView {
        TaskView {
            id: id.to_string(),
            task: self.task.clone(),
            queue: self.queue.clone(),
            state: self.state,
            attempts: self.attempts,
            enqueued_at_ms: self.enqueued_at_ms,
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.finished_at_ms,
            worker: self.worker.clone(),
            trace: self.trace.clone(),
            failure: self.failure.as_ref().map(|f| FailureView {
                kind: f.kind,
                error_type: f.error_type.clone(),
                message: f.message.clone(),
            }),
            output: self.output.as_ref().and_then(|b| codec.to_json(b).ok()),
            args: self.args.as_ref().and_then(|b| codec.to_json(b).ok()),
            progress,
            history: self
                .history
                .iter()
                .map(|h| StateChangeView {
                    state: h.state,
                    at_ms: h.at_ms,
                    attempt: h.attempt,
                    note: h.note.clone(),
                })
                .collect(),
        }
    }

    /// [`TaskRecord::view`] as a JSON value.
    pub fn to_json(
        &self,
        codec: crate::codec::ValueCodec,
        id: &str,
        progress: Option<serde_json::Value>,
    ) -> serde_json::Value {
        // Strings, numbers, nulls and JSON values only: it cannot fail.
        serde_json::to_value(self.view(codec, id, progress)).unwrap_or_default()
    }
}

/// A task as people and tools see it: [`TaskRecord::view`], what `taskctl task --json` prints
/// and `GET /api/tasks/{id}` answers. Every field is always present (`null` when unknown).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct TaskView {
    /// The task id.
    pub id: String,
    /// The task name.
    pub task: String,
    /// The queue it was dispatched to.
    pub queue: String,
    /// Its state.
    pub state: TaskState,
    /// How many attempts were made (1 after the first run).
    pub attempts: u32,
    /// When it was accepted, ms since the epoch.
    pub enqueued_at_ms: u64,
    /// When the last attempt started, ms since the epoch.
    pub started_at_ms: Option<u64>,
    /// When it finished, ms since the epoch.
    pub finished_at_ms: Option<u64>,
    /// The consumer (worker process) that ran the last attempt.
    pub worker: Option<String>,
    /// The W3C `traceparent` of its execution.
    pub trace: Option<String>,
    /// The failure, when it failed.
    pub failure: Option<FailureView>,
    /// The output as JSON, when it succeeded.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
    pub output: Option<serde_json::Value>,
    /// The arguments as JSON (a positional array), when its records keep them (up to 1 KiB
    /// encoded, from the first record a worker writes).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
    pub args: Option<serde_json::Value>,
    /// The latest progress report, if any.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
    pub progress: Option<serde_json::Value>,
    /// Every state it went through, oldest first.
    pub history: Vec<StateChangeView>,
}

/// A task's failure in a [`TaskView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct FailureView {
    /// What kind of failure.
    pub kind: FailureKind,
    /// For an `error`, the Rust type of the task's error, e.g. `std::io::Error`.
    #[serde(rename = "type")]
    pub error_type: Option<String>,
    /// The error's message.
    pub message: String,
}

/// One step of a task's life in a [`TaskView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct StateChangeView {
    /// The state entered.
    pub state: TaskState,
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// The attempt it concerns (0 for the first run).
    pub attempt: u32,
    /// The worker, the error, or why: for people.
    pub note: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    #[test]
    fn unknown_states_and_kinds_decode() {
        #[derive(Serialize)]
        struct Future {
            state: &'static str,
            failure: TaskFailureLike,
        }
        #[derive(Serialize)]
        struct TaskFailureLike {
            kind: &'static str,
            message: &'static str,
        }
        let bytes = codec::encode(&Future {
            state: "teleported",
            failure: TaskFailureLike {
                kind: "cosmic_ray",
                message: "m",
            },
        })
        .unwrap();
        let r: TaskRecord = codec::decode(&bytes).unwrap();
        assert_eq!(r.state, TaskState::Unknown);
        assert_eq!(r.failure.unwrap().kind, FailureKind::Other);
    }

    /// The view (`taskctl task --json`, `GET /api/tasks/{id}`) has every field, `null` when
    /// unknown, and the failure's type under `type`.
    #[test]
    fn the_view_has_every_field() {
        let mut r = TaskRecord::accepted("app.add", "default", 7, false);
        r.enter(TaskState::Running, 8, 0, None);
        r.failure = Some(TaskFailure::typed(
            FailureKind::Error,
            Some("E".into()),
            "boom",
        ));
        let v = r.to_json(crate::codec::ValueCodec::default(), "t1", None);
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "args",
                "attempts",
                "enqueued_at_ms",
                "failure",
                "finished_at_ms",
                "history",
                "id",
                "output",
                "progress",
                "queue",
                "started_at_ms",
                "state",
                "task",
                "trace",
                "worker"
            ]
        );
        assert_eq!(v["id"], "t1");
        assert_eq!(v["state"], "running");
        assert_eq!(v["output"], serde_json::Value::Null);
        assert_eq!(
            v["failure"],
            serde_json::json!({"kind": "error", "type": "E", "message": "boom"})
        );
        assert_eq!(
            v["history"],
            serde_json::json!([{"state": "running", "at_ms": 8, "attempt": 0, "note": null}])
        );
    }

    #[test]
    fn failure_displays_kind_type_and_message() {
        let mut f = TaskFailure::new(FailureKind::Error, "disk full");
        f.error_type = Some("std::io::Error".into());
        assert_eq!(f.to_string(), "error (std::io::Error): disk full");
    }
}
