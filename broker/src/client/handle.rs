//! Task handles: what `.kiq()` returns, to wait for a task's typed result.

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::broker::Broker;
use super::cancel::CancelOutcome;
use crate::codec::CodecError;
use crate::error::{BrokerError, WaitError};
use crate::model::record::{TaskRecord, TaskState};

/// A dispatched task whose output is a `T`.
pub struct TaskHandle<T> {
    broker: Broker,
    id: String,
    _output: PhantomData<fn() -> T>,
}

impl<T> Clone for TaskHandle<T> {
    fn clone(&self) -> Self {
        Self {
            broker: self.broker.clone(),
            id: self.id.clone(),
            _output: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskHandle").field("id", &self.id).finish()
    }
}

impl<T: DeserializeOwned> TaskHandle<T> {
    pub(crate) fn new(broker: Broker, id: String) -> Self {
        Self {
            broker,
            id,
            _output: PhantomData,
        }
    }

    /// The task id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The task's latest progress report (see `TaskInfo::set_progress`), if any.
    pub async fn progress<P: DeserializeOwned>(&self) -> Result<Option<P>, BrokerError> {
        self.broker.progress(&self.id).await
    }

    /// Cancels the task (see [`Broker::cancel`]).
    pub async fn cancel(&self) -> Result<CancelOutcome, BrokerError> {
        self.broker.cancel(&self.id).await
    }

    /// The task's record as stored now: `None` if unknown or expired.
    pub async fn record(&self) -> Result<Option<TaskRecord>, BrokerError> {
        self.broker.record(&self.id).await
    }

    /// Waits up to `timeout` for the task to finish and returns its output, or why not.
    ///
    /// The wait is woken by the worker's completion notice (no polling); any number of
    /// concurrent waiters share one subscriber connection.
    pub async fn wait_result(&self, timeout: Duration) -> Result<T, WaitError> {
        let record = self.broker.wait_record(&self.id, timeout).await?;
        match (record.state, record.output, record.failure) {
            (TaskState::Succeeded, Some(out), _) => {
                self.broker.codec().decode(&out).map_err(WaitError::Decode)
            }
            (_, _, Some(failure)) => Err(WaitError::Failed(failure)),
            (state, _, None) => Err(WaitError::Decode(CodecError::Decode(format!(
                "final record in state {state:?} carries neither output nor failure"
            )))),
        }
    }
}
