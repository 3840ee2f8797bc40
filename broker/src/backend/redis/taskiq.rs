//! Taskiq's Redis keys: its stream (read through its consumer group, beside Python workers),
//! its result keys, and the sends of a kiq producer to Python workers.
//!
//! These keys are Taskiq's, not kiq's: no hash tag, names chosen by the Python side. Every
//! command here touches one of them at a time, so each works on a cluster as it is.

use std::time::Duration;

use redis::Value;

use crate::consumer::completion::DeadLetter;
use crate::error::BrokerError;
use crate::keys::DATA_FIELD;
use crate::taskiq::{TaskiqEntry, TaskiqStream, HOPS_FIELD};

use super::complete::dead_letter_cmd;
use super::connection::RedisConnection;
use super::scripts::{self, TASKIQ_PASS_BACK, TASKIQ_SEND_ONCE};
use super::RedisBackend;

/// What a bridge pass settles for one Taskiq entry.
#[derive(Debug, Clone)]
pub struct Settle {
    /// The Taskiq stream entry id.
    pub entry_id: String,
    /// A dead letter for it, on a kiq lane (`None` when it was handed on to kiq's queue).
    pub dead: Option<(String, DeadLetter)>,
    /// A result to write for the Python side (a dead message's error), `(key, bytes, ttl)`.
    pub result: Option<(String, Vec<u8>, Option<u64>)>,
    /// Pass the message back to the stream for Python workers: `(data, hops)`, sent as a new
    /// entry with its hop count in a field Python ignores.
    pub pass_back: Option<(Vec<u8>, u64)>,
}

impl RedisBackend {
    /// `XGROUP CREATE <stream> <group> $ MKSTREAM`, as Taskiq does (BUSYGROUP is fine): a
    /// group made before the first send delivers everything sent after.
    pub(crate) async fn taskiq_group(&self, s: &TaskiqStream) -> Result<(), BrokerError> {
        let memo = format!("\u{0}taskiq\u{0}{}\u{0}{}", s.stream, s.group);
        if self.group_known(&memo) {
            return Ok(());
        }
        self.create_group(&s.stream, &s.group, "$").await?;
        self.mark_group_known(&memo);
        Ok(())
    }

    /// Sends one Taskiq message (its JSON) to `s`'s stream.
    pub(crate) async fn taskiq_send(
        &self,
        s: &TaskiqStream,
        data: &[u8],
    ) -> Result<String, BrokerError> {
        self.taskiq_group(s).await?;
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&s.stream).arg("*").arg(DATA_FIELD).arg(data);
        self.pool().query(&cmd).await
    }

    /// Sends one Taskiq message at most once per `id` within `ttl` (a scheduler tick);
    /// returns whether this call sent it.
    pub(crate) async fn taskiq_send_once(
        &self,
        s: &TaskiqStream,
        id: &str,
        data: &[u8],
        ttl: Duration,
    ) -> Result<bool, BrokerError> {
        self.taskiq_group(s).await?;
        let keys = scripts::taskiq_send_once_keys(&self.keys, &s.stream, id);
        let mut inv = TASKIQ_SEND_ONCE.with_keys(&keys);
        inv.arg(ttl.as_millis().max(1) as u64)
            .arg(DATA_FIELD)
            .arg(data);
        let n: i64 = self.pool().invoke(&inv).await?;
        Ok(n == 1)
    }

    /// The schedules taskiq-redis's `ListRedisScheduleSource` (key prefix `prefix`) keeps:
    /// the ids in its `cron` and `interval` lists and in the one-shot minute buckets named
    /// (`<prefix>:time:<YYYY-MM-DDTHH:MM>`), each with its stored data (a pickle), if any.
    /// Bucket keys are named rather than scanned, so this works alike on a cluster.
    pub(crate) async fn taskiq_schedules(
        &self,
        prefix: &str,
        time_buckets: &[String],
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, BrokerError> {
        let mut lists = vec![format!("{prefix}:cron"), format!("{prefix}:interval")];
        lists.extend(time_buckets.iter().map(|b| format!("{prefix}:time:{b}")));
        let mut batch = self.pool().new_batch();
        for l in &lists {
            batch.add(l, redis::cmd("LRANGE").arg(l).arg(0).arg(-1).clone());
        }
        let mut ids: Vec<String> = Vec::new();
        for v in self.pool().batch(batch).await? {
            let list: Vec<String> = redis::from_redis_value(v).unwrap_or_default();
            for id in list {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        let keys: Vec<String> = ids.iter().map(|id| format!("{prefix}:data:{id}")).collect();
        let data = self.get_many(&keys).await?;
        Ok(ids.into_iter().zip(data).collect())
    }

    /// When each of `ids` was first seen (`now_ms` for those seen now for the first time), in
    /// one round trip; forgets schedules no longer among `ids`.
    pub(crate) async fn taskiq_first_seen(
        &self,
        ids: &[String],
        now_ms: u64,
    ) -> Result<Vec<u64>, BrokerError> {
        let key = self.keys.taskiq_first_seen();
        let known: Vec<String> = self.pool().query(redis::cmd("HKEYS").arg(&key)).await?;
        let gone: Vec<&String> = known.iter().filter(|k| !ids.contains(k)).collect();
        let mut pipe = redis::pipe();
        if !gone.is_empty() {
            pipe.cmd("HDEL").arg(&key).arg(&gone).ignore();
        }
        for id in ids {
            pipe.cmd("HSETNX").arg(&key).arg(id).arg(now_ms).ignore();
        }
        if ids.is_empty() {
            if !gone.is_empty() {
                self.pool().query::<(), _>(&pipe).await?;
            }
            return Ok(Vec::new());
        }
        pipe.cmd("HMGET").arg(&key).arg(ids);
        let (seen,): (Vec<Option<u64>>,) = self.pool().query(&pipe).await?;
        Ok(seen.into_iter().map(|s| s.unwrap_or(now_ms)).collect())
    }

    /// The stored result under `key`, if any.
    pub(crate) async fn taskiq_result(&self, key: &str) -> Result<Option<Vec<u8>>, BrokerError> {
        self.pool().query(redis::cmd("GET").arg(key)).await
    }

    /// A dedicated connection reading `s` as `consumer` (the group is made if missing).
    pub(crate) async fn taskiq_connection(
        &self,
        s: &TaskiqStream,
        consumer: &str,
    ) -> Result<RedisConnection, BrokerError> {
        self.forget_group(&format!("\u{0}taskiq\u{0}{}\u{0}{}", s.stream, s.group));
        self.taskiq_group(s).await?;
        self.pool()
            .query::<(), _>(
                redis::cmd("XGROUP")
                    .arg("CREATECONSUMER")
                    .arg(&s.stream)
                    .arg(&s.group)
                    .arg(consumer),
            )
            .await?;
        // The lane its dead letters go to is a kiq queue: make it known to the inspector.
        self.ensure_group(&s.queue).await?;
        self.pool().dedicated(&self.config).await
    }

    /// Takes over entries of `s` that other kiq consumers (names starting with `kiq_prefix`)
    /// have held for longer than `s.reclaim_after`: a bridge that stopped between reading and
    /// settling. Python consumers' entries are never touched (Taskiq reclaims its own), so kiq and
    /// Taskiq never fight over one.
    pub(crate) async fn taskiq_claim(
        &self,
        s: &TaskiqStream,
        consumer: &str,
        kiq_prefix: &str,
        count: usize,
    ) -> Result<Vec<TaskiqEntry>, BrokerError> {
        let idle = s.reclaim_after.as_millis().max(1) as u64;
        // Per kiq consumer: a group-wide XPENDING could be filled by Python consumers' entries
        // (a SIGKILLed Python worker's stay pending) and never reach kiq's.
        let consumers: Vec<std::collections::HashMap<String, Value>> = self
            .pool()
            .query(
                redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(&s.stream)
                    .arg(&s.group),
            )
            .await?;
        let mut mine: Vec<(String, u64)> = Vec::new();
        for c in consumers {
            let name: String = c
                .get("name")
                .cloned()
                .and_then(|v| redis::from_redis_value(v).ok())
                .unwrap_or_default();
            let pending: u64 = c
                .get("pending")
                .cloned()
                .and_then(|v| redis::from_redis_value(v).ok())
                .unwrap_or(0);
            if pending == 0 || !name.starts_with(kiq_prefix) || name == consumer {
                continue;
            }
            let left = count.max(1).saturating_sub(mine.len());
            if left == 0 {
                break;
            }
            let entries: Vec<(String, String, u64, u64)> = self
                .pool()
                .query(
                    redis::cmd("XPENDING")
                        .arg(&s.stream)
                        .arg(&s.group)
                        .arg("IDLE")
                        .arg(idle)
                        .arg("-")
                        .arg("+")
                        .arg(left)
                        .arg(&name),
                )
                .await?;
            mine.extend(entries.into_iter().map(|(id, _, _, n)| (id, n)));
        }
        if mine.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&s.stream).arg(&s.group).arg(consumer).arg(idle);
        for (id, _) in &mine {
            cmd.arg(id);
        }
        let claimed: Vec<Value> = self.pool().query(&cmd).await?;
        let mut out = Vec::new();
        for entry in claimed {
            let Some(mut e) = entry_of(entry, 1) else {
                continue;
            };
            if let Some((_, n)) = mine.iter().find(|(i, _)| *i == e.id) {
                e.deliveries = n.saturating_add(1);
            }
            out.push(e);
        }
        Ok(out)
    }

    /// Writes what a bridge pass decided (dead letters, results for Python), then acks and
    /// deletes the settled entries. If the writes fail nothing is acked.
    pub(crate) async fn taskiq_settle(
        &self,
        s: &TaskiqStream,
        settled: &[Settle],
    ) -> Result<(), BrokerError> {
        if settled.is_empty() {
            return Ok(());
        }
        let mut writes = self.pool().new_batch();
        let mut any = false;
        for x in settled {
            if let Some((lane, letter)) = &x.dead {
                let key = self.keys.dead(lane);
                let origin = format!("taskiq:{}", s.stream);
                writes.add(
                    &key,
                    dead_letter_cmd(&key, &x.entry_id, letter, Some(&origin)),
                );
                any = true;
            }
            if let Some((key, bytes, ttl)) = &x.result {
                writes.add(key, set_value(key, bytes, *ttl));
                any = true;
            }
        }
        if any {
            self.pool().batch(writes).await?;
        }
        let ids: Vec<&str> = settled
            .iter()
            .filter(|x| x.pass_back.is_none())
            .map(|x| x.entry_id.as_str())
            .collect();
        let mut acks = self.pool().new_batch();
        if !ids.is_empty() {
            acks.add(
                &s.stream,
                redis::cmd("XACK")
                    .arg(&s.stream)
                    .arg(&s.group)
                    .arg(&ids)
                    .clone(),
            );
            // kiq deletes what it acked: the stream holds only live work (Taskiq never trims).
            acks.add(
                &s.stream,
                redis::cmd("XDEL").arg(&s.stream).arg(&ids).clone(),
            );
        }
        // A pass-back re-adds the message only if its ack takes, in one step: never twice.
        let keys = scripts::taskiq_pass_back_keys(&s.stream);
        for x in settled {
            if let Some((data, hops)) = &x.pass_back {
                let mut cmd = TASKIQ_PASS_BACK.eval(&keys);
                cmd.arg(&s.group)
                    .arg(&x.entry_id)
                    .arg(DATA_FIELD)
                    .arg(data)
                    .arg(HOPS_FIELD)
                    .arg(*hops);
                acks.add(&s.stream, cmd);
            }
        }
        self.pool().batch(acks).await.map(drop)
    }
}

/// `SET key bytes [PX ttl]`.
pub(crate) fn set_value(key: &str, bytes: &[u8], ttl_ms: Option<u64>) -> redis::Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(bytes);
    if let Some(ttl) = ttl_ms {
        cmd.arg("PX").arg(ttl.max(1));
    }
    cmd
}

/// One entry of an XREADGROUP or XCLAIM reply (`None` for a deleted entry).
fn entry_of(v: Value, deliveries: u64) -> Option<TaskiqEntry> {
    let Value::Array(mut parts) = v else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let fields = parts.pop()?;
    let id: String = redis::from_redis_value(parts.pop()?).ok()?;
    let pairs: Vec<(Value, Value)> = match fields {
        Value::Array(kv) => {
            let mut it = kv.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        Value::Map(kv) => kv,
        _ => Vec::new(),
    };
    let mut data = None;
    let mut hops = 0;
    for (k, v) in pairs {
        match redis::from_redis_value::<String>(k).ok().as_deref() {
            Some(DATA_FIELD) => data = redis::from_redis_value::<Vec<u8>>(v).ok(),
            Some(HOPS_FIELD) => hops = redis::from_redis_value::<u64>(v).unwrap_or(0),
            _ => {}
        }
    }
    Some(TaskiqEntry {
        id,
        data,
        deliveries,
        hops,
    })
}

/// Reads new entries of `s` as `consumer`: up to `count`, blocking up to `block`.
pub(crate) async fn taskiq_read(
    conn: &mut RedisConnection,
    s: &TaskiqStream,
    consumer: &str,
    count: usize,
    block: Duration,
) -> Result<Vec<TaskiqEntry>, BrokerError> {
    let reply: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&s.group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count.max(1))
        .arg("BLOCK")
        .arg(block.as_millis().max(1) as u64)
        .arg("STREAMS")
        .arg(&s.stream)
        .arg(">")
        .query_async(conn)
        .await
        .map_err(BrokerError::redis)?;
    // [[stream, [entry, ...]]] (RESP2) or {stream: [entry, ...]} (RESP3); nil when none came.
    let per_stream: Vec<Value> = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => kv.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(kv) => kv.into_iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for entries in per_stream {
        let Value::Array(entries) = entries else {
            continue;
        };
        out.extend(entries.into_iter().filter_map(|e| entry_of(e, 1)));
    }
    Ok(out)
}
