//! The worker's write path: records, retries, dead letters and workflow effects in one round
//! trip, then the acknowledgements in a second.

use std::collections::HashMap;

use crate::consumer::completion::{Completion, DeadLetter, Effect, End, Write};
use crate::error::BrokerError;
use crate::keys::{CONSUMER_GROUP, DATA_FIELD};
use crate::model::envelope::now_ms;
use crate::model::record::{TaskRecord, TaskState};

use super::scripts::{self, GROUP_MEMBER_DONE, RELEASE_UNIQUE};
use super::RedisBackend;

/// Results up to this size are published with the completion, sparing waiters a GET.
const INLINE_RESULT_MAX: usize = 64 * 1024;

/// Dead-letter streams are capped at about this many entries.
pub(crate) const DEAD_LETTER_MAX_LEN: usize = 100_000;

impl RedisBackend {
    /// Writes a batch: first every record, retry, dead letter and effect, then, once Redis has
    /// accepted them, the acks (XACK) and deletions (XDEL) of the completed messages. If the
    /// first step fails nothing is acked, and the messages stay pending for redelivery.
    pub(crate) async fn write(&self, batch: &[Write]) -> Result<(), BrokerError> {
        if batch.is_empty() {
            return Ok(());
        }
        let keys = &self.keys;
        let ttl = self.result_ttl_s();
        let pending_ttl = self.pending_ttl_s();
        let mut writes = redis::pipe();
        let mut indexed: HashMap<(&str, TaskState), Vec<(u64, &str)>> = HashMap::new();
        for w in batch {
            let c = match w {
                Write::State(s) => {
                    let record = self.wire.encode_record(&s.record)?;
                    writes
                        .add_command(self.set_record(&s.id, &record, pending_ttl))
                        .ignore();
                    continue;
                }
                Write::Completion(c) => c,
            };
            if let Some(task) = &c.task {
                let record = self.wire.encode_record(&task.record)?;
                writes
                    .add_command(self.set_record(&task.id, &record, ttl))
                    .ignore();
                // Only final records are announced and listed.
                if c.end.is_final() {
                    let inline: &[u8] = if record.len() <= INLINE_RESULT_MAX {
                        &record
                    } else {
                        b""
                    };
                    writes
                        .cmd("PUBLISH")
                        .arg(keys.done_channel(&task.id))
                        .arg(inline)
                        .ignore();
                    if task.record.state.is_final() {
                        indexed
                            .entry((task.record.queue.as_str(), task.record.state))
                            .or_default()
                            .push((finished_at(&task.record), task.id.as_str()));
                    }
                }
            }
            for effect in &c.effects {
                self.add_effect(&mut writes, effect, ttl)?;
            }
            match &c.end {
                End::Done => {}
                End::Retry { next, at_ms } => {
                    writes
                        .cmd("ZADD")
                        .arg(keys.delayed(&c.lane))
                        .arg(*at_ms)
                        .arg(self.wire.encode_envelope(next)?)
                        .ignore();
                }
                End::Defer { payload, at_ms } => {
                    writes
                        .cmd("ZADD")
                        .arg(keys.delayed(&c.lane))
                        .arg(*at_ms)
                        .arg(payload)
                        .ignore();
                }
                End::Dead(letter) => {
                    writes.add_command(self.dead_letter(c, letter)).ignore();
                }
            }
        }
        // One variadic ZADD per index touched by the batch, not one per task.
        for ((queue, state), members) in indexed {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(keys.index(queue, state));
            for (at, id) in members {
                cmd.arg(at).arg(id);
            }
            writes.add_command(cmd).ignore();
        }
        add_stats(&mut writes, &keys.stats(), batch);
        self.pool().query::<(), _>(&writes).await?;

        let mut by_lane: HashMap<&str, Vec<&str>> = HashMap::new();
        for w in batch {
            if let Write::Completion(c) = w {
                by_lane.entry(&c.lane).or_default().push(&c.stream_id);
            }
        }
        if by_lane.is_empty() {
            return Ok(());
        }
        let mut acks = redis::pipe();
        for (lane, ids) in by_lane {
            let stream = keys.stream(lane);
            acks.cmd("XACK")
                .arg(&stream)
                .arg(CONSUMER_GROUP)
                .arg(&ids)
                .ignore();
            // Acked entries are deleted at once: the stream only ever holds live work.
            acks.cmd("XDEL").arg(&stream).arg(&ids).ignore();
        }
        self.pool().query::<(), _>(&acks).await
    }

    fn add_effect(
        &self,
        writes: &mut redis::Pipeline,
        effect: &Effect,
        ttl: u64,
    ) -> Result<(), BrokerError> {
        let keys = &self.keys;
        match effect {
            Effect::Send(envelope) => {
                writes
                    .cmd("XADD")
                    .arg(keys.stream(&envelope.priority.lane(&envelope.queue)))
                    .arg("*")
                    .arg(DATA_FIELD)
                    .arg(self.wire.encode_envelope(envelope)?)
                    .ignore();
            }
            Effect::Finish(s) => {
                let record = self.wire.encode_record(&s.record)?;
                writes
                    .add_command(self.set_record(&s.id, &record, ttl))
                    .ignore();
                writes
                    .cmd("PUBLISH")
                    .arg(keys.done_channel(&s.id))
                    .arg(&record)
                    .ignore();
            }
            Effect::GroupMemberDone(group) => {
                let k = scripts::group_member_done_keys(
                    keys,
                    &group.id,
                    group.callback_lane.as_deref(),
                );
                writes
                    .add_command(
                        GROUP_MEMBER_DONE
                            .eval(&k)
                            .arg(group.index)
                            .arg(DATA_FIELD)
                            .clone(),
                    )
                    .ignore();
            }
            Effect::ReleaseUnique { queue, key, holder } => {
                let k = scripts::release_unique_keys(keys, queue, key);
                writes
                    .add_command(RELEASE_UNIQUE.eval(&k).arg(holder).clone())
                    .ignore();
            }
        }
        Ok(())
    }

    fn dead_letter(&self, c: &Completion, letter: &DeadLetter) -> redis::Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.keys.dead(&c.lane))
            .arg("MAXLEN")
            .arg("~")
            .arg(DEAD_LETTER_MAX_LEN)
            .arg("*")
            .arg("reason")
            .arg(&letter.reason)
            .arg("error")
            .arg(&letter.error)
            .arg("stream_id")
            .arg(&c.stream_id)
            .arg("attempts")
            .arg(letter.attempts)
            .arg("at_ms")
            .arg(now_ms())
            .arg("payload")
            .arg(&letter.payload);
        if let Some(id) = &letter.task_id {
            cmd.arg("task_id").arg(id);
        }
        if let Some(t) = &letter.task {
            cmd.arg("task").arg(t);
        }
        cmd
    }
}

/// When a final record says its task finished (now, if it does not say).
pub(crate) fn finished_at(record: &TaskRecord) -> u64 {
    record.finished_at_ms.unwrap_or_else(now_ms)
}

/// Adds the batch's totals to the cumulative counters (one HINCRBY per counter per batch):
/// tasks finished per state, retries, and the summed queue wait and run time of those that ran.
fn add_stats(pipe: &mut redis::Pipeline, key: &str, batch: &[Write]) {
    let mut counts: HashMap<&'static str, u64> = HashMap::new();
    for w in batch {
        let Write::Completion(c) = w else { continue };
        let Some(task) = &c.task else { continue };
        let r = &task.record;
        match &c.end {
            End::Retry { .. } => *counts.entry("retried").or_default() += 1,
            End::Done | End::Dead(_) if r.state.is_final() => {
                *counts.entry(r.state.as_str()).or_default() += 1;
                if let Some(started) = r.started_at_ms {
                    *counts.entry("ran").or_default() += 1;
                    *counts.entry("wait_ms").or_default() +=
                        started.saturating_sub(r.enqueued_at_ms);
                    *counts.entry("run_ms").or_default() += finished_at(r).saturating_sub(started);
                }
            }
            _ => {}
        }
    }
    for (field, n) in counts {
        pipe.cmd("HINCRBY").arg(key).arg(field).arg(n).ignore();
    }
}
