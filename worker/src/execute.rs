//! Running one delivered message: decode, look up, run under its timeout, catch panics, and
//! say what to write back (a result, a retry, a dead letter).

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use kiq_broker::envelope::now_ms;
use kiq_broker::trace_context::{self, TraceParent};
use kiq_broker::{
    codec, Completion, DeadLetter, Delivery, Envelope, FailureKind, RetryPolicy, StateChange,
    TaskFailure, TaskRecord, TaskState,
};
use tracing::Instrument;

use crate::context::{self, TaskInfo};
use crate::metrics;
use crate::middleware::{run_layers, Outcome, TaskCall};
use crate::registry::{Invocation, Registry};
use crate::workflow;

/// How long a task runs before its record says `running` (see `execute`).
pub const RUNNING_MARK_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// Per-process execution state shared by all messages.
#[derive(Debug, Default)]
pub struct Running {
    tokens:
        std::sync::Mutex<std::collections::HashMap<String, tokio_util::sync::CancellationToken>>,
    /// How long a cancelled running task may go on before its future is dropped.
    pub cancel_grace: std::time::Duration,
    /// For tasks' progress reports.
    pub broker: Option<kiq_broker::Broker>,
    /// The running record of each task running here, with its lane: written back as pending
    /// if the worker stops before the task finishes.
    started: std::sync::Mutex<std::collections::HashMap<String, (String, TaskRecord)>>,
    /// Where running marks go (the completer's queue), for a Redis worker.
    pub marks: Option<tokio::sync::mpsc::Sender<Completion>>,
    /// Middleware around every task, outermost first.
    pub layers: Vec<std::sync::Arc<dyn crate::middleware::Middleware>>,
}

impl Running {
    /// Running state with `cancel_grace`.
    pub fn new(cancel_grace: std::time::Duration, broker: Option<kiq_broker::Broker>) -> Self {
        Self {
            tokens: Default::default(),
            cancel_grace,
            broker,
            started: Default::default(),
            marks: None,
            layers: Vec::new(),
        }
    }

    /// Fires the cancellation token of task `id` if it runs here; returns whether it did.
    pub fn cancel(&self, id: &str) -> bool {
        match self.tokens.lock().ok().and_then(|t| t.get(id).cloned()) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    fn start(&self, id: &str) -> tokio_util::sync::CancellationToken {
        let token = tokio_util::sync::CancellationToken::new();
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(id.to_string(), token.clone());
        }
        token
    }

    fn finish(&self, id: &str) {
        if let Ok(mut t) = self.tokens.lock() {
            t.remove(id);
        }
        if let Ok(mut s) = self.started.lock() {
            s.remove(id);
        }
    }

    /// Records saying "pending again" for every task still running here: what a stopping
    /// worker writes for the tasks it abandons (their messages will be redelivered).
    pub fn abandoned_marks(&self) -> Vec<Completion> {
        let Ok(started) = self.started.lock() else {
            return Vec::new();
        };
        started
            .iter()
            .map(|(id, (lane, record))| {
                let mut r = record.clone();
                r.state = TaskState::Pending;
                r.history.push(StateChange {
                    state: TaskState::Pending,
                    at_ms: now_ms(),
                    attempt: r.attempts,
                    note: Some(
                        "its worker stopped before it finished; it will be redelivered".into(),
                    ),
                });
                Completion {
                    queue: lane.clone(),
                    record: encode_record(id, &r),
                    mark: true,
                    ..Completion::default()
                }
            })
            .collect()
    }
}

/// Runs `delivery` to completion and returns what must be written for it. A `precancelled`
/// message (its cancel mark was found before it ran) is not run.
pub async fn execute(
    registry: &Registry,
    consumer: &str,
    delivery: Delivery,
    running: &Running,
    precancelled: bool,
) -> Completion {
    let Delivery {
        queue,
        stream_id,
        payload,
        ..
    } = delivery;
    let payload = payload.unwrap_or_default();
    let mut envelope: Envelope = match codec::decode(&payload) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(%queue, %stream_id, error = %e, "undecodable message moved to dead letters");
            return dead_only(queue, stream_id, "malformed", e.to_string(), payload);
        }
    };
    // This execution is a span of the dispatcher's trace (a new root if it sent none).
    let parent = envelope.trace.as_deref().and_then(TraceParent::parse);
    let exec_trace = parent
        .as_ref()
        .map(TraceParent::child)
        .unwrap_or_else(TraceParent::new_root);
    let span = tracing::info_span!("task", task_id = %envelope.id, task = %envelope.task, attempt = envelope.attempt,
        trace_id = %exec_trace.trace_id, span_id = %exec_trace.span_id,
        parent_span_id = parent.as_ref().map(|p| p.span_id.as_str()).unwrap_or(""));
    let started = now_ms();
    let queued_since = envelope.due_ms.unwrap_or(envelope.enqueued_at_ms);
    metrics::received(
        &envelope.task,
        started.saturating_sub(queued_since) as f64 / 1000.0,
    );
    let mut history = start_history(&envelope);
    let outcome = if precancelled {
        span.in_scope(|| tracing::info!("cancelled before it ran"));
        Err(TaskFailure::new(
            FailureKind::Cancelled,
            "cancelled before it ran",
        ))
    } else if let Err(f) = fill_gathered_args(&mut envelope, running).await {
        // A group callback whose group did not all succeed never runs.
        Err(f)
    } else {
        let token = running.start(&envelope.id);
        let call = TaskCall {
            envelope: &envelope,
            broker: running.broker.as_ref(),
        };
        let history = &mut history;
        let task = Box::pin(async {
            // Marked running once the layers let it through (a deferred task never runs).
            let at = now_ms();
            history.push(StateChange {
                state: TaskState::Running,
                at_ms: at,
                attempt: envelope.attempt,
                note: Some(consumer.to_string()),
            });
            let fut =
                trace_context::scope(exec_trace.clone(), run(registry, &envelope, token, running));
            let _busy = metrics::executing();
            tokio::pin!(fut);
            // A task that finishes quickly needs no visible "running" record (nobody could
            // look in time, and it would cost a write per task): the mark is written once the
            // task has run for RUNNING_MARK_AFTER. Its history has the start time either way.
            let r = tokio::select! {
                biased;
                r = &mut fut => r,
                _ = tokio::time::sleep(RUNNING_MARK_AFTER) => {
                    mark_running(running, consumer, &envelope, &queue, at, history, &exec_trace)
                        .await;
                    fut.await
                }
            };
            Outcome::Finished(r)
        });
        let r = run_layers(&running.layers, &call, task)
            .instrument(span.clone())
            .await;
        running.finish(&envelope.id);
        match r {
            Outcome::Finished(r) => r,
            Outcome::Deferred { after, reason } => {
                span.in_scope(|| tracing::info!(after_ms = after.as_millis() as u64, %reason, "task deferred"));
                metrics::ended(&envelope.task, metrics::Ended::Deferred, None);
                return deferred(consumer, queue, stream_id, &envelope, payload, after);
            }
        }
    };
    let attempts = envelope.attempt + 1;
    span.in_scope(|| match &outcome {
        Ok(_) => tracing::debug!(ms = now_ms().saturating_sub(started), "task succeeded"),
        Err(f) => tracing::warn!(kind = %f.kind, error = %f.message, "task failed"),
    });

    let policy = envelope.retry.unwrap_or_else(|| {
        registry
            .get(&envelope.task)
            .map(|d| d.retry)
            .unwrap_or(RetryPolicy::NONE)
    });
    let mut retry = None;
    let mut dead = None;
    let (state, output, failure) = match outcome {
        Ok(out) => (TaskState::Succeeded, Some(out), None),
        Err(f) if f.kind.is_retryable() && policy.allows_another(attempts) => {
            let delay = policy.delay(attempts);
            let mut next_history = history.clone();
            next_history.push(StateChange {
                state: TaskState::Retrying,
                at_ms: now_ms(),
                attempt: envelope.attempt,
                note: Some(short(&f.message)),
            });
            let next = Envelope {
                attempt: attempts,
                history: next_history,
                ..envelope.clone()
            };
            match codec::encode(&next) {
                Ok(bytes) => {
                    span.in_scope(|| {
                        tracing::info!(delay_ms = delay.as_millis() as u64, "retry scheduled")
                    });
                    retry = Some((bytes, now_ms() + delay.as_millis() as u64));
                    (TaskState::Retrying, None, Some(f))
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode the retry; failing the task");
                    (TaskState::Failed, None, Some(f))
                }
            }
        }
        Err(f) if f.kind == FailureKind::Cancelled => (TaskState::Cancelled, None, Some(f)),
        Err(f) => {
            let reason = match f.kind {
                FailureKind::UnknownTask => Some("unknown_task"),
                FailureKind::BadArguments => Some("bad_arguments"),
                _ if policy.max_retries > 0 => Some("retries_exhausted"),
                _ => None,
            };
            dead = reason.map(|reason| DeadLetter {
                reason: reason.into(),
                error: f.message.clone(),
                task_id: Some(envelope.id.clone()),
                task: Some(envelope.task.clone()),
                attempts,
                payload: payload.clone(),
            });
            let state = if dead.is_some() {
                TaskState::Dead
            } else {
                TaskState::Failed
            };
            (state, None, Some(f))
        }
    };
    let finished = now_ms();
    let ran_since = history
        .iter()
        .rev()
        .find(|h| h.state == TaskState::Running)
        .map(|h| h.at_ms);
    metrics::ended(
        &envelope.task,
        match state {
            TaskState::Succeeded => metrics::Ended::Succeeded,
            TaskState::Retrying => metrics::Ended::Retried,
            _ => metrics::Ended::Failed,
        },
        ran_since.map(|s| finished.saturating_sub(s) as f64 / 1000.0),
    );
    history.push(StateChange {
        state,
        at_ms: finished,
        attempt: envelope.attempt,
        note: failure.as_ref().map(|f| short(&f.message)),
    });
    let record = TaskRecord {
        state,
        task: envelope.task.clone(),
        queue: user_queue(&envelope, &queue),
        enqueued_at_ms: envelope.enqueued_at_ms,
        finished_at_ms: Some(finished),
        attempts,
        output,
        failure,
        worker: Some(consumer.to_string()),
        started_at_ms: ran_since,
        history,
        trace: Some(exec_trace.header()),
    };
    // A task that finished for good gives up its uniqueness key; a retrying one keeps it.
    let release_unique = match (&retry, &envelope.unique_key) {
        (None, Some(key)) => Some((
            user_queue(&envelope, &queue),
            key.clone(),
            envelope.id.clone(),
        )),
        _ => None,
    };
    let fx = match retry {
        None => workflow::effects(&envelope, &record),
        Some(_) => workflow::Effects::default(),
    };
    let finished = state.is_final().then(|| kiq_broker::Finished {
        queue: record.queue.clone(),
        state,
        enqueued_ms: record.enqueued_at_ms,
        started_ms: record.started_at_ms,
        finished_ms: finished,
    });
    Completion {
        queue,
        stream_id,
        record: encode_record(&envelope.id, &record),
        dead,
        retry,
        release_unique,
        next: fx.next,
        also: fx.also,
        group_done: fx.group_done,
        mark: false,
        finished,
    }
}

/// The history a task starts an attempt with: what earlier attempts recorded, or, on the
/// first, how it was queued.
fn start_history(envelope: &Envelope) -> Vec<StateChange> {
    if !envelope.history.is_empty() {
        return envelope.history.clone();
    }
    let mut h = Vec::with_capacity(4);
    let queued = |state, at_ms| StateChange {
        state,
        at_ms,
        attempt: 0,
        note: None,
    };
    if let Some(due) = envelope.due_ms {
        h.push(queued(TaskState::Scheduled, envelope.enqueued_at_ms));
        h.push(queued(TaskState::Pending, due));
    } else {
        h.push(queued(TaskState::Pending, envelope.enqueued_at_ms));
    }
    h
}

/// Records that the task is running: through the completer (so it is written before the
/// task's own completion), or straight to an in-memory broker.
async fn mark_running(
    running: &Running,
    consumer: &str,
    envelope: &Envelope,
    lane: &str,
    at: u64,
    history: &[StateChange],
    trace: &TraceParent,
) {
    let record = TaskRecord {
        state: TaskState::Running,
        task: envelope.task.clone(),
        queue: user_queue(envelope, lane),
        enqueued_at_ms: envelope.enqueued_at_ms,
        attempts: envelope.attempt,
        worker: Some(consumer.to_string()),
        started_at_ms: Some(at),
        history: history.to_vec(),
        trace: Some(trace.header()),
        ..Default::default()
    };
    let mark = Completion {
        queue: lane.to_string(),
        record: encode_record(&envelope.id, &record),
        mark: true,
        ..Completion::default()
    };
    if let Ok(mut s) = running.started.lock() {
        s.insert(envelope.id.clone(), (lane.to_string(), record));
    }
    if let Some(tx) = &running.marks {
        let _ = tx.send(mark).await;
    } else if let Some(b) = &running.broker {
        let _ = b.complete(std::slice::from_ref(&mark)).await;
    }
}

/// A message shortened for a history note.
fn short(message: &str) -> String {
    match message.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &message[..i]),
        None => message.to_string(),
    }
}

/// For a group callback: its argument, from the members' outputs.
async fn fill_gathered_args(envelope: &mut Envelope, running: &Running) -> Result<(), TaskFailure> {
    if envelope.gather.is_empty() {
        return Ok(());
    }
    envelope.args = workflow::gather_args(running.broker.as_ref(), &envelope.gather).await?;
    Ok(())
}

/// The completion for a message delivered too many times without finishing: its workers kept
/// dying on it. It fails (so a waiter learns) and goes to the dead letters.
pub fn poisoned(consumer: &str, delivery: Delivery) -> Completion {
    let Delivery {
        queue,
        stream_id,
        payload,
        deliveries,
    } = delivery;
    let payload = payload.unwrap_or_default();
    let message = format!(
        "delivered {} times without finishing; its workers kept stopping",
        deliveries.saturating_sub(1)
    );
    let Ok(envelope) = codec::decode::<Envelope>(&payload) else {
        return dead_only(queue, stream_id, "malformed", message, payload);
    };
    tracing::error!(task_id = %envelope.id, task = %envelope.task, deliveries, "poison message moved to dead letters");
    let finished = now_ms();
    let mut history = start_history(&envelope);
    history.push(StateChange {
        state: TaskState::Dead,
        at_ms: finished,
        attempt: envelope.attempt,
        note: Some(message.clone()),
    });
    let record = TaskRecord {
        state: TaskState::Dead,
        history,
        task: envelope.task.clone(),
        queue: user_queue(&envelope, &queue),
        enqueued_at_ms: envelope.enqueued_at_ms,
        finished_at_ms: Some(finished),
        attempts: envelope.attempt + 1,
        output: None,
        failure: Some(TaskFailure::new(
            FailureKind::TooManyDeliveries,
            message.clone(),
        )),
        worker: Some(consumer.to_string()),
        ..Default::default()
    };
    let release_unique = envelope
        .unique_key
        .clone()
        .map(|k| (user_queue(&envelope, &queue), k, envelope.id.clone()));
    let fx = workflow::effects(&envelope, &record);
    Completion {
        queue,
        stream_id,
        record: encode_record(&envelope.id, &record),
        dead: Some(DeadLetter {
            reason: "too_many_deliveries".into(),
            error: message,
            task_id: Some(envelope.id.clone()),
            task: Some(envelope.task.clone()),
            attempts: envelope.attempt + 1,
            payload,
        }),
        retry: None,
        release_unique,
        next: fx.next,
        also: fx.also,
        group_done: fx.group_done,
        mark: false,
        finished: Some(kiq_broker::Finished {
            queue: record.queue.clone(),
            state: TaskState::Dead,
            enqueued_ms: record.enqueued_at_ms,
            started_ms: None,
            finished_ms: finished,
        }),
    }
}

/// The completion of a task a middleware put off: it goes back to its lane's delayed set, due
/// in `after`, unchanged. Not announced: the task has not finished.
fn deferred(
    consumer: &str,
    queue: String,
    stream_id: String,
    envelope: &Envelope,
    payload: Vec<u8>,
    after: std::time::Duration,
) -> Completion {
    let record = TaskRecord {
        state: TaskState::Scheduled,
        task: envelope.task.clone(),
        queue: user_queue(envelope, &queue),
        enqueued_at_ms: envelope.enqueued_at_ms,
        finished_at_ms: None,
        attempts: envelope.attempt,
        output: None,
        failure: None,
        worker: Some(consumer.to_string()),
        ..Default::default()
    };
    Completion {
        queue,
        stream_id,
        record: encode_record(&envelope.id, &record),
        dead: None,
        // The message as it came, byte for byte: it has not been attempted.
        retry: Some((payload, now_ms() + after.as_millis() as u64)),
        ..Completion::default()
    }
}

/// The queue a task was dispatched to (the lane it was read from belongs to it).
fn user_queue(envelope: &Envelope, lane: &str) -> String {
    if envelope.queue.is_empty() {
        kiq_broker::priority::split_lane(lane).0.to_string()
    } else {
        envelope.queue.clone()
    }
}

fn dead_only(
    queue: String,
    stream_id: String,
    reason: &str,
    error: String,
    payload: Vec<u8>,
) -> Completion {
    Completion {
        queue,
        stream_id,
        record: None,
        dead: Some(DeadLetter {
            reason: reason.into(),
            error,
            payload,
            ..DeadLetter::default()
        }),
        ..Completion::default()
    }
}

fn encode_record(id: &str, record: &TaskRecord) -> Option<(String, Vec<u8>)> {
    match codec::encode(record) {
        Ok(bytes) => Some((id.to_string(), bytes)),
        Err(e) => {
            tracing::error!(task_id = %id, error = %e, "cannot encode the task record");
            None
        }
    }
}

async fn run(
    registry: &Registry,
    envelope: &Envelope,
    cancel: tokio_util::sync::CancellationToken,
    running: &Running,
) -> Result<Vec<u8>, TaskFailure> {
    let grace = running.cancel_grace;
    let Some(def) = registry.get(&envelope.task) else {
        return Err(TaskFailure::new(
            FailureKind::UnknownTask,
            format!(
                "no task named {:?} is registered on this worker",
                envelope.task
            ),
        ));
    };
    let invocation = Invocation {
        task_id: envelope.id.clone(),
        args: envelope.args.clone(),
        attempt: envelope.attempt,
        labels: envelope.labels.clone(),
    };
    let info = TaskInfo {
        id: envelope.id.clone(),
        name: envelope.task.clone(),
        attempt: envelope.attempt,
        labels: envelope.labels.clone(),
        cancel: cancel.clone(),
        broker: running.broker.clone(),
    };
    // Panics are caught at the task's boundary so one bad task never takes the worker down.
    let fut = AssertUnwindSafe(context::scope(info, (def.handler)(invocation))).catch_unwind();
    // Cancellation: the token fires at once; the future is dropped after the grace period
    // unless it finishes first (then its own outcome stands).
    let fut = async move {
        tokio::pin!(fut);
        tokio::select! {
            r = &mut fut => Ok(r),
            _ = async { cancel.cancelled().await; tokio::time::sleep(grace).await } => Err(()),
        }
    };
    let limit = envelope
        .timeout_ms
        .map(std::time::Duration::from_millis)
        .or(def.timeout);
    let caught = match limit {
        Some(limit) => match tokio::time::timeout(limit, fut).await {
            Ok(Ok(r)) => r,
            Ok(Err(())) => return Err(cancelled_running()),
            Err(_) => {
                return Err(TaskFailure::new(
                    FailureKind::Timeout,
                    format!("task ran longer than its {limit:?} timeout and was stopped"),
                ))
            }
        },
        None => match fut.await {
            Ok(r) => r,
            Err(()) => return Err(cancelled_running()),
        },
    };
    match caught {
        Ok(result) => result,
        Err(panic) => Err(TaskFailure::new(
            FailureKind::Panic,
            format!("task panicked: {}", panic_message(&*panic)),
        )),
    }
}

fn cancelled_running() -> TaskFailure {
    TaskFailure::new(
        FailureKind::Cancelled,
        "cancelled while running; stopped after the grace period",
    )
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}
