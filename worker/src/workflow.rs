//! The worker's side of workflows: filling a group callback's argument from its members'
//! outputs, and, when a task ends, what its chain and group need sent or written.

use kiq_broker::envelope::now_ms;
use kiq_broker::{
    Consumer, Effect, Envelope, FailureKind, StoredRecord, TaskFailure, TaskRecord, TaskState,
};

/// A group callback's argument tuple: `([output of each member, in order],)`. Fails with
/// kind `aborted` if a member did not succeed.
pub async fn gather_args(consumer: &Consumer, members: &[String]) -> Result<Vec<u8>, TaskFailure> {
    let records = consumer.records(members).await.map_err(|e| {
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
    let codec = consumer.codec();
    Ok(codec.array_of([codec.array_of(&outputs)]))
}

/// The workflow effects of `envelope` ending for good with `record`: its group's count, and
/// its chain's next step (given this task's output) or, if it did not succeed, the final
/// records of the steps that will never run.
pub fn effects(consumer: &Consumer, envelope: &Envelope, record: &TaskRecord) -> Vec<Effect> {
    let mut fx = Vec::new();
    if let Some(g) = &envelope.group {
        fx.push(Effect::GroupMemberDone(g.clone()));
    }
    let Some((first, rest)) = envelope.then.split_first() else {
        return fx;
    };
    match (&record.state, &record.output) {
        (TaskState::Succeeded, Some(out)) => {
            fx.push(Effect::Send(Box::new(Envelope {
                args: consumer.codec().array_of([out]),
                then: rest.to_vec(),
                enqueued_at_ms: now_ms(),
                // The step is sent by this execution: its run continues this one's span.
                trace: record.trace.clone().or_else(|| first.trace.clone()),
                ..first.clone()
            })));
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
            let now = now_ms();
            for step in &envelope.then {
                let mut aborted = TaskRecord::aborted(
                    &step.task,
                    &step.queue,
                    step.enqueued_at_ms,
                    &message,
                    now,
                );
                aborted.worker = record.worker.clone();
                fx.push(Effect::Finish(Box::new(StoredRecord {
                    id: step.id.clone(),
                    record: aborted,
                })));
            }
        }
    }
    fx
}
