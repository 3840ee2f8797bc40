//! Where a task's result also goes when the task came from another framework: a Taskiq
//! message's result is written where Taskiq's result backend reads it.

use serde::{Deserialize, Serialize};

/// How a Taskiq result is serialized: as the Python side's result backend is configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultFormat {
    /// `pickle` (Taskiq's default serializer), read and written as plain data only.
    #[default]
    Pickle,
    /// JSON (`JSONSerializer()` on the Python side).
    Json,
}

impl ResultFormat {
    /// `pickle` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResultFormat::Pickle => "pickle",
            ResultFormat::Json => "json",
        }
    }
}

impl std::str::FromStr for ResultFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pickle" => Ok(ResultFormat::Pickle),
            "json" => Ok(ResultFormat::Json),
            other => Err(format!("{other:?}: expected pickle or json")),
        }
    }
}

/// A task's Taskiq result: where and how the worker writes it when the task ends for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskiqReply {
    /// The result key (the task id, after the Python side's prefix if it has one).
    pub key: String,
    /// The serializer the Python side reads with.
    pub format: ResultFormat,
    /// How long the result is kept (ms); `None` keeps it as long as kiq keeps results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// The message's labels as Python parsed them, a JSON object (the result carries them).
    #[serde(default)]
    pub labels: String,
}
