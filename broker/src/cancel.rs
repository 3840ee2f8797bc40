//! Cancelling tasks.

use crate::broker::Broker;
use crate::codec;
use crate::envelope::now_ms;
use crate::error::BrokerError;
use crate::record::{FailureKind, TaskFailure, TaskRecord, TaskState};

/// Marks a task cancelled unless its record says it already finished; writes a `cancelled`
/// record (announced to waiters) and tells workers. Returns 1 if cancelled, 0 if it had finished.
///
/// Redis's bundled cmsgpack cannot read every record (it rejects some encodings), so the final
/// states are recognised by their exact bytes: the map key `state` (fixstr) followed by the
/// state's name (fixstr), as `codec::encode` writes them. `final_state_markers_match_the_codec`
/// keeps the two in step.
const CANCEL: &str = r#"
local rec = redis.call('GET', KEYS[1])
if rec then
  for _, s in ipairs({'\165state\169succeeded', '\165state\166failed', '\165state\169cancelled', '\165state\164dead'}) do
    if string.find(rec, s, 1, true) then return 0 end
  end
end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[1])
redis.call('PUBLISH', ARGV[5], ARGV[6])
if ARGV[7] ~= '' then redis.call('ZADD', KEYS[4], ARGV[7], ARGV[6]) end
return 1
"#;

/// What [`Broker::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The task will not run (or, if running, is being stopped).
    Cancelled,
    /// It had already finished; nothing changed.
    AlreadyFinished,
    /// No such task (or its record expired); nothing changed. Only said when dispatches write
    /// pending records (`track_pending`, the default): without them, an unknown id is
    /// indistinguishable from a queued task, and is cancelled.
    NotFound,
}

impl Broker {
    /// Cancels task `id`: if it is pending or delayed it never runs; if it is running, its
    /// cancellation token fires and it is stopped after the worker's grace period. Its result
    /// says cancelled. A task that already finished is left alone.
    pub async fn cancel(&self, id: &str) -> Result<CancelOutcome, BrokerError> {
        let previous = self.record(id).await?;
        if previous.is_none() && self.config().track_pending {
            return Ok(CancelOutcome::NotFound);
        }
        let record = TaskRecord {
            state: TaskState::Cancelled,
            task: previous
                .as_ref()
                .map(|r| r.task.clone())
                .unwrap_or_default(),
            queue: previous
                .as_ref()
                .map(|r| r.queue.clone())
                .unwrap_or_default(),
            enqueued_at_ms: previous.as_ref().map(|r| r.enqueued_at_ms).unwrap_or(0),
            finished_at_ms: Some(now_ms()),
            attempts: previous.as_ref().map(|r| r.attempts).unwrap_or(0),
            output: None,
            failure: Some(TaskFailure::new(
                FailureKind::Cancelled,
                "cancelled on request",
            )),
            worker: None,
            ..Default::default()
        };
        if let Some(m) = self.memory() {
            return Ok(if m.cancel(id, record) {
                CancelOutcome::Cancelled
            } else {
                CancelOutcome::AlreadyFinished
            });
        }
        let k = self.keys();
        let script = redis::Script::new(CANCEL);
        let mut inv = script.key(k.task(id));
        // Listed among the queue's cancelled tasks at once (when the queue is known).
        let index_at = if record.queue.is_empty() {
            String::new()
        } else {
            now_ms().to_string()
        };
        let queue = if record.queue.is_empty() {
            "default"
        } else {
            record.queue.as_str()
        };
        inv.key(k.cancel(id))
            .key(k.cancel_active())
            .key(k.index(queue, TaskState::Cancelled))
            .arg(codec::encode(&record)?)
            .arg(self.config().pending_ttl.as_secs().max(1))
            .arg(self.config().result_ttl.as_secs().max(1))
            .arg(k.done_channel(id))
            .arg(k.cancel_channel())
            .arg(id)
            .arg(index_at);
        let n: i64 = self.pool().invoke(&inv).await?;
        Ok(if n == 1 {
            CancelOutcome::Cancelled
        } else {
            CancelOutcome::AlreadyFinished
        })
    }

    /// Which of `ids` are marked cancelled, in one round trip (an MGET of their marks).
    pub async fn cancelled(&self, ids: &[&str]) -> Result<Vec<bool>, BrokerError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.keys().cancel(id)).collect();
        let marks: Vec<Option<String>> = self.pool().query(redis::cmd("MGET").arg(&keys)).await?;
        Ok(marks.into_iter().map(|m| m.is_some()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_state_markers_match_the_codec() {
        for (state, marker) in [
            (TaskState::Succeeded, &b"\xa5state\xa9succeeded"[..]),
            (TaskState::Failed, &b"\xa5state\xa6failed"[..]),
            (TaskState::Cancelled, &b"\xa5state\xa9cancelled"[..]),
            (TaskState::Dead, &b"\xa5state\xa4dead"[..]),
        ] {
            let bytes = codec::encode(&TaskRecord {
                state,
                task: "t".into(),
                queue: "q".into(),
                enqueued_at_ms: 1,
                finished_at_ms: Some(2),
                attempts: 1,
                output: Some(vec![1, 2, 3]),
                failure: None,
                worker: None,
                ..Default::default()
            })
            .unwrap();
            assert!(
                bytes.windows(marker.len()).any(|w| w == marker),
                "{state:?} record lacks its marker"
            );
        }
        // And a pending record carries none of them.
        let pending = codec::encode(&TaskRecord {
            state: TaskState::Pending,
            task: "succeeded".into(),
            queue: "failed".into(),
            enqueued_at_ms: 1,
            finished_at_ms: None,
            attempts: 0,
            output: None,
            failure: None,
            worker: None,
            ..Default::default()
        })
        .unwrap();
        for marker in [
            &b"\xa5state\xa9succeeded"[..],
            b"\xa5state\xa6failed",
            b"\xa5state\xa9cancelled",
            b"\xa5state\xa4dead",
        ] {
            assert!(!pending.windows(marker.len()).any(|w| w == marker));
        }
    }
}
