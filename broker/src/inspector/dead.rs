//! Dead-letter streams: reading, replaying and purging them.

/// One entry of a dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadEntry {
    /// The dead letter's own stream id (used to show, replay or purge it).
    pub id: String,
    /// The queue it came from.
    pub queue: String,
    /// Why it is dead: `malformed`, `too_large`, `unknown_task`, `bad_arguments`, `retries_exhausted`,
    /// `too_many_deliveries`.
    pub reason: String,
    /// The last error.
    pub error: String,
    /// The task id, when the message decoded.
    pub task_id: Option<String>,
    /// The task name, when the message decoded.
    pub task: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// When it died, ms since the epoch.
    pub at_ms: u64,
    /// The original payload.
    pub payload: Vec<u8>,
    /// Where the message came from when not from a kiq queue: `taskiq:<stream>` for a
    /// Taskiq message (a replay sends it back there).
    pub origin: Option<String>,
}

/// Which dead letters [`Inspector::find_dead_letters`](crate::Inspector::find_dead_letters) returns: every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadFilter {
    /// A queue (with its priority lanes and partitions), or one lane.
    pub queue: Option<String>,
    /// A reason: `malformed`, `too_large`, `unknown_task`, `bad_arguments`, `retries_exhausted`,
    /// `too_many_deliveries`.
    pub reason: Option<String>,
    /// A task name.
    pub task: Option<String>,
}

impl DeadFilter {
    pub(crate) fn matches(&self, e: &DeadEntry) -> bool {
        self.reason.as_deref().is_none_or(|r| r == e.reason)
            && self
                .task
                .as_deref()
                .is_none_or(|t| e.task.as_deref() == Some(t))
    }
}

/// Where a paged listing of dead letters goes on from: the last entry it looked at (not
/// necessarily one it returned: a listing with a filter stops after looking at a bounded
/// number). Written as `<lane>/<id>` ([`std::fmt::Display`], [`std::str::FromStr`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadCursor {
    /// The lane (`mail`, `mail:high`, `mail#2:low`).
    pub lane: String,
    /// The last entry id looked at in it.
    pub id: String,
}

impl std::fmt::Display for DeadCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.lane, self.id)
    }
}

impl std::str::FromStr for DeadCursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a dead-letter cursor (`<lane>/<id>`, as `next` gives)");
        let (lane, id) = s.rsplit_once('/').ok_or_else(bad)?;
        if lane.is_empty() || lane.len() > 200 || !valid_dead_letter_id(id) {
            return Err(bad());
        }
        Ok(DeadCursor {
            lane: lane.to_string(),
            id: id.to_string(),
        })
    }
}

/// One page of dead letters.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeadPage {
    /// The matching entries, lane by lane (lanes in name order), oldest first in each.
    pub entries: Vec<DeadEntry>,
    /// Where the next page starts (`None`: nothing is left).
    pub next: Option<DeadCursor>,
}

/// Whether `id` is a stream entry id (`<ms>-<seq>`, or `<ms>`), as dead letters have: anything
/// else is refused before Redis is asked.
pub fn valid_dead_letter_id(id: &str) -> bool {
    let mut parts = id.splitn(2, '-');
    let digits = |p: Option<&str>| {
        p.is_some_and(|p| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit()))
    };
    let ms = parts.next();
    match parts.next() {
        None => digits(ms),
        seq => digits(ms) && digits(seq),
    }
}
