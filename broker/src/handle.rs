//! Task handles: what `.kiq()` returns, to wait for a task's typed result.

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::broker::Broker;
use crate::codec;
use crate::error::{BrokerError, WaitError};
use crate::record::{TaskRecord, TaskState};
use crate::waiter::Event;

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
    pub async fn cancel(&self) -> Result<crate::cancel::CancelOutcome, BrokerError> {
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
        let record = wait_record(&self.broker, &self.id, timeout).await?;
        match (record.state, record.output, record.failure) {
            (TaskState::Succeeded, Some(out), _) => codec::decode(&out).map_err(WaitError::Decode),
            (_, _, Some(failure)) => Err(WaitError::Failed(failure)),
            (state, _, None) => Err(WaitError::Decode(codec::CodecError::Decode(format!(
                "final record in state {state:?} carries neither output nor failure"
            )))),
        }
    }
}

/// Waits for task `id`'s final record.
pub(crate) async fn wait_record(
    broker: &Broker,
    id: &str,
    timeout: Duration,
) -> Result<TaskRecord, WaitError> {
    if let Some(m) = broker.memory() {
        return m.wait_record(id, timeout).await;
    }
    let deadline = Instant::now() + timeout;
    let waiters = broker.waiters();
    let mut reg = waiters.register(id);
    let mut last_error: Option<BrokerError> = None;
    // With a fresh subscription, the listener's Recheck (sent once SUBSCRIBE is confirmed)
    // triggers the first read; otherwise read now.
    let mut read_now = reg.already_subscribed;
    // Without pending records, "no record yet" is what a queued task looks like.
    let absent_means_unknown = broker.config().track_pending;
    loop {
        if read_now {
            match broker.record(id).await {
                Ok(Some(r)) if r.state.is_final() => return Ok(r),
                Ok(Some(_)) => last_error = None,
                Ok(None) if absent_means_unknown => {
                    return Err(WaitError::NotFound(id.to_string()))
                }
                Ok(None) => last_error = None,
                Err(e) => last_error = Some(e),
            }
        }
        read_now = true;
        match tokio::time::timeout_at(deadline, reg.rx.changed()).await {
            Err(_) => break,
            Ok(Err(_)) => break,
            Ok(Ok(())) => {
                let event = reg.rx.borrow_and_update().clone();
                match event {
                    Event::Done(Some(bytes)) => {
                        if let Ok(r) = codec::decode::<TaskRecord>(&bytes) {
                            if r.state.is_final() {
                                return Ok(r);
                            }
                        }
                    }
                    Event::Done(None) | Event::Recheck | Event::Idle => {}
                }
            }
        }
    }
    // Out of time: one last look tells "still running" from "unknown" from "Redis down".
    match broker.record(id).await {
        Ok(Some(r)) if r.state.is_final() => Ok(r),
        Ok(Some(_)) => Err(WaitError::Timeout),
        Ok(None) if absent_means_unknown => Err(WaitError::NotFound(id.to_string())),
        Ok(None) => Err(WaitError::Timeout),
        Err(e) => Err(WaitError::Broker(last_error.unwrap_or(e))),
    }
}
