//! Cancellation: the mark workers check before running a task, and the announcement that
//! stops a running one.

use crate::error::BrokerError;
use crate::model::envelope::now_ms;
use crate::model::record::TaskRecord;

use super::scripts::{self, CANCEL};
use super::RedisBackend;

impl RedisBackend {
    /// Marks task `id` cancelled and stores `record` (its `cancelled` record) unless its
    /// stored record says it already finished; returns whether it did.
    pub(crate) async fn cancel(&self, id: &str, record: &TaskRecord) -> Result<bool, BrokerError> {
        let k = &self.keys;
        // Listed among the queue's cancelled tasks at once (when the queue is known).
        let (queue, index_at) = if record.queue.is_empty() {
            ("default", String::new())
        } else {
            (record.queue.as_str(), now_ms().to_string())
        };
        let mut inv = CANCEL.with_keys(&scripts::cancel_keys(k, id, queue));
        inv.arg(self.wire.encode_record(record)?)
            .arg(self.pending_ttl_s())
            .arg(self.result_ttl_s())
            .arg(k.done_channel(id))
            .arg(k.cancel_channel())
            .arg(id)
            .arg(index_at);
        for marker in self.wire.final_markers() {
            inv.arg(marker);
        }
        let n: i64 = self.pool().invoke(&inv).await?;
        Ok(n == 1)
    }

    /// Which of `ids` are marked cancelled, in one round trip (an MGET of their marks).
    pub(crate) async fn cancelled(&self, ids: &[&str]) -> Result<Vec<bool>, BrokerError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.keys.cancel(id)).collect();
        let marks: Vec<Option<String>> = self.pool().query(redis::cmd("MGET").arg(&keys)).await?;
        Ok(marks.into_iter().map(|m| m.is_some()).collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::codec::{KiqWire, WireFormat};
    use crate::model::record::{TaskRecord, TaskState};

    /// `lua/cancel.lua` recognises final records by the markers the wire format names: each
    /// final record carries one, no other record any.
    #[test]
    fn final_state_markers_match_the_wire_format() {
        let markers = KiqWire.final_markers();
        assert_eq!(markers.len(), TaskState::FINAL.len());
        assert_eq!(markers[0], b"\xa5state\xa9succeeded");
        for (state, marker) in TaskState::FINAL.into_iter().zip(&markers) {
            let bytes = KiqWire
                .encode_record(&TaskRecord {
                    state,
                    task: "t".into(),
                    queue: "q".into(),
                    enqueued_at_ms: 1,
                    finished_at_ms: Some(2),
                    attempts: 1,
                    output: Some(vec![1, 2, 3]),
                    ..Default::default()
                })
                .unwrap();
            assert!(
                bytes.windows(marker.len()).any(|w| w == marker),
                "{state:?} record lacks its marker"
            );
        }
        // And no record in a state that is not final carries any (even with names that
        // spell final states in its other fields).
        for state in [
            TaskState::Pending,
            TaskState::Scheduled,
            TaskState::Running,
            TaskState::Retrying,
        ] {
            let record = KiqWire
                .encode_record(&TaskRecord {
                    state,
                    ..TaskRecord::accepted("succeeded", "failed", 1, false)
                })
                .unwrap();
            for marker in &markers {
                assert!(
                    !record.windows(marker.len()).any(|w| w == &marker[..]),
                    "{state:?} record carries a final marker"
                );
            }
        }
    }
}
