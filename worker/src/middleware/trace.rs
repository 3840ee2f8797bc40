//! A layer that logs every task's start and outcome, with how long it ran.

use std::time::Instant;

use futures_util::future::BoxFuture;

use super::{Middleware, Next, Outcome, TaskCall};

/// Logs each task's start (debug) and outcome (info; warn on failure) with its duration and
/// how long it waited in the queue. The worker's `task` span (id, name, attempt) encloses
/// both lines.
#[derive(Debug, Default, Clone, Copy)]
pub struct Trace;

impl Middleware for Trace {
    fn call<'a>(&'a self, task: &'a TaskCall<'a>, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let waited_ms =
                kiq_broker::envelope::now_ms().saturating_sub(task.envelope.enqueued_at_ms);
            tracing::debug!(queue = %task.envelope.queue, waited_ms, "task starting");
            let started = Instant::now();
            let outcome = next.run(task).await;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            match &outcome {
                Outcome::Finished(Ok(out)) => {
                    tracing::info!(ms, waited_ms, output_bytes = out.len(), "task succeeded")
                }
                Outcome::Finished(Err(f)) => {
                    tracing::warn!(ms, waited_ms, kind = %f.kind, error = %f.message, "task failed")
                }
                Outcome::Deferred { after, reason } => {
                    tracing::info!(after_ms = after.as_millis() as u64, %reason, "task deferred")
                }
            }
            outcome
        })
    }
}
