//! The worker's write path: records, retries, dead letters and workflow effects in one round
//! trip, then the acknowledgements in a second.

use crate::consumer::completion::{Completion, DeadLetter, Effect, End, Write};
use crate::error::BrokerError;
use crate::keys::{CONSUMER_GROUP, DATA_FIELD, DONE_SUFFIX};
use crate::model::envelope::now_ms;
use crate::model::history::Counters;
use crate::model::record::{TaskRecord, TaskState};

use super::connection::Batch;
use super::history::{Grouped, Tally};
use super::scripts::{self, ENQUEUE_ONCE, GROUP_MEMBER_DONE, RELEASE_UNIQUE};
use super::{set_record_at, RedisBackend};

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
        // A chain's next step goes to the partition its id picks: counts must be at hand.
        let sends = batch.iter().any(|w| {
            matches!(w, Write::Completion(c) if c.effects.iter().any(|e| matches!(e, Effect::Send(_))))
        });
        if sends {
            self.refresh_partitions(false).await?;
        }
        let keys = &self.keys;
        let ttl = self.result_ttl_s();
        let pending_ttl = self.pending_ttl_s();
        // One pipeline on one Redis; one per slot on a cluster (each keeps this order, so a
        // task's record is stored before its completion is announced).
        let mut writes = self.pool().new_batch();
        // A final record is announced (PUBLISH) only once every other write of the batch is
        // stored: a waiter that hears of a task's end then finds its dead letter, its chain's
        // next step and its index entry. On one Redis the announcements end the pipeline; on a
        // cluster, whose slots' pipelines run side by side, they go with the acks, after them.
        let mut announce: Vec<(String, redis::Cmd)> = Vec::new();
        let mut indexed: Grouped<(&str, TaskState), Vec<(u64, &str)>> = Grouped::new();
        for w in batch {
            let c = match w {
                Write::State(s) => {
                    let record = self.wire.encode_record(&s.record)?;
                    let key = keys.task(&s.id);
                    writes.add(&key, set_record_at(&key, &record, pending_ttl));
                    continue;
                }
                Write::Completion(c) => c,
            };
            if let Some(task) = &c.task {
                let record = self.wire.encode_record(&task.record)?;
                let task_key = keys.task(&task.id);
                writes.add(&task_key, set_record_at(&task_key, &record, ttl));
                // Only final records are announced and listed.
                if c.end.is_final() {
                    let inline: &[u8] = if record.len() <= INLINE_RESULT_MAX {
                        &record
                    } else {
                        b""
                    };
                    let publish = publish_done(self.publish_command(), &task_key, inline);
                    announce.push((task_key, publish));
                    if task.record.state.is_final() {
                        indexed
                            .get((task.record.queue.as_str(), task.record.state))
                            .push((finished_at(&task.record), task.id.as_str()));
                    }
                }
            }
            for effect in &c.effects {
                self.add_effect(&mut writes, &mut announce, effect, ttl)?;
            }
            match &c.end {
                End::Done => {}
                End::Retry { next, at_ms } => {
                    let delayed = keys.delayed(&c.lane);
                    let mut cmd = redis::cmd("ZADD");
                    cmd.arg(&delayed)
                        .arg(*at_ms)
                        .arg(self.wire.encode_envelope(next)?);
                    writes.add(&delayed, cmd);
                }
                End::Defer { payload, at_ms } => {
                    let delayed = keys.delayed(&c.lane);
                    let mut cmd = redis::cmd("ZADD");
                    cmd.arg(&delayed).arg(*at_ms).arg(payload);
                    writes.add(&delayed, cmd);
                }
                End::Dead(letter) => {
                    writes.add(&keys.dead(&c.lane), self.dead_letter(c, letter));
                }
            }
        }
        // One variadic ZADD per index touched by the batch, not one per task.
        for ((queue, state), members) in indexed.into_rows() {
            let index = keys.index(queue, state);
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(&index);
            for (at, id) in members {
                cmd.arg(at).arg(id);
            }
            writes.add(&index, cmd);
        }
        add_stats(&mut writes, &keys.stats(), batch);
        super::history::add_history(&mut writes, keys, batch, now_ms());
        if !self.target().is_cluster() {
            for (key, publish) in announce.drain(..) {
                writes.add(&key, publish);
            }
        }
        self.pool().write_batch(writes).await?;

        let mut by_lane: Grouped<&str, Vec<&str>> = Grouped::new();
        for w in batch {
            if let Write::Completion(c) = w {
                by_lane.get(&c.lane).push(&c.stream_id);
            }
        }
        if by_lane.is_empty() && announce.is_empty() {
            return Ok(());
        }
        let mut acks = self.pool().new_batch();
        for (lane, ids) in by_lane.into_rows() {
            let stream = keys.stream(lane);
            let mut ack = redis::cmd("XACK");
            ack.arg(&stream).arg(CONSUMER_GROUP).arg(&ids);
            acks.add(&stream, ack);
            // Acked entries are deleted at once: the stream only ever holds live work.
            let mut del = redis::cmd("XDEL");
            del.arg(&stream).arg(&ids);
            acks.add(&stream, del);
        }
        for (key, publish) in announce {
            acks.add(&key, publish);
        }
        self.pool().write_batch(acks).await.map(drop)
    }

    fn add_effect(
        &self,
        writes: &mut Batch,
        announce: &mut Vec<(String, redis::Cmd)>,
        effect: &Effect,
        ttl: u64,
    ) -> Result<(), BrokerError> {
        let keys = &self.keys;
        match effect {
            Effect::Send(envelope) => {
                // A chain's next step is enqueued once, keyed by its id in its queue's slot,
                // however often the step before is delivered (its record was written when the
                // chain was dispatched).
                let lane = self.route(&envelope.priority.lane(&envelope.queue), &envelope.id);
                let k = scripts::enqueue_once_keys(keys, &lane, &envelope.id);
                let mut cmd = ENQUEUE_ONCE.eval(&k);
                cmd.arg(ttl.saturating_mul(1000).max(1))
                    .arg(self.wire.encode_envelope(envelope)?)
                    .arg("")
                    .arg(DATA_FIELD);
                writes.add(&k[0], cmd);
            }
            Effect::Finish(s) => {
                let record = self.wire.encode_record(&s.record)?;
                let task_key = keys.task(&s.id);
                writes.add(&task_key, set_record_at(&task_key, &record, ttl));
                let publish = publish_done(self.publish_command(), &task_key, &record);
                announce.push((task_key, publish));
            }
            Effect::GroupMemberDone(group) => {
                let k = scripts::group_member_done_keys(
                    keys,
                    &group.id,
                    group.callback_lane.as_deref(),
                );
                writes.add(
                    &k[0],
                    GROUP_MEMBER_DONE
                        .eval(&k)
                        .arg(group.index)
                        .arg(DATA_FIELD)
                        .clone(),
                );
            }
            Effect::ReleaseUnique { queue, key, holder } => {
                let k = scripts::release_unique_keys(keys, queue, key);
                writes.add(&k[0], RELEASE_UNIQUE.eval(&k).arg(holder).clone());
            }
            Effect::StoreValue { key, value, ttl_ms } => {
                let ttl = ttl_ms.unwrap_or(ttl.saturating_mul(1000));
                writes.add(key, super::taskiq::set_value(key, value, Some(ttl)));
            }
        }
        Ok(())
    }

    fn dead_letter(&self, c: &Completion, letter: &DeadLetter) -> redis::Cmd {
        dead_letter_cmd(&self.keys.dead(&c.lane), &c.stream_id, letter, None)
    }
}

/// `XADD` of `letter` to the dead-letter stream `key` (capped): the fields every reader of
/// dead letters expects, and `origin` for a message that did not come from a kiq queue.
pub(crate) fn dead_letter_cmd(
    key: &str,
    stream_id: &str,
    letter: &DeadLetter,
    origin: Option<&str>,
) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(key)
        .arg("MAXLEN")
        .arg("~")
        .arg(DEAD_LETTER_MAX_LEN)
        .arg("*")
        .arg("reason")
        .arg(&letter.reason)
        .arg("error")
        .arg(&letter.error)
        .arg("stream_id")
        .arg(stream_id)
        .arg("attempts")
        .arg(letter.attempts)
        .arg("at_ms")
        .arg(now_ms())
        .arg("payload")
        .arg(&letter.payload);
    if let Some(o) = origin {
        cmd.arg("origin").arg(o);
    }
    if let Some(id) = &letter.task_id {
        cmd.arg("task_id").arg(id);
    }
    if let Some(t) = &letter.task {
        cmd.arg("task").arg(t);
    }
    cmd
}

/// `PUBLISH <task key>:done <message>` (`command` is PUBLISH or SPUBLISH): the task's done
/// channel ([`crate::Keys::done_channel`]), written into the command from its record key
/// without a string of its own, in a command sized once.
pub(super) fn publish_done(command: &str, task_key: &str, message: &[u8]) -> redis::Cmd {
    let bytes = command.len() + task_key.len() + DONE_SUFFIX.len() + message.len();
    let mut cmd = redis::Cmd::with_capacity(3, bytes);
    cmd.arg(command)
        .arg(Joined(task_key, DONE_SUFFIX))
        .arg(message);
    cmd
}

/// One Redis argument made of two strings end to end, written straight into the command.
struct Joined<'a>(&'a str, &'a str);

impl redis::ToRedisArgs for Joined<'_> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + redis::RedisWrite,
    {
        use std::io::Write as _;
        let mut arg = out.writer_for_next_arg();
        // Writing into the command's buffer (or a Vec) cannot fail.
        let _ = arg.write_all(self.0.as_bytes());
        let _ = arg.write_all(self.1.as_bytes());
    }
}

/// When a final record says its task finished (now, if it does not say).
pub(crate) fn finished_at(record: &TaskRecord) -> u64 {
    record.finished_at_ms.unwrap_or_else(now_ms)
}

/// Adds the batch's totals to the cumulative counters (one HINCRBY per counter per batch):
/// tasks finished per state, retries, and the summed queue wait and run time of those that ran.
fn add_stats(pipe: &mut Batch, key: &str, batch: &[Write]) {
    for (field, n) in stats_fields(batch) {
        pipe.add(
            key,
            redis::cmd("HINCRBY").arg(key).arg(field).arg(n).clone(),
        );
    }
}

/// The counters [`add_stats`] increments for `batch`, with their increments: each counter a
/// task of the batch touched (`wait_ms` and `run_ms` whenever one ran, even by 0 ms), summed
/// in place.
fn stats_fields(batch: &[Write]) -> Vec<(&'static str, u64)> {
    let mut c = Counters::default();
    for (_, tally) in batch.iter().filter_map(Tally::of) {
        tally.add_to(&mut c, false);
    }
    let mut out = Vec::with_capacity(8);
    for (field, n) in c.totals() {
        // The sums go with `ran` (even when 0 ms), as the old per-task counting sent them.
        let sum = matches!(field, "wait_ms" | "run_ms");
        if n > 0 || (sum && c.ran > 0) {
            out.push((field, n));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// The cumulative counters as they were summed before (a map per batch), kept as the
    /// reference.
    fn reference_stats(batch: &[Write]) -> Vec<(&'static str, u64)> {
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
                        *counts.entry("run_ms").or_default() +=
                            finished_at(r).saturating_sub(started);
                    }
                }
                _ => {}
            }
        }
        counts.into_iter().collect()
    }

    /// The same HINCRBYs as before counting in place: every counter touched, by the same sum.
    #[test]
    fn stats_increment_the_same_counters() {
        let batch = super::super::history::tests::mixed_batch();
        for part in [&batch[..], &batch[..1], &batch[3..4], &batch[40..], &[]] {
            let mut got = stats_fields(part);
            let mut expected = reference_stats(part);
            got.sort();
            expected.sort();
            assert_eq!(got, expected);
        }
    }

    fn arg_bytes(a: redis::Arg<&[u8]>) -> Vec<u8> {
        match a {
            redis::Arg::Simple(b) => b.to_vec(),
            _ => Vec::new(),
        }
    }

    /// The done channel written from the task key is the one waiters subscribe to.
    #[test]
    fn publish_names_the_done_channel() {
        let keys = crate::Keys::new("app");
        let cmd = publish_done("PUBLISH", &keys.task("abc"), b"rec");
        let args: Vec<Vec<u8>> = cmd.args_iter().map(arg_bytes).collect();
        assert_eq!(
            args,
            vec![
                b"PUBLISH".to_vec(),
                keys.done_channel("abc").into_bytes(),
                b"rec".to_vec()
            ]
        );
        let set = set_record_at(&keys.task("abc"), b"rec", 60);
        let args: Vec<Vec<u8>> = set.args_iter().map(arg_bytes).collect();
        assert_eq!(
            args,
            vec![
                b"SET".to_vec(),
                b"{app:t:abc}".to_vec(),
                b"rec".to_vec(),
                b"EX".to_vec(),
                b"60".to_vec()
            ]
        );
    }

    /// Redis's MONITOR feed of a private server, read line by line.
    struct Monitor(std::io::BufReader<std::net::TcpStream>);

    impl Monitor {
        fn start(port: u16) -> Self {
            use std::io::{BufRead, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            s.write_all(b"MONITOR\r\n").unwrap();
            let mut r = std::io::BufReader::new(s);
            let mut ok = String::new();
            r.read_line(&mut ok).unwrap();
            assert_eq!(ok.trim(), "+OK");
            Monitor(r)
        }

        /// Each command's name, in the order Redis ran them, up to `ECHO <marker>`.
        fn until(&mut self, marker: &str) -> Vec<String> {
            use std::io::BufRead;
            let mut names = Vec::new();
            loop {
                let mut line = String::new();
                assert!(self.0.read_line(&mut line).unwrap() > 0, "MONITOR ended");
                let name = line
                    .split('"')
                    .nth(1)
                    .unwrap_or_default()
                    .to_ascii_uppercase();
                if name == "ECHO" && line.contains(marker) {
                    return names;
                }
                names.push(name);
            }
        }
    }

    /// A waiter that hears of a task's end finds every other write of its batch stored: the
    /// announcements come after the records, dead letters, retries and indexes, and only
    /// the acks come after them. (Before, each record's PUBLISH followed its SET at once, so a
    /// waiter could look for a dead letter not yet written.)
    #[tokio::test]
    async fn announcements_follow_every_other_write_of_the_batch() {
        let redis = kiq_testkit::RedisServer::start().unwrap();
        let broker = crate::Broker::connect(&redis.url()).await.unwrap();
        let batch = super::super::history::tests::mixed_batch();
        let mut monitor = Monitor::start(redis.port());
        broker.consumer("c").write(&batch).await.unwrap();
        redis.command("ECHO end-of-batch").unwrap();
        let names = monitor.until("end-of-batch");
        let first = names
            .iter()
            .position(|n| n == "PUBLISH")
            .expect("the batch announces final records");
        let after: Vec<&String> = names[first..]
            .iter()
            .filter(|n| !matches!(n.as_str(), "PUBLISH" | "XACK" | "XDEL"))
            .collect();
        assert!(
            after.is_empty(),
            "{after:?} after an announcement in {names:?}"
        );
        for written in ["SET", "XADD", "ZADD"] {
            assert!(names[..first].iter().any(|n| n == written), "{names:?}");
        }
    }
}
