//! Writes finished work back to Redis in batches: results first, then acks.
//!
//! Executions hand their [`Completion`] to one completer task per worker. It takes whatever
//! has queued up (up to [`MAX_BATCH`]) and writes it in two pipelined round trips, so the cost
//! per task falls as load rises. If Redis is unreachable the batch is kept and retried with
//! backoff: a finished task's result and ack are written when Redis returns, or, if the
//! process stops first, the message stays pending and is delivered again. Never acked unstored.

use std::time::Duration;

use std::sync::Arc;

use kiq_broker::{Broker, Completion};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::inflight::InFlight;

/// Where the completer reports what it wrote.
#[derive(Debug, Clone)]
pub struct Hooks {
    /// Messages leave this table once their completion is written.
    pub inflight: Arc<InFlight>,
    /// Notified when a batch scheduled retries, so the promoter recomputes its next wake-up.
    pub retry_scheduled: Arc<Notify>,
}

impl Hooks {
    fn written(&self, batch: &[Completion]) {
        for c in batch {
            self.inflight.remove(&c.queue, &c.stream_id);
        }
        if batch.iter().any(|c| c.retry.is_some()) {
            self.retry_scheduled.notify_one();
        }
    }
}

/// Most completions written in one batch.
pub const MAX_BATCH: usize = 512;

/// Runs until `completions` closes, or until `stop` fires, whereupon it writes what is already
/// queued (one attempt per batch) and returns how many completions it could not write.
pub async fn run(
    broker: Broker,
    mut completions: mpsc::Receiver<Completion>,
    stop: CancellationToken,
    hooks: Hooks,
) -> usize {
    let mut batch: Vec<Completion> = Vec::with_capacity(MAX_BATCH);
    let mut unwritten = 0;
    loop {
        if batch.is_empty() {
            tokio::select! {
                biased;
                c = completions.recv() => match c {
                    Some(c) => batch.push(c),
                    None => return unwritten,
                },
                _ = stop.cancelled() => {
                    return unwritten + drain_on_stop(&broker, &mut completions, &hooks).await;
                }
            }
        }
        while batch.len() < MAX_BATCH {
            match completions.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        if write_with_retry(&broker, &mut batch, &stop, &hooks).await {
            hooks.written(&batch);
            batch.clear();
        } else {
            // Stopped while Redis was unreachable: these stay pending and are redelivered.
            unwritten += batch.len();
            batch.clear();
            return unwritten + drain_on_stop(&broker, &mut completions, &hooks).await;
        }
    }
}

/// Writes `batch`, retrying with backoff while Redis is unreachable, until it succeeds (true)
/// or `stop` fires (false). If Redis refuses a command (a server error, which retrying will not
/// heal), the batch is written one completion at a time: those that cannot be written are left
/// un-acked (redelivered, and dead-lettered if it keeps happening), so one bad completion never
/// blocks the others. On return `batch` holds what was written.
async fn write_with_retry(
    broker: &Broker,
    batch: &mut Vec<Completion>,
    stop: &CancellationToken,
    hooks: &Hooks,
) -> bool {
    let mut backoff = Duration::from_millis(50);
    let mut failing = false;
    loop {
        match broker.complete(batch).await {
            Ok(()) => {
                if failing {
                    tracing::info!(
                        count = batch.len(),
                        "completions written after Redis came back"
                    );
                }
                return true;
            }
            Err(e) if !e.is_unavailable() => {
                let all = std::mem::take(batch);
                for c in all {
                    match broker.complete(std::slice::from_ref(&c)).await {
                        Ok(()) => batch.push(c),
                        Err(e) => {
                            tracing::error!(error = %e, queue = %c.queue, stream_id = %c.stream_id,
                                "completion refused by Redis; the message stays pending and will be redelivered");
                            hooks.inflight.remove(&c.queue, &c.stream_id);
                        }
                    }
                }
                return true;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, count = batch.len(), "cannot write completions; retrying");
                    failing = true;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return false,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// One attempt at writing everything still queued; returns how many could not be written.
async fn drain_on_stop(
    broker: &Broker,
    completions: &mut mpsc::Receiver<Completion>,
    hooks: &Hooks,
) -> usize {
    let mut rest = Vec::new();
    while let Ok(c) = completions.try_recv() {
        rest.push(c);
    }
    let mut unwritten = 0;
    for chunk in rest.chunks(MAX_BATCH) {
        match broker.complete(chunk).await {
            Ok(()) => hooks.written(chunk),
            Err(e) => {
                tracing::warn!(error = %e, count = chunk.len(), "completions left unwritten at shutdown; they will be redelivered");
                unwritten += chunk.len();
            }
        }
    }
    unwritten
}
