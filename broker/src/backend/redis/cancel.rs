//! Cancellation: the mark workers check before running a task, and the announcement that
//! stops a running one.

use crate::error::BrokerError;
use crate::model::envelope::now_ms;
use crate::model::record::{TaskRecord, TaskState};

use super::scripts::{self, CANCEL};
use super::RedisBackend;

impl RedisBackend {
    /// Marks task `id` cancelled and stores `record` (its `cancelled` record) unless its
    /// stored record says it already finished; returns whether it did.
    ///
    /// Three steps, each in one slot: the queue's cancel flag first (so that workers look for
    /// marks from then on; setting it for a task that had finished costs one needless check),
    /// then the mark and record in the task's slot (`lua/cancel.lua`), then the queue's index
    /// of cancelled tasks and the announcement that stops a running task.
    pub(crate) async fn cancel(&self, id: &str, record: &TaskRecord) -> Result<bool, BrokerError> {
        let k = &self.keys;
        let mark_ttl = self.pending_ttl_s();
        // The queue a task is on is known from its record (every partition of it, as a
        // pending record does not say which); without one, every known queue's workers are
        // told to look.
        let queues: Vec<String> = if record.queue.is_empty() {
            self.physical_queue_names().await?
        } else {
            // Fresh lists (a cancel is rare): a partition made a moment ago gets its flag too.
            self.refresh_partitions(true).await?;
            let mut queues = self.physical_queues(&record.queue);
            if !queues.contains(&record.queue) {
                queues.push(record.queue.clone());
            }
            queues
        };
        let mut flags = self.pool().new_batch();
        for q in &queues {
            let flag = k.cancel_flag(q);
            flags.add(
                &flag,
                redis::cmd("SET")
                    .arg(&flag)
                    .arg(1)
                    .arg("EX")
                    .arg(mark_ttl)
                    .clone(),
            );
        }
        self.pool().batch(flags).await?;

        let mut inv = CANCEL.with_keys(&scripts::cancel_keys(k, id));
        inv.arg(self.wire.encode_record(record)?)
            .arg(mark_ttl)
            .arg(self.result_ttl_s())
            .arg(k.done_channel(id))
            .arg(self.publish_command());
        for marker in self.wire.final_markers() {
            inv.arg(marker);
        }
        let n: i64 = self.pool().invoke(&inv).await?;
        if n != 1 {
            return Ok(false);
        }
        let mut after = self.pool().new_batch();
        if !record.queue.is_empty() {
            let index = k.index(&record.queue, TaskState::Cancelled);
            after.add(
                &index,
                redis::cmd("ZADD").arg(&index).arg(now_ms()).arg(id).clone(),
            );
        }
        let channel = k.cancel_channel();
        after.add(
            &channel,
            redis::cmd("PUBLISH").arg(&channel).arg(id).clone(),
        );
        self.pool().batch(after).await?;
        Ok(true)
    }

    /// Which of `ids` are marked cancelled, in one round trip (an MGET of their marks; one
    /// pipeline per slot on a cluster).
    pub(crate) async fn cancelled(&self, ids: &[&str]) -> Result<Vec<bool>, BrokerError> {
        let keys: Vec<String> = ids.iter().map(|id| self.keys.cancel(id)).collect();
        let marks = self.get_many(&keys).await?;
        Ok(marks.into_iter().map(|m| m.is_some()).collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::codec::{KiqWire, WireFormat};
    use crate::model::record::{TaskRecord, TaskState};

    /// `lua/cancel.lua` recognises final records by the markers the wire format names, at a
    /// record's head: each final record starts with one within its first four bytes, no other
    /// record does (even with names and arguments that spell final states).
    #[test]
    fn final_state_markers_match_the_wire_format() {
        let markers = KiqWire.final_markers();
        assert_eq!(markers.len(), 2 * TaskState::FINAL.len());
        assert_eq!(markers[0], b"\xc1\x01\x04");
        assert_eq!(markers[4], b"\xa5state\xa9succeeded");
        // What the script does: look for each marker in the record's first 3 + len bytes.
        let at_head = |record: &[u8], marker: &[u8]| {
            let head = &record[..record.len().min(3 + marker.len())];
            head.windows(marker.len()).any(|w| w == marker)
        };
        for state in TaskState::FINAL {
            let record = TaskRecord {
                state,
                task: "t".into(),
                queue: "q".into(),
                enqueued_at_ms: 1,
                finished_at_ms: Some(2),
                attempts: 1,
                output: Some(vec![1, 2, 3]),
                ..Default::default()
            };
            let compact = KiqWire.encode_record(&record).unwrap();
            let named = rmp_serde::to_vec_named(&record).unwrap();
            for bytes in [compact, named] {
                assert!(
                    markers.iter().any(|m| at_head(&bytes, m)),
                    "{state:?} record lacks its marker"
                );
            }
        }
        let spelled: Vec<u8> = markers.concat();
        for state in [
            TaskState::Pending,
            TaskState::Scheduled,
            TaskState::Running,
            TaskState::Retrying,
        ] {
            let record = TaskRecord {
                state,
                output: Some(spelled.clone()),
                args: Some(spelled.clone()),
                ..TaskRecord::accepted("succeeded", "failed", 1, false)
            };
            let compact = KiqWire.encode_record(&record).unwrap();
            let named = rmp_serde::to_vec_named(&record).unwrap();
            for bytes in [compact, named] {
                for marker in &markers {
                    assert!(
                        !at_head(&bytes, marker),
                        "{state:?} record carries a final marker"
                    );
                }
            }
        }
    }
}
