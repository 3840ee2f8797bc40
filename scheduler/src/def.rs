//! Schedule definitions: what to run, when, with which arguments.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::expr::{ScheduleError, ScheduleExpr};

/// What to do with ticks missed while no scheduler was active (inside the catch-up window).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// Fire every missed tick once (default).
    #[default]
    CatchUp,
    /// Skip missed ticks; fire only ticks that are on time.
    Skip,
}

/// One schedule, as stored in Redis (JSON, so it reads well in `redis-cli` too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleDef {
    /// Unique id: 1-64 characters of `A-Z a-z 0-9 - _ .`.
    pub id: String,
    /// The task name to dispatch.
    pub task: String,
    /// The schedule expression (see [`ScheduleExpr`]).
    pub schedule: String,
    /// IANA time zone (default UTC).
    #[serde(default)]
    pub tz: Option<String>,
    /// The task's arguments, a JSON array.
    #[serde(default = "empty_args")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Value>))]
    pub args: serde_json::Value,
    /// Queue (default: the task's, if linked into the scheduler, else `default`).
    #[serde(default)]
    pub queue: Option<String>,
    /// Whether it fires.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Missed ticks: fire once each, or skip.
    #[serde(default)]
    pub misfire: Misfire,
    /// Retries for each fired task (default: the task's own policy).
    #[serde(default)]
    pub retries: Option<u32>,
    /// The priority of each fired task (default normal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<kiq_broker::Priority>,
    /// Per-attempt timeout for each fired task, in seconds (default: the task's own).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Labels carried to the worker.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Free text for operators.
    #[serde(default)]
    pub description: Option<String>,
    /// When it was created (ms since the epoch); no tick before this fires. Set by the store
    /// when the schedule is first saved; a value sent by a caller is ignored.
    #[serde(default)]
    pub created_at_ms: u64,
}

fn empty_args() -> serde_json::Value {
    serde_json::Value::Array(Vec::new())
}

fn yes() -> bool {
    true
}

impl ScheduleDef {
    /// A schedule `id` running `task` on `schedule` with no arguments.
    pub fn new(
        id: impl Into<String>,
        task: impl Into<String>,
        schedule: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            task: task.into(),
            schedule: schedule.into(),
            tz: None,
            args: empty_args(),
            queue: None,
            enabled: true,
            misfire: Misfire::CatchUp,
            retries: None,
            priority: None,
            timeout_secs: None,
            labels: BTreeMap::new(),
            description: None,
            created_at_ms: 0,
        }
    }

    /// Checks everything that can be checked without Redis, and parses the schedule.
    pub fn validate(&self) -> Result<ScheduleExpr, ScheduleError> {
        let bad = |reason: String| ScheduleError {
            expr: self.schedule.clone(),
            reason,
        };
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !id_ok {
            return Err(bad(format!(
                "schedule id {:?} must be 1-64 characters of A-Z a-z 0-9 - _ .",
                self.id
            )));
        }
        if self.task.is_empty() {
            return Err(bad("the task name is empty".into()));
        }
        if !self.args.is_array() {
            return Err(bad(
                "args must be a JSON array of the task's arguments".into()
            ));
        }
        if let Some(q) = &self.queue {
            if !kiq_broker::valid_queue_name(q) {
                return Err(bad(format!("invalid queue name {q:?}")));
            }
        }
        // The labels every fire carries, held to the message limits now rather than at each
        // fire.
        let probe = kiq_broker::Envelope {
            labels: self.labels.clone(),
            ..Default::default()
        };
        probe.check_limits().map_err(bad)?;
        ScheduleExpr::parse(&self.schedule, self.tz.as_deref())
    }

    /// The arguments encoded by `codec` (a broker's), without knowing the task's types.
    pub fn encoded_args(&self, codec: kiq_broker::ValueCodec) -> Result<Vec<u8>, String> {
        codec.from_json(&self.args).map_err(|e| e.to_string())
    }
}

/// A schedule's state, as the active scheduler keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleStatus {
    /// The last tick handled (fired or skipped), ms since the epoch.
    pub last_tick_ms: Option<u64>,
    /// When the last fire happened, ms since the epoch.
    pub last_fire_ms: Option<u64>,
    /// The next tick, ms since the epoch.
    pub next_fire_ms: Option<u64>,
    /// Task ids of the most recent fires, newest first.
    pub recent_fires: Vec<String>,
}

/// The task id of a schedule's fire at `tick_ms`: deterministic, so every replica agrees on it.
pub fn fire_id(schedule_id: &str, tick_ms: u64) -> String {
    format!("s:{schedule_id}:{tick_ms}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels over the message limits are refused when the schedule is added, not at every
    /// fire (each fire would be refused by dispatch).
    #[test]
    fn labels_over_the_message_limits_are_refused_up_front() {
        let mut def = ScheduleDef::new("nightly", "app.report", "0 3 * * *");
        assert!(def.validate().is_ok());
        for i in 0..=kiq_broker::envelope::MAX_LABELS {
            def.labels.insert(format!("k{i}"), "v".into());
        }
        let err = def.validate().unwrap_err();
        assert!(err.reason.contains("labels"), "{err}");
    }
}
