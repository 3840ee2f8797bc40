//! The second step of an execution: the task runs, through the middleware layers, under its
//! timeout, with panics caught and cancellation honoured.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use kiq_broker::envelope::now_ms;
use kiq_broker::trace_context::{self, TraceParent};
use kiq_broker::{
    Envelope, FailureKind, StateChange, StoredRecord, TaskFailure, TaskRecord, TaskState, Write,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::decode::Decoded;
use super::executor::Executor;
use crate::context::{self, TaskInfo};
use crate::middleware::{run_layers, Outcome, TaskCall};
use crate::registry::Invocation;
use crate::workflow;

/// How long a task runs before its record says `running` (see `attempt`).
pub const RUNNING_MARK_AFTER: Duration = Duration::from_millis(100);

/// How an attempt went.
pub(crate) enum Ran {
    /// It ran (or was refused): the encoded output, or why it failed.
    Finished(Result<Vec<u8>, TaskFailure>),
    /// A middleware put it off: not an attempt.
    Deferred { after: Duration },
}

/// One attempt, as the dispose step needs it.
pub(crate) struct Attempt {
    pub ran: Ran,
    /// The task's history so far, this attempt's start included.
    pub history: Vec<StateChange>,
    /// This execution's span in the dispatcher's trace.
    pub trace: TraceParent,
    pub span: tracing::Span,
}

/// Runs the task of `msg` once (unless `precancelled`).
pub(crate) async fn attempt(exec: &Executor, msg: &mut Decoded, precancelled: bool) -> Attempt {
    let envelope = &msg.envelope;
    // This execution is a span of the dispatcher's trace (a new root if it sent none).
    let parent = envelope.trace.as_deref().and_then(TraceParent::parse);
    let (span, trace) = task_span(msg, parent.as_ref());
    let started = now_ms();
    let queued_since = envelope.due_ms.unwrap_or(envelope.enqueued_at_ms);
    exec.metrics.received(
        exec.metric_name(&envelope.task),
        started.saturating_sub(queued_since) as f64 / 1000.0,
    );
    let mut history = start_history(envelope);
    let ran = if precancelled {
        span.in_scope(|| tracing::info!("cancelled before it ran"));
        Ran::Finished(Err(TaskFailure::new(
            FailureKind::Cancelled,
            "cancelled before it ran",
        )))
    } else if let Err(f) = fill_gathered_args(exec, &mut msg.envelope).await {
        // A group callback whose group did not all succeed never runs.
        Ran::Finished(Err(f))
    } else {
        through_layers(exec, msg, &mut history, &trace, &span).await
    };
    if let Ran::Finished(result) = &ran {
        span.in_scope(|| match result {
            Ok(_) => tracing::debug!(ms = now_ms().saturating_sub(started), "task succeeded"),
            Err(f) => tracing::warn!(kind = %f.kind, error = %f.message, "task failed"),
        });
    }
    Attempt {
        ran,
        history,
        trace,
        span,
    }
}

/// The span of an execution and its trace context: a child of the dispatch's (a new root if
/// it sent none). With the `otel` feature it is an OpenTelemetry consumer span whose ids are
/// the ones logged and stored; without, kiq makes the ids.
fn task_span(msg: &Decoded, parent: Option<&TraceParent>) -> (tracing::Span, TraceParent) {
    let envelope = &msg.envelope;
    let parent_span_id = parent.map(|p| tracing::field::display(p.span_id));
    #[cfg(feature = "otel")]
    {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let span = tracing::info_span!("task", task_id = %envelope.id, task = %envelope.task,
            attempt = envelope.attempt, trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty, parent_span_id,
            otel.name = format!("process {}", envelope.queue), otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
            messaging.system = "kiq", messaging.operation.type = "process",
            messaging.operation.name = "process", messaging.destination.name = %envelope.queue,
            messaging.destination.partition.id = tracing::field::Empty,
            messaging.message.id = %envelope.id, kiq.task.name = %envelope.task,
            kiq.task.attempt = envelope.attempt, kiq.task.outcome = tracing::field::Empty);
        // A partitioned queue's messages come from one of its partitions (`mail#2`).
        let queue = msg.queue();
        if queue != envelope.queue {
            span.record("messaging.destination.partition.id", queue.as_str());
        }
        if let Some(cx) = parent.and_then(trace_context::otel::remote_context) {
            let _ = span.set_parent(cx);
        }
        if let Some(trace) = trace_context::otel::traceparent_of(&span) {
            span.record("trace_id", tracing::field::display(trace.trace_id));
            span.record("span_id", tracing::field::display(trace.span_id));
            return (span, trace);
        }
        let trace = parent
            .map(TraceParent::child)
            .unwrap_or_else(TraceParent::new_root);
        span.record("trace_id", tracing::field::display(trace.trace_id));
        span.record("span_id", tracing::field::display(trace.span_id));
        (span, trace)
    }
    #[cfg(not(feature = "otel"))]
    {
        let trace = parent
            .map(TraceParent::child)
            .unwrap_or_else(TraceParent::new_root);
        let span = tracing::info_span!("task", task_id = %envelope.id, task = %envelope.task,
            attempt = envelope.attempt, trace_id = %trace.trace_id, span_id = %trace.span_id,
            parent_span_id);
        (span, trace)
    }
}

/// Records how the attempt ended on its span (`kiq.task.outcome`; an error status when it
/// failed), for OpenTelemetry.
pub(crate) fn record_outcome(span: &tracing::Span, outcome: &str, error: Option<&str>) {
    #[cfg(feature = "otel")]
    {
        span.record("kiq.task.outcome", outcome);
        if let Some(e) = error {
            span.record("otel.status_code", "error");
            span.record("otel.status_description", e);
        }
    }
    #[cfg(not(feature = "otel"))]
    let _ = (span, outcome, error);
}

/// Runs the task through the middleware layers; marks it running once it has run for
/// [`RUNNING_MARK_AFTER`].
async fn through_layers(
    exec: &Executor,
    msg: &Decoded,
    history: &mut Vec<StateChange>,
    trace: &TraceParent,
    span: &tracing::Span,
) -> Ran {
    let envelope = &msg.envelope;
    let token = exec.running.start(&envelope.id);
    let call = TaskCall {
        envelope,
        consumer: &exec.consumer,
    };
    let consumer_name = exec.consumer.name();
    let task = Box::pin(async {
        // Marked running once the layers let it through (a deferred task never runs).
        let at = now_ms();
        history.push(StateChange::new(
            TaskState::Running,
            at,
            envelope.attempt,
            Some(consumer_name.to_string()),
        ));
        let fut = trace_context::scope(*trace, invoke(exec, envelope, token));
        let _busy = exec.metrics.executing();
        tokio::pin!(fut);
        // A task that finishes quickly needs no visible "running" record (nobody could
        // look in time, and it would cost a write per task): the mark is written once the
        // task has run for RUNNING_MARK_AFTER. Its history has the start time either way.
        let r = tokio::select! {
            biased;
            r = &mut fut => r,
            _ = tokio::time::sleep(RUNNING_MARK_AFTER) => {
                // Boxed, as a rare path (see `fill_gathered_args`).
                Box::pin(mark_running(exec, msg, at, history, trace)).await;
                fut.await
            }
        };
        Outcome::Finished(r)
    });
    let r = run_layers(&exec.layers, &call, task)
        .instrument(span.clone())
        .await;
    exec.running.finish(&envelope.id);
    match r {
        Outcome::Finished(r) => Ran::Finished(r),
        Outcome::Deferred { after, reason } => {
            span.in_scope(
                || tracing::info!(after_ms = after.as_millis() as u64, %reason, "task deferred"),
            );
            Ran::Deferred { after }
        }
    }
}

/// The history a task starts an attempt with: what earlier attempts recorded, or, on the
/// first, how it was queued.
pub(crate) fn start_history(envelope: &Envelope) -> Vec<StateChange> {
    if !envelope.history.is_empty() {
        return envelope.history.clone();
    }
    let mut h = Vec::with_capacity(4);
    let queued = |state, at_ms| StateChange::new(state, at_ms, 0, None);
    if let Some(due) = envelope.due_ms {
        h.push(queued(TaskState::Scheduled, envelope.enqueued_at_ms));
        h.push(queued(TaskState::Pending, due));
    } else {
        h.push(queued(TaskState::Pending, envelope.enqueued_at_ms));
    }
    h
}

/// Records that the task is running: through the completer (so it is written before the
/// task's own completion), or at once for an in-memory broker.
async fn mark_running(
    exec: &Executor,
    msg: &Decoded,
    at: u64,
    history: &[StateChange],
    trace: &TraceParent,
) {
    let envelope = &msg.envelope;
    let record = TaskRecord::of_attempt(envelope, msg.queue(), exec.consumer.name()).running(
        at,
        history.to_vec(),
        Some(trace.header()),
    );
    exec.running.marked(&envelope.id, record.clone());
    exec.write_state(Write::State(StoredRecord {
        id: envelope.id.clone(),
        record,
    }))
    .await;
}

/// For a group callback: its argument, from the members' outputs.
async fn fill_gathered_args(exec: &Executor, envelope: &mut Envelope) -> Result<(), TaskFailure> {
    if envelope.gather.is_empty() {
        return Ok(());
    }
    // Boxed: a rare path, whose Redis reads would otherwise make every execution's state
    // machine as large as theirs (and it is moved by value).
    envelope.args = Box::pin(workflow::gather_args(&exec.consumer, &envelope.gather)).await?;
    Ok(())
}

/// Calls the task's handler: under its timeout, stopped `cancel_grace` after `cancel` fires,
/// with a panic caught at the task's boundary so one bad task never takes the worker down.
async fn invoke(
    exec: &Executor,
    envelope: &Envelope,
    cancel: CancellationToken,
) -> Result<Vec<u8>, TaskFailure> {
    let grace = exec.cancel_grace;
    let Some(def) = exec.registry.get(&envelope.task) else {
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
        codec: exec.consumer.codec(),
        state: exec.provided.clone(),
    };
    let info = TaskInfo {
        id: envelope.id.clone(),
        name: envelope.task.clone(),
        attempt: envelope.attempt,
        labels: envelope.labels.clone(),
        cancel: cancel.clone(),
        broker: Some(exec.consumer.broker().clone()),
    };
    let fut = AssertUnwindSafe(context::scope(info, (def.handler)(invocation))).catch_unwind();
    // Cancellation: the token fires at once; the future is dropped after the grace period
    // unless it finishes first (then its own outcome stands).
    let fut = async move {
        tokio::pin!(fut);
        // Biased, the task first: one that finishes at its first poll (most do) never gets as
        // far as registering a wait on its token.
        tokio::select! {
            biased;
            r = &mut fut => Ok(r),
            _ = async { cancel.cancelled().await; tokio::time::sleep(grace).await } => Err(()),
        }
    };
    let limit = envelope
        .timeout_ms
        .map(Duration::from_millis)
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
