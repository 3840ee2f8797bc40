//! The subscriber: hears what the worker must know between reads. A producer's announcement
//! of a delayed message wakes the forwarder (so a delayed task starts on time even when it
//! was added after the forwarder went to sleep); a cancellation fires the running task's
//! token; a pause, resume or quiet has the gate look at once.

use std::sync::Arc;

use kiq_broker::{Consumer, Notice};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::execute::Executor;

/// Listens until `shutdown`.
pub(crate) async fn run(
    consumer: Consumer,
    lanes: Vec<String>,
    wake: Arc<Notify>,
    gate: Arc<Notify>,
    executor: Arc<Executor>,
    shutdown: CancellationToken,
) {
    let mut notices = match consumer.notices(&lanes, shutdown.clone()) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot subscribe to wake and cancel notices");
            return;
        }
    };
    loop {
        let notice = tokio::select! {
            n = notices.recv() => n,
            _ = shutdown.cancelled() => return,
        };
        match notice {
            None => return,
            Some(Notice::Cancelled(id)) => {
                if executor.running.cancel(&id) {
                    tracing::info!(task_id = %id, "cancelling a running task");
                }
            }
            Some(Notice::Wake) => wake.notify_one(),
            Some(Notice::Control) => gate.notify_one(),
            // Anything announced while we were not subscribed (a reconnect, or the switch to
            // a new set of partitions) is found again: delayed work by a re-plan, a running
            // task's cancellation by its mark.
            Some(Notice::Resubscribed) => {
                wake.notify_one();
                gate.notify_one();
                let ids = executor.running.ids();
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                if let Ok(marked) = consumer.cancelled(&refs).await {
                    for (id, _) in ids.iter().zip(marked).filter(|(_, m)| *m) {
                        if executor.running.cancel(id) {
                            tracing::info!(task_id = %id, "cancelling a running task (marked while not subscribed)");
                        }
                    }
                }
            }
            // Notices of newer versions: nothing to do here.
            Some(_) => {}
        }
    }
}
