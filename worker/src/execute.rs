//! Running one delivered message: decode, look up, run under its timeout, catch panics, and
//! say what to write back.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use kiq_broker::envelope::now_ms;
use kiq_broker::{
    codec, Completion, DeadLetter, Delivery, Envelope, FailureKind, TaskFailure, TaskRecord,
    TaskState,
};
use tracing::Instrument;

use crate::registry::{Invocation, Registry};

/// Runs `delivery` to completion and returns what must be written for it.
pub async fn execute(registry: &Registry, consumer: &str, delivery: Delivery) -> Completion {
    let Delivery {
        queue,
        stream_id,
        payload,
    } = delivery;
    let payload = payload.unwrap_or_default();
    let envelope: Envelope = match codec::decode(&payload) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(%queue, %stream_id, error = %e, "undecodable message moved to dead letters");
            return Completion {
                queue,
                stream_id,
                record: None,
                dead: Some(DeadLetter {
                    reason: "malformed".into(),
                    error: e.to_string(),
                    payload,
                    ..DeadLetter::default()
                }),
            };
        }
    };
    let span = tracing::info_span!("task", task_id = %envelope.id, task = %envelope.task, attempt = envelope.attempt);
    let started = now_ms();
    let outcome = run(registry, &envelope).instrument(span.clone()).await;
    let attempts = envelope.attempt + 1;
    let dead_reason = match &outcome {
        Err(f) if f.kind == FailureKind::UnknownTask => Some("unknown_task"),
        Err(f) if f.kind == FailureKind::BadArguments => Some("bad_arguments"),
        _ => None,
    };
    span.in_scope(|| match &outcome {
        Ok(_) => tracing::debug!(ms = now_ms().saturating_sub(started), "task succeeded"),
        Err(f) => tracing::warn!(kind = %f.kind, error = %f.message, "task failed"),
    });
    let (state, output, failure) = match outcome {
        Ok(out) => (TaskState::Succeeded, Some(out), None),
        Err(f) => (TaskState::Failed, None, Some(f)),
    };
    let dead = dead_reason.map(|reason| DeadLetter {
        reason: reason.into(),
        error: failure
            .as_ref()
            .map(|f| f.message.clone())
            .unwrap_or_default(),
        task_id: Some(envelope.id.clone()),
        task: Some(envelope.task.clone()),
        attempts,
        payload: payload.clone(),
    });
    let record = TaskRecord {
        state,
        task: envelope.task.clone(),
        queue: queue.clone(),
        enqueued_at_ms: envelope.enqueued_at_ms,
        finished_at_ms: Some(now_ms()),
        attempts,
        output,
        failure,
        worker: Some(consumer.to_string()),
    };
    let record = match codec::encode(&record) {
        Ok(bytes) => Some((envelope.id.clone(), bytes)),
        Err(e) => {
            tracing::error!(task_id = %envelope.id, error = %e, "cannot encode the task record");
            None
        }
    };
    Completion {
        queue,
        stream_id,
        record,
        dead,
    }
}

async fn run(registry: &Registry, envelope: &Envelope) -> Result<Vec<u8>, TaskFailure> {
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
    // Panics are caught at the task's boundary so one bad task never takes the worker down.
    let fut = AssertUnwindSafe((def.handler)(invocation)).catch_unwind();
    let caught = match def.timeout {
        Some(limit) => match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => {
                return Err(TaskFailure::new(
                    FailureKind::Timeout,
                    format!("task ran longer than its {limit:?} timeout and was stopped"),
                ))
            }
        },
        None => fut.await,
    };
    match caught {
        Ok(result) => result,
        Err(panic) => Err(TaskFailure::new(
            FailureKind::Panic,
            format!("task panicked: {}", panic_message(&*panic)),
        )),
    }
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
