//! The completer loop: writes finished work back in batches, results first, then acks.
//!
//! Executions hand their [`Write`]s (completions, and `running` marks) to one completer task
//! per worker. It takes whatever has queued up (up to [`MAX_BATCH`]) and writes it in two
//! pipelined round trips, so the cost per task falls as load rises. If Redis is unreachable
//! the batch is kept and retried with backoff: a finished task's result and ack are written
//! when Redis returns, or, if the process stops first, the message stays pending and is
//! delivered again. Never acked unstored.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use kiq_broker::{Consumer, End, Write};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::inflight::InFlight;

/// Who hears what the completer wrote.
#[derive(Debug, Clone)]
pub(crate) struct Listeners {
    /// Messages leave this table once their completion is written.
    pub inflight: Arc<InFlight>,
    /// Notified when a batch put messages in a delayed set (retries, deferrals), so the
    /// forwarder recomputes its next wake-up.
    pub delayed: Arc<Notify>,
}

impl Listeners {
    fn written(&self, batch: &[Write]) {
        let completions = || {
            batch.iter().filter_map(|w| match w {
                Write::Completion(c) => Some(c),
                Write::State(_) => None,
            })
        };
        // One lock for the whole batch.
        self.inflight
            .remove_many(completions().map(|c| (c.lane.as_str(), c.stream_id.as_str())));
        let delayed = completions().any(|c| matches!(c.end, End::Retry { .. } | End::Defer { .. }));
        if delayed {
            self.delayed.notify_one();
        }
    }

    fn dropped(&self, w: &Write) {
        if let Write::Completion(c) = w {
            self.inflight.remove(&c.lane, &c.stream_id);
        }
    }
}

/// Most completions written in one batch.
pub const MAX_BATCH: usize = 512;

/// Most batches being written at once. Two: while Redis runs one batch's commands, the next is
/// encoded and sent (one at a time, the worker and Redis took turns and each sat idle half the
/// time).
const IN_FLIGHT_BATCHES: usize = 2;

/// How a batch's write ended.
struct Sent {
    /// The batch, whatever it holds, handed back to be reused.
    batch: Vec<Write>,
    /// Whether it was written (false: stopped while Redis was unreachable).
    written: bool,
    /// Whether it held `running` marks (see [`run`]).
    marks: bool,
}

/// Runs until `completions` closes, or until `stop` fires, whereupon it writes what is already
/// queued (one attempt per batch) and returns how many writes (completions and `running`
/// marks) it could not write.
///
/// Up to [`IN_FLIGHT_BATCHES`] batches are written at once, each as it would be alone (its
/// results, then its acks; retried until Redis takes it). Batches hold different messages, so
/// their order does not matter, with one exception: a task's `running` mark must be stored
/// before its completion, which may come in a later batch. So no batch goes out while an
/// earlier one holding marks is still being written.
pub(crate) async fn run(
    consumer: Consumer,
    mut completions: mpsc::Receiver<Write>,
    stop: CancellationToken,
    listeners: Listeners,
) -> usize {
    let mut batch: Vec<Write> = Vec::with_capacity(MAX_BATCH);
    let mut spare: Vec<Vec<Write>> = Vec::new();
    let mut in_flight = FuturesUnordered::new();
    // Batches in flight that hold marks.
    let mut marking = 0usize;
    let mut unwritten = 0;
    // What an ended write means: its messages leave the table, or (stopped while Redis was
    // unreachable) they stay pending and are redelivered. Returns whether to go on.
    let mut ended = |sent: Sent, marking: &mut usize, spare: &mut Vec<Vec<Write>>| {
        if sent.marks {
            *marking -= 1;
        }
        let mut b = sent.batch;
        let go_on = sent.written;
        if !go_on {
            unwritten += b.len();
        }
        b.clear();
        spare.push(b);
        go_on
    };
    let mut stopping = false;
    loop {
        if batch.is_empty() {
            tokio::select! {
                biased;
                Some(sent) = in_flight.next(), if !in_flight.is_empty() => {
                    if !ended(sent, &mut marking, &mut spare) {
                        stopping = true;
                        break;
                    }
                    continue;
                }
                c = completions.recv() => match c {
                    Some(c) => batch.push(c),
                    None => break,
                },
                _ = stop.cancelled() => {
                    stopping = true;
                    break;
                }
            }
        }
        // Room for this batch: fewer than the most in flight, and no marks still unwritten.
        while in_flight.len() >= IN_FLIGHT_BATCHES || marking > 0 {
            let Some(sent) = in_flight.next().await else {
                break;
            };
            if !ended(sent, &mut marking, &mut spare) {
                stopping = true;
                break;
            }
        }
        if stopping {
            break;
        }
        // What queued meanwhile joins the batch.
        while batch.len() < MAX_BATCH {
            match completions.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let marks = batch.iter().any(|w| matches!(w, Write::State(_)));
        if marks {
            marking += 1;
        }
        let next = spare.pop().unwrap_or_else(|| Vec::with_capacity(MAX_BATCH));
        let mut b = std::mem::replace(&mut batch, next);
        let (consumer, stop, listeners) = (consumer.clone(), stop.clone(), listeners.clone());
        in_flight.push(async move {
            let written = write_with_retry(&consumer, &mut b, &stop, &listeners).await;
            if written {
                listeners.written(&b);
            }
            Sent {
                batch: b,
                written,
                marks,
            }
        });
    }
    // Closed or stopped: let the batches in flight end (each gives up once `stop` fires while
    // Redis is unreachable), then, when stopping, make one attempt at what is still queued.
    while let Some(sent) = in_flight.next().await {
        if !ended(sent, &mut marking, &mut spare) {
            stopping = true;
        }
    }
    if stopping || stop.is_cancelled() {
        unwritten += drain_on_stop(&consumer, batch, &mut completions, &listeners).await;
    }
    unwritten
}

/// Writes `batch`, retrying with backoff while Redis is unreachable, until it succeeds (true)
/// or `stop` fires (false). If Redis refuses a command (a server error, which retrying will not
/// heal), the batch is written one completion at a time: those that cannot be written are left
/// un-acked (redelivered, and dead-lettered if it keeps happening), so one bad completion never
/// blocks the others. On return `batch` holds what was written.
async fn write_with_retry(
    consumer: &Consumer,
    batch: &mut Vec<Write>,
    stop: &CancellationToken,
    listeners: &Listeners,
) -> bool {
    let mut backoff = Duration::from_millis(50);
    let mut failing = false;
    loop {
        match consumer.write(batch).await {
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
                    match consumer.write(std::slice::from_ref(&c)).await {
                        Ok(()) => batch.push(c),
                        Err(e) => {
                            tracing::error!(error = %e,
                                "a write refused by Redis; its message stays pending and will be redelivered");
                            listeners.dropped(&c);
                        }
                    }
                }
                return true;
            }
            Err(e) => {
                if !failing {
                    if e.is_out_of_memory() {
                        tracing::error!(error = %e, count = batch.len(), "Redis is out of memory (maxmemory reached) and refuses the completions; retrying");
                    } else {
                        tracing::warn!(error = %e, count = batch.len(), "cannot write completions; retrying");
                    }
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

/// One attempt at writing `rest` and everything still queued; returns how many could not be
/// written.
async fn drain_on_stop(
    consumer: &Consumer,
    mut rest: Vec<Write>,
    completions: &mut mpsc::Receiver<Write>,
    listeners: &Listeners,
) -> usize {
    while let Ok(c) = completions.try_recv() {
        rest.push(c);
    }
    let mut unwritten = 0;
    for chunk in rest.chunks(MAX_BATCH) {
        match consumer.write(chunk).await {
            Ok(()) => listeners.written(chunk),
            Err(e) => {
                tracing::warn!(error = %e, count = chunk.len(), "completions left unwritten at shutdown; they will be redelivered");
                unwritten += chunk.len();
            }
        }
    }
    unwritten
}
