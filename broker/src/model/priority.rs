//! Task priorities, and the per-priority lanes that carry them.
//!
//! A Redis stream is first in, first out, so each queue has one stream per priority: its
//! *lanes*. The `normal` lane is the queue itself (`{kiq:mail}:stream`); the others append
//! the level (`{kiq:mail:high}:stream`). A lane is a queue in every other respect (its own
//! delayed set, dead letters and consumer group), so retries and reclaims keep a task's
//! priority. Workers read lanes strictly in priority order: while a higher lane has work, a
//! lower one waits.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How urgent a task is. Under a backlog, workers start higher priorities first.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Before everything else.
    Critical,
    /// Before normal and low.
    High,
    /// The default.
    #[default]
    Normal,
    /// Only when nothing more urgent waits.
    Low,
}

impl Priority {
    /// Every level, most urgent first.
    pub const ALL: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    /// The level's name: `critical`, `high`, `normal` or `low`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// Whether this is the default level (not written into envelopes).
    pub fn is_normal(&self) -> bool {
        *self == Priority::Normal
    }

    /// The lane of `queue` that carries this level.
    pub fn lane(self, queue: &str) -> String {
        match self {
            Priority::Normal => queue.to_string(),
            p => format!("{queue}:{}", p.as_str()),
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A priority name that is not one of `critical`, `high`, `normal`, `low`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority {0:?}: expected critical, high, normal or low")]
pub struct UnknownPriority(pub String);

impl FromStr for Priority {
    type Err = UnknownPriority;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownPriority(s.to_string()))
    }
}

/// The lanes of `queues`, in the order workers read them: every queue's critical lane, then
/// every high lane, and so on.
pub fn lanes(queues: &[String]) -> Vec<String> {
    Priority::ALL
        .into_iter()
        .flat_map(|p| queues.iter().map(move |q| p.lane(q)))
        .collect()
}

/// The queue a lane belongs to, and its priority (a plain queue name is its normal lane).
pub fn split_lane(lane: &str) -> (&str, Priority) {
    if let Some((queue, level)) = lane.rsplit_once(':') {
        if let Ok(p) = level.parse::<Priority>() {
            if p != Priority::Normal {
                return (queue, p);
            }
        }
    }
    (lane, Priority::Normal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_are_ordered_by_priority_then_queue() {
        let qs = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            lanes(&qs),
            [
                "a:critical",
                "b:critical",
                "a:high",
                "b:high",
                "a",
                "b",
                "a:low",
                "b:low"
            ]
        );
    }

    #[test]
    fn lanes_split_back() {
        for p in Priority::ALL {
            assert_eq!(split_lane(&p.lane("mail.x")), ("mail.x", p));
        }
        assert_eq!("HIGH".parse::<Priority>(), Ok(Priority::High));
        assert!("urgent".parse::<Priority>().is_err());
        assert!(Priority::Critical < Priority::Low);
    }
}
