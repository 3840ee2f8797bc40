//! The worker's side of workflows: filling a group callback's argument from its members'
//! outputs, and, when a task ends, what its chain and group need sent or written.

use kiq_broker::envelope::now_ms;
use kiq_broker::{codec, Broker, Envelope, FailureKind, TaskFailure, TaskRecord, TaskState};

/// A group callback's argument tuple: `([output of each member, in order],)`. Fails with
/// kind `aborted` if a member did not succeed.
pub async fn gather_args(
    broker: Option<&Broker>,
    members: &[String],
) -> Result<Vec<u8>, TaskFailure> {
    let Some(broker) = broker else {
        return Err(TaskFailure::new(
            FailureKind::Error,
            "no broker to gather a group's results from",
        ));
    };
    let records = broker.records(members).await.map_err(|e| {
        TaskFailure::new(
            FailureKind::Error,
            format!("cannot read the group's results: {e}"),
        )
    })?;
    let mut outputs = Vec::with_capacity(members.len());
    for (id, record) in members.iter().zip(records) {
        match record {
            Some(TaskRecord {
                state: TaskState::Succeeded,
                output: Some(out),
                ..
            }) => outputs.push(out),
            Some(r) => {
                let why = r
                    .failure
                    .map(|f| format!("{}: {}", f.kind, f.message))
                    .unwrap_or_else(|| format!("{:?}", r.state));
                return Err(TaskFailure::new(
                    FailureKind::Aborted,
                    format!("group member {id} ({}) did not succeed: {why}", r.task),
                ));
            }
            None => {
                return Err(TaskFailure::new(
                    FailureKind::Aborted,
                    format!("group member {id} has no result (expired?)"),
                ))
            }
        }
    }
    Ok(codec::array_of([codec::array_of(&outputs)]))
}

/// What a finished task's workflow needs.
#[derive(Debug, Default)]
pub struct Effects {
    /// The chain's next step to send (lane, encoded envelope).
    pub next: Option<(String, Vec<u8>)>,
    /// Records of steps that will never run (a chain after a failure).
    pub also: Vec<(String, Vec<u8>)>,
    /// The group this task counts towards (group id, index).
    pub group_done: Option<(String, u32)>,
}

/// The workflow effects of `envelope` ending with `record` (a final record: not retrying).
pub fn effects(envelope: &Envelope, record: &TaskRecord) -> Effects {
    let mut fx = Effects {
        group_done: envelope.group.as_ref().map(|g| (g.id.clone(), g.index)),
        ..Effects::default()
    };
    let Some((first, rest)) = envelope.then.split_first() else {
        return fx;
    };
    match (&record.state, &record.output) {
        (TaskState::Succeeded, Some(out)) => {
            let next = Envelope {
                args: codec::array_of([out]),
                then: rest.to_vec(),
                enqueued_at_ms: now_ms(),
                ..first.clone()
            };
            match codec::encode(&next) {
                Ok(bytes) => fx.next = Some((next.priority.lane(&next.queue), bytes)),
                Err(e) => tracing::error!(error = %e, "cannot encode a chain's next step"),
            }
        }
        _ => {
            let why = record
                .failure
                .as_ref()
                .map(|f| f.message.as_str())
                .unwrap_or("it did not succeed");
            let message = format!(
                "chain step {} ({}) failed: {why}",
                envelope.id, envelope.task
            );
            for step in &envelope.then {
                let aborted = TaskRecord {
                    state: TaskState::Failed,
                    task: step.task.clone(),
                    queue: step.queue.clone(),
                    enqueued_at_ms: step.enqueued_at_ms,
                    finished_at_ms: Some(now_ms()),
                    attempts: 0,
                    output: None,
                    failure: Some(TaskFailure::new(FailureKind::Aborted, message.clone())),
                    worker: record.worker.clone(),
                    ..Default::default()
                };
                if let Ok(bytes) = codec::encode(&aborted) {
                    fx.also.push((step.id.clone(), bytes));
                }
            }
        }
    }
    fx
}
