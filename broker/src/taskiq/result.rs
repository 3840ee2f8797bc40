//! Taskiq's result: the dict `{is_err, log, return_value, execution_time, labels, error}` that
//! `RedisAsyncResultBackend` stores under the task id, as pickle or JSON.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::pickle::{self, PickleError};
use crate::codec::ValueCodec;
use crate::model::record::{FailureKind, TaskRecord, TaskState};
use crate::model::reply::{ResultFormat, TaskiqReply};

/// One Taskiq result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskiqResult {
    /// Whether the task failed.
    pub is_err: bool,
    /// Always `None` in Taskiq 0.13.
    #[serde(default)]
    pub log: Option<String>,
    /// The task's return value (`None` on failure).
    #[serde(default)]
    pub return_value: Value,
    /// Seconds the task ran, rounded to 2 places.
    pub execution_time: f64,
    /// The message's labels, typed.
    #[serde(default)]
    pub labels: Map<String, Value>,
    /// The exception, when `is_err`.
    #[serde(default)]
    pub error: Option<TaskiqException>,
}

/// An exception as Taskiq's result carries it. Python rebuilds it from `exc_module` and
/// `exc_type` (a class it cannot find is synthesised under that name), with `exc_message` as
/// the exception's args.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskiqException {
    /// The exception's class name, e.g. `ValueError`.
    pub exc_type: String,
    /// The exception's args (a list, even for one message).
    pub exc_message: Vec<Value>,
    /// The module of its class, e.g. `builtins`.
    #[serde(default)]
    pub exc_module: Option<String>,
    /// The cause (`raise ... from`), if any.
    #[serde(default)]
    pub exc_cause: Option<Box<TaskiqException>>,
    /// The context, if any.
    #[serde(default)]
    pub exc_context: Option<Box<TaskiqException>>,
    /// Whether the context is suppressed.
    #[serde(default)]
    pub exc_suppress_context: bool,
}

impl TaskiqException {
    /// An exception of kiq's (`exc_module` `kiq`): Python synthesises the class by name.
    pub fn kiq(exc_type: &str, message: &str) -> Self {
        Self {
            exc_type: exc_type.to_string(),
            exc_message: vec![Value::String(message.to_string())],
            exc_module: Some("kiq".into()),
            exc_cause: None,
            exc_context: None,
            exc_suppress_context: false,
        }
    }

    /// The exception's message: its args joined, as `str(exc)` shows one arg.
    pub fn message(&self) -> String {
        self.exc_message
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `module.Type` (just `Type` for builtins or without a module).
    pub fn qualified_type(&self) -> String {
        match self.exc_module.as_deref() {
            None | Some("builtins") => self.exc_type.clone(),
            Some(m) => format!("{m}.{}", self.exc_type),
        }
    }
}

/// Why a stored result could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultError {
    /// A pickle kiq refuses or cannot read.
    #[error(transparent)]
    Pickle(#[from] PickleError),
    /// Not JSON, or not the shape of a Taskiq result.
    #[error("not a Taskiq result: {0}")]
    Shape(String),
}

impl TaskiqResult {
    /// The result as the Python side reads it.
    pub fn encode(&self, format: ResultFormat) -> Vec<u8> {
        match format {
            // Plain serde types always serialize.
            ResultFormat::Json => serde_json::to_vec(self).unwrap_or_default(),
            ResultFormat::Pickle => {
                let error = self
                    .error
                    .as_ref()
                    .and_then(|e| serde_json::to_value(e).ok())
                    .unwrap_or(Value::Null);
                let execution_time = serde_json::Number::from_f64(self.execution_time)
                    .map(Value::Number)
                    .unwrap_or(Value::from(0.0));
                pickle::dumps_entries(&[
                    ("is_err", Value::Bool(self.is_err)),
                    ("log", Value::Null),
                    ("return_value", self.return_value.clone()),
                    ("execution_time", execution_time),
                    ("labels", Value::Object(self.labels.clone())),
                    ("error", error),
                ])
            }
        }
    }

    /// Reads a stored result (pickle as data only).
    pub fn decode(bytes: &[u8], format: ResultFormat) -> Result<Self, ResultError> {
        let value = match format {
            ResultFormat::Json => {
                serde_json::from_slice(bytes).map_err(|e| ResultError::Shape(e.to_string()))?
            }
            ResultFormat::Pickle => pickle::loads(bytes)?,
        };
        serde_json::from_value(value).map_err(|e| ResultError::Shape(e.to_string()))
    }

    /// The result of a task that ended for good, from its final record: its output (decoded
    /// with `codec`), or its failure as an exception of module `kiq` named after the kind of
    /// failure (`TaskError` for a task that returned `Err`, `TaskTimeout`, `BadArguments` ...).
    pub fn from_record(reply: &TaskiqReply, record: &TaskRecord, codec: ValueCodec) -> Self {
        let labels = serde_json::from_str::<Map<String, Value>>(&reply.labels).unwrap_or_default();
        let execution_time = match (record.started_at_ms, record.finished_at_ms) {
            (Some(s), Some(f)) => (f.saturating_sub(s) as f64 / 10.0).round() / 100.0,
            _ => 0.0,
        };
        let mut result = TaskiqResult {
            is_err: true,
            log: None,
            return_value: Value::Null,
            execution_time,
            labels,
            error: None,
        };
        match (record.state, &record.output, &record.failure) {
            (TaskState::Succeeded, Some(out), _) => match codec.to_json(out) {
                Ok(v) => {
                    result.is_err = false;
                    result.return_value = v;
                }
                Err(e) => {
                    result.error = Some(TaskiqException::kiq(
                        "TaskError",
                        &format!("the output cannot be shown to Python: {e}"),
                    ))
                }
            },
            (_, _, Some(f)) => {
                let exc_type = match f.kind {
                    FailureKind::Error => "TaskError",
                    FailureKind::Panic => "TaskPanicked",
                    FailureKind::Timeout => "TaskTimeout",
                    FailureKind::UnknownTask => "UnknownTask",
                    FailureKind::BadArguments => "BadArguments",
                    FailureKind::Malformed => "MalformedMessage",
                    FailureKind::TooManyDeliveries => "TooManyDeliveries",
                    FailureKind::Cancelled => "TaskCancelled",
                    FailureKind::Aborted => "TaskAborted",
                    FailureKind::Other => "TaskError",
                };
                result.error = Some(TaskiqException::kiq(exc_type, &f.message));
            }
            (state, _, None) => {
                result.error = Some(TaskiqException::kiq(
                    "TaskError",
                    &format!("the task ended {} without a result", state.as_str()),
                ))
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_both_formats_python_writes() {
        let j = br#"{"is_err": true, "log": null, "return_value": null, "execution_time": 0.0, "labels": {"retry_on_error": false}, "error": {"exc_type": "ValueError", "exc_message": ["boom: kiq interop"], "exc_module": "builtins", "exc_cause": null, "exc_context": null, "exc_suppress_context": false}}"#;
        let r = TaskiqResult::decode(j, ResultFormat::Json).unwrap();
        let e = r.error.unwrap();
        assert_eq!(e.qualified_type(), "ValueError");
        assert_eq!(e.message(), "boom: kiq interop");
        // JSON under the pickle reader is an error, not a guess.
        assert!(TaskiqResult::decode(j, ResultFormat::Pickle).is_err());
        // A bare-string exc_message is not Taskiq's shape.
        let bad = br#"{"is_err": true, "return_value": null, "execution_time": 0, "error": {"exc_type": "E", "exc_message": "x"}}"#;
        assert!(TaskiqResult::decode(bad, ResultFormat::Json).is_err());
    }

    #[test]
    fn what_kiq_writes_reads_back_in_both_formats() {
        let r = TaskiqResult {
            is_err: false,
            log: None,
            return_value: json!({"sum": 5, "parts": [2, 3]}),
            execution_time: 0.01,
            labels: json!({"timeout": 30}).as_object().unwrap().clone(),
            error: None,
        };
        for f in [ResultFormat::Json, ResultFormat::Pickle] {
            assert_eq!(TaskiqResult::decode(&r.encode(f), f).unwrap(), r);
        }
    }
}
