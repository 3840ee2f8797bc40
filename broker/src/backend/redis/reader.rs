//! Reading lanes through the consumer group: blocking while idle, strictly by priority under a
//! backlog.

use std::time::Duration;

use redis::{ErrorKind, RedisError, ServerErrorKind};

use crate::consumer::delivery::{Delivery, ReadBatch};
use crate::error::BrokerError;
use crate::keys::CONSUMER_GROUP;

use super::connection::ReaderConnection;
use super::scripts::{self, LANE_LENGTHS, READ_BY_PRIORITY};
use super::stream_reply::{by_priority_reply, checked, deliveries_of, send_command, send_pipeline};
use super::RedisBackend;

impl RedisBackend {
    /// How `lanes` must be split among readers: a reader's keys must keep to one slot on a
    /// cluster, so there each queue (with its lanes, most urgent first) gets a reader of its
    /// own; one Redis reads them all in one.
    pub(crate) fn reader_groups(&self, lanes: &[String]) -> Vec<Vec<String>> {
        if !self.target().is_cluster() {
            return vec![lanes.to_vec()];
        }
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for lane in lanes {
            let queue = crate::model::priority::split_lane(lane).0;
            match groups.iter_mut().find(|(q, _)| q == queue) {
                Some((_, g)) => g.push(lane.clone()),
                None => groups.push((queue.to_string(), vec![lane.clone()])),
            }
        }
        groups.into_iter().map(|(_, g)| g).collect()
    }

    /// Opens a reader for `lanes` as consumer `consumer`, on a connection of its own.
    pub(crate) async fn reader(
        &self,
        lanes: &[String],
        consumer: &str,
    ) -> Result<StreamReader, BrokerError> {
        for lane in lanes {
            // Not the per-process cache: a reader is (re)opened after errors, and a Redis that
            // restarted without persistence has lost the group.
            self.forget_group(lane);
            self.ensure_group(lane).await?;
            // Make the consumer visible at once (XINFO CONSUMERS), not at its first message.
            self.pool()
                .query::<(), _>(
                    redis::cmd("XGROUP")
                        .arg("CREATECONSUMER")
                        .arg(self.keys.stream(lane))
                        .arg(CONSUMER_GROUP)
                        .arg(consumer),
                )
                .await?;
        }
        let conn = self.pool().reader_connection(&self.config).await?;
        let script_keys = scripts::read_keys(&self.keys, lanes);
        Ok(StreamReader {
            conn,
            url: self.pool().url().to_string(),
            cancel_flags: script_keys[lanes.len()..].to_vec(),
            streams: lanes.iter().map(|l| self.keys.stream(l)).collect(),
            script_keys,
            lanes: lanes.to_vec(),
            consumer: consumer.to_string(),
            // The first read drains by priority too: a worker starting on a backlog must not
            // take a blocking read's mix of every lane.
            backlog: true,
            busy_lanes: None,
        })
    }
}

/// Reads a set of lanes through the consumer group, on a dedicated connection.
pub struct StreamReader {
    conn: ReaderConnection,
    /// The Redis read from, for errors.
    url: String,
    /// The cancel flags of the queues read.
    cancel_flags: Vec<String>,
    streams: Vec<String>,
    lanes: Vec<String>,
    consumer: String,
    /// The lanes' streams then the queues' cancel flags: the keys of the priority scripts.
    script_keys: Vec<String>,
    /// Whether the last read found work: then the next one drains lanes in priority order
    /// without blocking (see `lua/read_by_priority.lua`).
    backlog: bool,
    /// How many lanes held messages at the last look (`None`: unknown). While at most one
    /// does, strict order needs no script: one plain non-blocking read takes the same messages.
    pub(super) busy_lanes: Option<usize>,
}

impl StreamReader {
    /// The lanes this reader reads, in the order it was opened with.
    pub fn lanes(&self) -> &[String] {
        &self.lanes
    }

    /// The consumer name this reader reads as.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Whether the next read blocks (the last one found nothing) rather than drains a backlog.
    pub fn will_block(&self) -> bool {
        !self.backlog
    }

    /// Reads up to `count` new messages per queue, waiting at most `block` for the first.
    pub async fn read(
        &mut self,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, BrokerError> {
        Ok(self.read_batch(count, block).await?.deliveries)
    }

    /// Like [`StreamReader::read`], and also says whether any task may have been cancelled
    /// lately: the flag is read in the same round trip as the messages.
    ///
    /// While messages keep coming (a backlog), reads take lanes strictly in the order the reader
    /// was opened with (workers open it by priority) and do not block; once a read comes back
    /// empty, the next one blocks on every lane at once.
    ///
    /// A read whose future is dropped while its request is being written leaves the reader
    /// unusable (its reads then fail with an I/O error): open another. One dropped while it
    /// waits for its reply is fine, but the messages of that reply stay pending with this
    /// consumer until they are reclaimed.
    pub async fn read_batch(
        &mut self,
        count: usize,
        block: Duration,
    ) -> Result<ReadBatch, BrokerError> {
        let (deliveries, active) = if self.backlog && self.streams.len() > 1 {
            if self.busy_lanes.is_some_and(|n| n <= 1) {
                // Only one lane had work: a plain read returns what the script would. Should a
                // more urgent lane have received work since, the reply lists it first, and the
                // lane lengths read alongside switch the next read back to the script.
                self.read_plain(count).await?
            } else {
                self.read_by_priority(count).await?
            }
        } else {
            self.busy_lanes = None;
            self.read_blocking(count, block).await?
        };
        self.backlog = !deliveries.is_empty();
        Ok(ReadBatch {
            deliveries,
            cancels_active: active,
        })
    }
}

impl StreamReader {
    /// `XREADGROUP` of up to `count` new messages per lane, over every lane, blocking up to
    /// `block` when given.
    fn read_command(&self, count: usize, block: Option<Duration>) -> redis::Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(CONSUMER_GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count.max(1));
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&self.streams);
        for _ in &self.streams {
            cmd.arg(">");
        }
        cmd
    }

    /// One non-blocking XREADGROUP over every lane, with the lanes' lengths and the cancel
    /// flag in the same round trip.
    async fn read_plain(&mut self, count: usize) -> Result<(Vec<Delivery>, bool), BrokerError> {
        let read = self.read_command(count, None);
        let mut lens = LANE_LENGTHS.eval(&self.script_keys);
        lens.arg(self.streams.len());
        let mut pipe = redis::pipe();
        pipe.add_command(read).add_command(lens);
        let (deliveries, mut lens) = async {
            let [read, lens] = send_pipeline::<2>(&mut self.conn, &pipe).await?;
            let deliveries = deliveries_of(read, &self.streams, &self.lanes)?;
            Ok::<_, RedisError>((deliveries, checked::<Vec<i64>>(lens)?))
        }
        .await
        .map_err(|e| BrokerError::redis(e).at(&self.url))?;
        let active = lens.pop().unwrap_or(0) > 0;
        self.busy_lanes = Some(lens.iter().filter(|n| **n > 0).count());
        Ok((deliveries, active))
    }

    /// One XREADGROUP over every lane, blocking up to `block` for the first message, with the
    /// cancel flag read in the same round trip.
    async fn read_blocking(
        &mut self,
        count: usize,
        block: Duration,
    ) -> Result<(Vec<Delivery>, bool), BrokerError> {
        let cmd = self.read_command(count, Some(block));
        let mut pipe = redis::pipe();
        pipe.add_command(cmd).cmd("EXISTS").arg(&self.cancel_flags);
        async {
            let [read, active] = send_pipeline::<2>(&mut self.conn, &pipe).await?;
            let deliveries = deliveries_of(read, &self.streams, &self.lanes)?;
            Ok((deliveries, checked::<u64>(active)? > 0))
        }
        .await
        .map_err(|e: RedisError| BrokerError::redis(e).at(&self.url))
    }

    /// Up to `count` new messages taken from the lanes strictly in order, by
    /// `lua/read_by_priority.lua`, which also returns the cancel flag and the lanes' lengths.
    ///
    /// Sent as `EVALSHA` (loading the script on `NOSCRIPT`, then sending it again), as
    /// `ScriptInvocation::invoke_async` does, but with the reply taken raw, so that it is
    /// walked once (see [`deliveries_of`]) rather than also rebuilt by `Value::extract_error`.
    async fn read_by_priority(
        &mut self,
        count: usize,
    ) -> Result<(Vec<Delivery>, bool), BrokerError> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(READ_BY_PRIORITY.script().get_hash())
            .arg(self.script_keys.len())
            .arg(&self.script_keys)
            .arg(CONSUMER_GROUP)
            .arg(&self.consumer)
            .arg(count.max(1))
            .arg(self.streams.len());
        let (deliveries, active, lens) = async {
            let reply = match send_command(&mut self.conn, &cmd).await {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    READ_BY_PRIORITY.script().load_async(&mut self.conn).await?;
                    send_command(&mut self.conn, &cmd).await?
                }
                reply => reply?,
            };
            by_priority_reply(reply, &self.streams, &self.lanes)
        }
        .await
        .map_err(|e| BrokerError::redis(e).at(&self.url))?;
        self.busy_lanes = Some(lens.iter().filter(|n| **n > 0).count());
        Ok((deliveries, active > 0))
    }
}
