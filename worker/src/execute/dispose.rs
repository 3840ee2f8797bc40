//! The third step of an execution: what an attempt's result means for the task (the pure
//! decision of [`crate::outcome`]) turned into what is written: the record, the message's
//! end, and the effects.

use kiq_broker::envelope::now_ms;
use kiq_broker::taskiq::TaskiqResult;
use kiq_broker::{
    Completion, Consumer, DeadLetter, Delivery, Effect, End, Envelope, FailureKind, RetryPolicy,
    StateChange, StoredRecord, TaskFailure, TaskRecord, TaskState,
};

use super::decode::{dead_only, queue_of, Decoded};
use super::executor::Executor;
use super::run::{start_history, Attempt, Ran};
use crate::metrics;
use crate::outcome::{decide, Decision};
use crate::workflow;

/// The completion of `msg` after `attempt`.
pub(crate) fn dispose(exec: &Executor, msg: Decoded, attempt: Attempt) -> Completion {
    let Attempt {
        ran,
        mut history,
        trace,
        span,
    } = attempt;
    let result = match ran {
        Ran::Finished(r) => r,
        Ran::Deferred { after } => {
            super::run::record_outcome(&span, "deferred", None);
            exec.metrics.ended(
                exec.metric_name(&msg.envelope.task),
                metrics::Ended::Deferred,
                None,
            );
            return deferred(exec.consumer.name(), msg, after);
        }
    };
    let envelope = &msg.envelope;
    let attempts = envelope.attempt.saturating_add(1);
    let policy = envelope.retry.unwrap_or_else(|| {
        exec.registry
            .get(&envelope.task)
            .map(|d| d.retry)
            .unwrap_or(RetryPolicy::NONE)
    });
    let decision = decide(result.as_ref().map(|_| ()), &policy, attempts);
    let failure = result.as_ref().err();
    let finished = now_ms();
    let ran_since = history
        .iter()
        .rev()
        .find(|h| h.state == TaskState::Running)
        .map(|h| h.at_ms);
    exec.metrics.ended(
        exec.metric_name(&envelope.task),
        match decision {
            Decision::Finish(TaskState::Succeeded) => metrics::Ended::Succeeded,
            Decision::Retry { .. } => metrics::Ended::Retried,
            _ => metrics::Ended::Failed,
        },
        ran_since.map(|s| finished.saturating_sub(s) as f64 / 1000.0),
    );
    super::run::record_outcome(
        &span,
        match decision {
            Decision::Finish(TaskState::Succeeded) => "succeeded",
            Decision::Retry { .. } => "retried",
            Decision::Finish(TaskState::Cancelled) => "cancelled",
            _ => "failed",
        },
        // A cancelled task did what it was asked: not an error.
        failure
            .filter(|f| f.kind != FailureKind::Cancelled)
            .map(|f| f.message.as_str()),
    );
    // The next attempt's envelope carries the history up to its retry.
    let end = match decision {
        Decision::Retry { retry } => {
            let delay = policy.delay(retry);
            span.in_scope(|| {
                tracing::info!(delay_ms = delay.as_millis() as u64, "retry scheduled")
            });
            let mut next_history = history.clone();
            next_history.push(StateChange::new(
                TaskState::Retrying,
                now_ms(),
                envelope.attempt,
                failure.map(|f| short(&f.message)),
            ));
            End::Retry {
                next: Box::new(Envelope {
                    attempt: attempts,
                    history: next_history,
                    ..envelope.clone()
                }),
                at_ms: now_ms().saturating_add(delay.as_millis() as u64),
            }
        }
        Decision::Dead { reason } => End::Dead(DeadLetter {
            reason: reason.into(),
            error: failure.map(|f| f.message.clone()).unwrap_or_default(),
            task_id: Some(envelope.id.clone()),
            task: Some(envelope.task.clone()),
            attempts,
            payload: msg.payload.clone(),
        }),
        Decision::Finish(_) => End::Done,
    };
    let state = decision.state();
    history.push(StateChange::new(
        state,
        finished,
        envelope.attempt,
        failure.map(|f| short(&f.message)),
    ));
    let mut record = TaskRecord::of_attempt(envelope, msg.queue(), exec.consumer.name())
        .attempt_ended(state, finished, result, history);
    record.started_at_ms = ran_since;
    record.trace = Some(trace.header());
    // Only a task that finished for good sets off its workflow and gives up its key.
    let effects = if matches!(end, End::Retry { .. }) {
        Vec::new()
    } else {
        final_effects(&exec.consumer, envelope, &record)
    };
    Completion {
        lane: msg.lane,
        stream_id: msg.stream_id,
        task: Some(StoredRecord {
            id: envelope.id.clone(),
            record,
        }),
        end,
        effects,
    }
}

/// What a task that finished for good sets off: its chain's next step (or the aborted rest),
/// its group's count, the release of its uniqueness key, and, for a task that came from a
/// Taskiq message, its result where the Python side reads it.
fn final_effects(consumer: &Consumer, envelope: &Envelope, record: &TaskRecord) -> Vec<Effect> {
    let mut effects = workflow::effects(consumer, envelope, record);
    if let Some(reply) = &envelope.taskiq {
        let result = TaskiqResult::from_record(reply, record, consumer.codec());
        effects.push(Effect::StoreValue {
            key: reply.key.clone(),
            value: result.encode(reply.format),
            ttl_ms: reply.ttl_ms,
        });
    }
    if let Some(key) = &envelope.unique_key {
        effects.push(Effect::ReleaseUnique {
            queue: record.queue.clone(),
            key: key.clone(),
            holder: envelope.id.clone(),
        });
    }
    effects
}

/// The completion for a message delivered too many times without finishing: its workers kept
/// dying on it. It fails (so a waiter learns) and goes to the dead letters.
pub fn poisoned(consumer: &Consumer, delivery: Delivery) -> Completion {
    let Delivery {
        lane,
        stream_id,
        payload,
        deliveries,
    } = delivery;
    let payload = payload.unwrap_or_default();
    let message = format!(
        "delivered {} times without finishing: its workers stopped while running it, or Redis \
         refused to store its outcome",
        deliveries.saturating_sub(1)
    );
    let Ok(envelope) = consumer.decode(&payload) else {
        return dead_only(lane, stream_id, "malformed", message, payload);
    };
    tracing::error!(task_id = %envelope.id, task = %envelope.task, deliveries, "poison message: moving it to dead letters");
    let finished = now_ms();
    let mut history = start_history(&envelope);
    history.push(StateChange::new(
        TaskState::Dead,
        finished,
        envelope.attempt,
        Some(message.clone()),
    ));
    let attempts = envelope.attempt.saturating_add(1);
    let record = TaskRecord::of_attempt(&envelope, queue_of(&envelope, &lane), consumer.name())
        .attempt_ended(
            TaskState::Dead,
            finished,
            Err(TaskFailure::new(
                FailureKind::TooManyDeliveries,
                message.clone(),
            )),
            history,
        );
    let effects = final_effects(consumer, &envelope, &record);
    Completion {
        lane,
        stream_id,
        end: End::Dead(DeadLetter {
            reason: "too_many_deliveries".into(),
            error: message,
            task_id: Some(envelope.id.clone()),
            task: Some(envelope.task.clone()),
            attempts,
            payload,
        }),
        task: Some(StoredRecord {
            id: envelope.id,
            record,
        }),
        effects,
    }
}

/// The completion of a task a middleware put off: it goes back to its lane's delayed set, due
/// in `after`, unchanged. Not announced: the task has not finished.
fn deferred(consumer: &str, msg: Decoded, after: std::time::Duration) -> Completion {
    let envelope = &msg.envelope;
    let mut record = TaskRecord::of_attempt(envelope, msg.queue(), consumer);
    record.state = TaskState::Scheduled;
    Completion {
        task: Some(StoredRecord {
            id: envelope.id.clone(),
            record,
        }),
        // The message as it came, byte for byte: it has not been attempted.
        end: End::Defer {
            payload: msg.payload,
            at_ms: now_ms().saturating_add(after.as_millis() as u64),
        },
        lane: msg.lane,
        stream_id: msg.stream_id,
        effects: Vec::new(),
    }
}

/// A message shortened for a history note.
fn short(message: &str) -> String {
    match message.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &message[..i]),
        None => message.to_string(),
    }
}
