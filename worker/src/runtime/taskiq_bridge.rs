//! `taskiq_bridge`: serves one Taskiq stream. Reads it through Taskiq's consumer group (beside
//! any Python workers), hands each message on to its task's kiq queue (where the fetcher takes
//! it like any other, with retries, timeouts, cancellation and dead letters), and acks it once
//! kiq holds it. Entries a stopped kiq worker held are taken over after the stream's
//! `reclaim_after`; Python workers' entries are never touched. On a stream shared with Python
//! workers, a message for a task no kiq worker runs is passed back to the stream for them,
//! after a pause that doubles with each pass.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiq_broker::taskiq::{
    Settle, TaskiqEntry, TaskiqException, TaskiqReader, TaskiqReply, TaskiqResult, TaskiqStream,
};
use kiq_broker::{BrokerError, Consumer, DeadLetter, RawDispatch};
use tokio_util::sync::CancellationToken;

use super::outage::Outage;
use crate::registry::Registry;
use crate::taskiq::{Context, Translated};

/// Entries read at once.
const BATCH: usize = 100;

/// Serves `stream` until `stop` fires.
pub(super) async fn run(
    consumer: Consumer,
    registry: Arc<Registry>,
    stream: TaskiqStream,
    block: Duration,
    stop: CancellationToken,
) {
    let broker = consumer.broker().clone();
    let ctx = Context {
        registry: &registry,
        stream: &stream,
        codec: consumer.codec(),
        max_payload: broker.config().max_payload_bytes,
        default_ttl_ms: kiq_broker::envelope::duration_ms(broker.config().result_ttl),
    };
    let reclaim_every =
        (stream.reclaim_after / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut reader: Option<TaskiqReader> = None;
    let mut outage = Outage::default();
    // Entries read but not yet handed on (Redis refused): tried again before reading more.
    let mut held: Vec<TaskiqEntry> = Vec::new();
    let mut last_reclaim: Option<Instant> = None;
    // Messages to pass back for Python workers, each once its pause is over.
    let mut passing: Vec<(Instant, TaskiqEntry)> = Vec::new();
    tracing::info!(stream = %stream.stream, group = %stream.group, results = stream.results.as_str(),
        shared = stream.shared, "serving a Taskiq stream");
    while !stop.is_cancelled() {
        let r = match reader.as_mut() {
            Some(r) => r,
            None => match consumer.taskiq_reader(&stream).await {
                Ok(r) => reader.insert(r),
                Err(e) => {
                    let what = format!(
                        "cannot open the Taskiq stream {:?}; retrying",
                        stream.stream
                    );
                    outage.wait(&e, &what, &stop).await;
                    continue;
                }
            },
        };
        if held.is_empty() && last_reclaim.is_none_or(|t| t.elapsed() >= reclaim_every) {
            last_reclaim = Some(Instant::now());
            match r.reclaim(BATCH).await {
                Ok(taken) if !taken.is_empty() => {
                    tracing::info!(stream = %stream.stream, count = taken.len(), "took over Taskiq entries a kiq worker held");
                    held = taken;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(stream = %stream.stream, error = %e, "Taskiq reclaim failed")
                }
            }
        }
        let now = Instant::now();
        if passing.iter().any(|(at, _)| *at <= now) {
            let (due, later): (Vec<_>, Vec<_>) = passing.drain(..).partition(|(at, _)| *at <= now);
            passing = later;
            let settle: Vec<Settle> = due
                .iter()
                .map(|(_, e)| Settle {
                    entry_id: e.id.clone(),
                    dead: None,
                    result: None,
                    pass_back: Some((e.data.clone().unwrap_or_default(), e.hops.saturating_add(1))),
                })
                .collect();
            if let Err(e) = r.settle(&settle).await {
                tracing::warn!(stream = %stream.stream, error = %e, "passing Taskiq messages back failed; trying again");
                passing.extend(
                    due.into_iter()
                        .map(|(_, e)| (Instant::now() + PASS_PAUSE_MAX, e)),
                );
            }
        }
        if held.is_empty() {
            // Not past the next pass-back.
            let wait = passing
                .iter()
                .map(|(at, _)| at.saturating_duration_since(Instant::now()))
                .min()
                .map_or(block, |w| w.min(block).max(Duration::from_millis(1)));
            let read = tokio::select! {
                _ = stop.cancelled() => break,
                read = r.read(BATCH, wait) => read,
            };
            match read {
                Ok(entries) => held = entries,
                Err(e) => {
                    let what = format!(
                        "cannot read the Taskiq stream {:?}; reconnecting",
                        stream.stream
                    );
                    reader = None;
                    outage.wait(&e, &what, &stop).await;
                    continue;
                }
            }
        }
        if held.is_empty() {
            continue;
        }
        match hand_on(&ctx, r, &held).await {
            Ok(pass) => {
                passing.extend(
                    pass.into_iter()
                        .map(|e| (Instant::now() + pass_pause(e.hops), e)),
                );
                held.clear();
                outage.over();
            }
            Err(e) => {
                // Nothing of the batch was acked: it is handed on again (once per task id).
                let what = format!(
                    "cannot hand on the Taskiq stream {:?}'s messages; retrying",
                    stream.stream
                );
                outage.wait(&e, &what, &stop).await;
            }
        }
    }
}

/// The error result of a message kiq refused to enqueue (a dispatch layer, a delay past ten
/// years, a message grown over the payload limit).
fn refused_result(reply: &TaskiqReply, error: &str) -> Vec<u8> {
    TaskiqResult {
        is_err: true,
        log: None,
        return_value: serde_json::Value::Null,
        execution_time: 0.0,
        labels: serde_json::from_str(&reply.labels).unwrap_or_default(),
        error: Some(TaskiqException::kiq("Refused", error)),
    }
    .encode(reply.format)
}

/// The first pause before a message is passed back for Python workers; it doubles each pass.
const PASS_PAUSE: Duration = Duration::from_millis(50);
/// The longest pause.
const PASS_PAUSE_MAX: Duration = Duration::from_secs(5);

fn pass_pause(hops: u64) -> Duration {
    PASS_PAUSE
        .saturating_mul(1u32 << hops.min(16))
        .min(PASS_PAUSE_MAX)
}

/// Hands every entry on (in one round trip) or dead-letters it, then acks and deletes them.
/// Returns the entries to pass back for Python workers (still pending). Any Redis failure
/// returns before the acks.
async fn hand_on(
    ctx: &Context<'_>,
    reader: &TaskiqReader,
    entries: &[TaskiqEntry],
) -> Result<Vec<TaskiqEntry>, BrokerError> {
    let stream = reader.stream();
    let mut settled = Vec::with_capacity(entries.len());
    let mut pass = Vec::new();
    let dead = |e: &TaskiqEntry, reason: &str, error: String, task_id, task| {
        Some((
            stream.queue.clone(),
            DeadLetter {
                reason: reason.to_string(),
                error,
                task_id,
                task,
                attempts: 0,
                payload: e.data.clone().unwrap_or_default(),
            },
        ))
    };
    let mut forwards = Vec::new();
    for e in entries {
        match ctx.translate(e.data.as_deref(), e.hops) {
            Translated::Forward(f) => forwards.push((e, f)),
            Translated::PassBack { task } => {
                tracing::debug!(stream = %stream.stream, task = %task, entry = %e.id, hops = e.hops,
                    "no such kiq task: passing it back for the Python workers of the stream");
                pass.push(e.clone());
            }
            Translated::Dead(r) => {
                tracing::warn!(stream = %stream.stream, entry = %e.id, task_id = ?r.task_id, task = ?r.task,
                    reason = r.reason, error = %r.error, "Taskiq message moved to dead letters");
                settled.push(Settle {
                    entry_id: e.id.clone(),
                    dead: dead(e, r.reason, r.error, r.task_id, r.task),
                    result: r.result,
                    pass_back: None,
                });
            }
        }
    }
    let dispatches = forwards
        .iter()
        .map(|(_, f)| {
            (
                RawDispatch {
                    task: f.def.name,
                    queue: f.def.queue,
                    args: f.args.clone(),
                    task_id: Some(&f.task_id),
                    labels: f.labels.clone(),
                    retry: f.retry,
                    timeout: f.timeout,
                    due_ms: f.due_ms,
                    unique_key: None,
                    priority: f.priority,
                },
                f.reply.clone(),
            )
        })
        .collect();
    let outcomes = reader.consumer().taskiq_forward(dispatches).await?;
    for ((e, f), outcome) in forwards.iter().zip(outcomes) {
        match outcome {
            Ok(()) => settled.push(Settle {
                entry_id: e.id.clone(),
                dead: None,
                result: None,
                pass_back: None,
            }),
            // Refused for good (a dispatch layer, a delay past ten years ...).
            Err(err) => {
                tracing::warn!(task_id = %f.task_id, task = f.def.name, error = %err, "Taskiq message refused");
                let reply = &f.reply;
                settled.push(Settle {
                    entry_id: e.id.clone(),
                    dead: dead(
                        e,
                        "refused",
                        err.to_string(),
                        Some(f.task_id.clone()),
                        Some(f.def.name.into()),
                    ),
                    // The Python caller learns at once.
                    result: Some((
                        reply.key.clone(),
                        refused_result(reply, &err.to_string()),
                        reply.ttl_ms,
                    )),
                    pass_back: None,
                })
            }
        }
    }
    reader.settle(&settled).await?;
    Ok(pass)
}
