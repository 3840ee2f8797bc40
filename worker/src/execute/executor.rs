//! What every execution in a process shares, and the execution itself: decode, run, dispose.

use std::sync::Arc;
use std::time::Duration;

use kiq_broker::{Completion, Consumer, Delivery, Write};
use tokio::sync::mpsc;

use super::running::RunningTasks;
use super::{decode, dispose, run};
use crate::metrics::Metrics;
use crate::middleware::Middleware;
use crate::registry::Registry;
use crate::state::Provided;

/// Runs messages: shared by every execution of one worker process (or in-memory broker).
pub struct Executor {
    pub(crate) registry: Arc<Registry>,
    pub(crate) consumer: Consumer,
    /// The tasks running now.
    pub running: RunningTasks,
    /// Middleware around every task, outermost first.
    pub(crate) layers: Vec<Arc<dyn Middleware>>,
    /// How long a cancelled running task may go on before its future is dropped.
    pub(crate) cancel_grace: Duration,
    /// The values this worker provides to tasks taking a `State<T>` (process-wide ones are
    /// looked up when these have none of a type).
    pub(crate) provided: Arc<Provided>,
    /// Where executions are counted.
    pub(crate) metrics: Metrics,
    /// Where state changes go (the completer's queue, so a `running` mark is written before
    /// the task's completion); `None`: written at once.
    pub(crate) states: Option<mpsc::Sender<Write>>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("consumer", &self.consumer.name())
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl Executor {
    /// The name `task` is counted under in the metrics: its own if this worker links it, else
    /// `unknown`, so that messages naming random tasks cannot grow the metrics without bound.
    pub(crate) fn metric_name<'a>(&self, task: &'a str) -> &'a str {
        if self.registry.get(task).is_some() {
            task
        } else {
            crate::metrics::UNKNOWN_TASK
        }
    }

    /// An executor of `registry`'s tasks, writing as `consumer`.
    pub fn new(
        registry: Arc<Registry>,
        consumer: Consumer,
        layers: Vec<Arc<dyn Middleware>>,
        cancel_grace: Duration,
    ) -> Self {
        Self {
            registry,
            consumer,
            running: RunningTasks::default(),
            layers,
            cancel_grace,
            provided: Arc::new(Provided::default()),
            metrics: Metrics::process(),
            states: None,
        }
    }

    /// Counts executions into `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Provides `provided` to tasks taking a `State<T>`.
    pub fn with_provided(mut self, provided: Provided) -> Self {
        self.provided = Arc::new(provided);
        self
    }

    /// Sends state changes through `states` (the completer's queue) instead of writing them.
    pub fn with_states(mut self, states: mpsc::Sender<Write>) -> Self {
        self.states = Some(states);
        self
    }

    /// The consumer this executor writes as.
    pub fn consumer(&self) -> &Consumer {
        &self.consumer
    }

    /// Runs `delivery` to completion and returns what must be written for it. A
    /// `precancelled` message (its cancel mark was found before it ran) is not run.
    pub async fn execute(&self, delivery: Delivery, precancelled: bool) -> Completion {
        let mut msg = match decode::decode(&self.consumer, delivery) {
            Ok(m) => m,
            Err(dead) => return *dead,
        };
        let attempt = run::attempt(self, &mut msg, precancelled).await;
        dispose::dispose(self, msg, attempt)
    }

    /// Writes a state change: through the completer's queue, or at once.
    pub(crate) async fn write_state(&self, state: Write) {
        match &self.states {
            Some(tx) => {
                let _ = tx.send(state).await;
            }
            None => {
                if let Err(e) = self.consumer.write(std::slice::from_ref(&state)).await {
                    tracing::debug!(error = %e, "cannot write a task's state");
                }
            }
        }
    }
}
