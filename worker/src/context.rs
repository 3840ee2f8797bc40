//! What a running task can learn about itself: its id, attempt number and labels.
//!
//! Tasks read it with `kiq::current_task()`; the `kiq` facade's docs have a runnable example.

use std::collections::BTreeMap;

/// The running task's identity.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskInfo {
    /// The task id.
    pub id: String,
    /// The task name.
    pub name: String,
    /// Attempts made before this one: 0 on the first run, 1 on the first retry.
    pub attempt: u32,
    /// The labels the producer attached.
    pub labels: BTreeMap<String, String>,
    /// Fires when the task is cancelled; the task is dropped after the worker's grace period,
    /// so a long task can check it and stop cleanly.
    pub cancel: tokio_util::sync::CancellationToken,
    /// Where progress reports go.
    pub(crate) broker: Option<kiq_broker::Broker>,
}

impl TaskInfo {
    /// The broker of the worker running the task: for dispatching follow-up work from inside
    /// it (those dispatches continue this task's trace). `None` outside a worker.
    pub fn broker(&self) -> Option<&kiq_broker::Broker> {
        self.broker.as_ref()
    }

    /// Reports progress (any serde value); the caller reads it with `handle.progress()`. Kept as
    /// long as results are. Outside a worker it does nothing.
    pub async fn set_progress<P: serde::Serialize + ?Sized>(
        &self,
        progress: &P,
    ) -> Result<(), kiq_broker::BrokerError> {
        match &self.broker {
            Some(b) => b.set_progress(&self.id, progress).await,
            None => Ok(()),
        }
    }
}

tokio::task_local! {
    static CURRENT: TaskInfo;
}

/// The task being run by the current worker future, or `None` outside a worker (for example
/// when the function is called directly in a unit test).
pub fn current_task() -> Option<TaskInfo> {
    CURRENT.try_with(|t| t.clone()).ok()
}

/// Runs `fut` with `info` as its [`current_task`].
pub async fn scope<F: std::future::Future>(info: TaskInfo, fut: F) -> F::Output {
    CURRENT.scope(info, fut).await
}
