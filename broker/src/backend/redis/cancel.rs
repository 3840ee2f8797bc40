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

    /// `lua/cancel.lua` recognises final records by these bytes.
    #[test]
    fn final_state_markers_match_the_wire_format() {
        let markers = [
            (TaskState::Succeeded, &b"\xa5state\xa9succeeded"[..]),
            (TaskState::Failed, &b"\xa5state\xa6failed"[..]),
            (TaskState::Cancelled, &b"\xa5state\xa9cancelled"[..]),
            (TaskState::Dead, &b"\xa5state\xa4dead"[..]),
        ];
        let source = include_str!("../../../lua/cancel.lua");
        for (state, marker) in markers {
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
            // The script carries the same bytes, written as Lua decimal escapes.
            let lua: String = marker
                .iter()
                .map(|b| {
                    if b.is_ascii_alphabetic() {
                        (*b as char).to_string()
                    } else {
                        format!("\\{b}")
                    }
                })
                .collect();
            assert!(source.contains(&lua), "cancel.lua lacks {lua}");
        }
        // And a pending record carries none of them.
        let pending = KiqWire
            .encode_record(&TaskRecord::accepted("succeeded", "failed", 1, false))
            .unwrap();
        for (_, marker) in markers {
            assert!(!pending.windows(marker.len()).any(|w| w == marker));
        }
    }
}
