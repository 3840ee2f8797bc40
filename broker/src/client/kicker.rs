//! What a producer knows about a task, and the per-call options of a dispatch.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use serde::{de::DeserializeOwned, Serialize};

use super::broker::Broker;
use super::dispatch::RawDispatch;
use super::handle::TaskHandle;
use crate::error::DispatchError;
use crate::model::envelope::system_ms;

/// A task's identity and defaults, as `#[task]` declares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSpec {
    /// The registered name (default: module path and function name).
    pub name: &'static str,
    /// The queue it is dispatched to unless a call says otherwise.
    pub queue: &'static str,
    /// Its retry policy unless a call says otherwise.
    pub retry: crate::model::retry::RetryPolicy,
}

/// The options of one dispatch: built with [`Kicker::new`] (or `my_task::kicker()`), then sent
/// with [`Kicker::kiq`].
#[derive(Debug, Clone)]
pub struct Kicker<A, T> {
    pub(crate) spec: TaskSpec,
    pub(crate) queue: Option<String>,
    pub(crate) task_id: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) retry: Option<crate::model::retry::RetryPolicy>,
    pub(crate) timeout: Option<std::time::Duration>,
    /// When it is due, in ms since the Unix epoch (saturating: a dispatch refuses a due time
    /// beyond [`MAX_DELAY`](crate::envelope::MAX_DELAY)).
    pub(crate) due: Option<u64>,
    pub(crate) unique: Option<(String, std::time::Duration)>,
    pub(crate) priority: crate::model::priority::Priority,
    _types: PhantomData<fn(A) -> T>,
}

impl<A, T> Kicker<A, T> {
    /// The same options for other argument and output types (for workflows, which check types
    /// at the step boundaries).
    pub(crate) fn retype<A2, T2>(self) -> Kicker<A2, T2> {
        Kicker {
            spec: self.spec,
            queue: self.queue,
            task_id: self.task_id,
            labels: self.labels,
            retry: self.retry,
            timeout: self.timeout,
            due: self.due,
            unique: self.unique,
            priority: self.priority,
            _types: PhantomData,
        }
    }

    /// This call's options as a dispatch by name, with `args` already encoded.
    pub(crate) fn raw_dispatch(&self, args: Vec<u8>) -> RawDispatch<'_> {
        RawDispatch {
            task: self.spec.name,
            queue: self.queue.as_deref().unwrap_or(self.spec.queue),
            args,
            task_id: self.task_id.as_deref(),
            labels: self.labels.clone(),
            retry: self.retry,
            timeout: self.timeout,
            due_ms: self.due,
            unique_key: self.unique.as_ref().map(|(k, _)| k.clone()),
            priority: self.priority,
        }
    }
}

impl<A: Serialize, T: DeserializeOwned> Kicker<A, T> {
    /// Options for a dispatch of `spec`, with the task's defaults.
    pub fn new(spec: TaskSpec) -> Self {
        Self {
            spec,
            queue: None,
            task_id: None,
            labels: BTreeMap::new(),
            retry: None,
            timeout: None,
            due: None,
            unique: None,
            priority: crate::model::priority::Priority::Normal,
            _types: PhantomData,
        }
    }

    /// Sends to `queue` instead of the task's default queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Uses `id` as the task id instead of a fresh one.
    pub fn task_id(mut self, id: impl Into<String>) -> Self {
        self.task_id = Some(id.into());
        self
    }

    /// Adds a label: free metadata carried to the worker.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Retries this call up to `n` times (with the task's backoff) instead of the task's own count.
    pub fn retries(mut self, n: u32) -> Self {
        let mut policy = self.retry.unwrap_or(self.spec.retry);
        policy.max_retries = n;
        self.retry = Some(policy);
        self
    }

    /// Makes this dispatch unique by `key` for up to `ttl`: while a task dispatched with the same
    /// key (on the same queue) is pending or running, `kiq` returns that task's handle instead of
    /// enqueueing another. The key is released when the task finishes (succeeds, or fails for
    /// good), or after `ttl` at the latest.
    pub fn unique(mut self, key: impl Into<String>, ttl: std::time::Duration) -> Self {
        self.unique = Some((key.into(), ttl));
        self
    }

    /// Runs this call at `priority`: under a backlog, workers start critical tasks first, then
    /// high, normal and low ones. Each level has its own lane (stream) of the queue.
    pub fn priority(mut self, priority: crate::model::priority::Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Starts the task no earlier than `delay` from now. It waits in Redis (the queue's delayed
    /// set), not in a worker.
    pub fn delay(mut self, delay: std::time::Duration) -> Self {
        self.due = Some(crate::envelope::due_in(delay));
        self
    }

    /// Starts the task no earlier than `at`.
    pub fn at(mut self, at: std::time::SystemTime) -> Self {
        self.due = Some(system_ms(at));
        self
    }

    /// Limits each attempt of this call to `timeout` instead of the task's own timeout.
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Uses `policy` for this call instead of the task's own.
    pub fn retry_policy(mut self, policy: crate::model::retry::RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// The task's spec.
    pub fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    /// Enqueues one task per item of `args`, pipelined (about a thousand per round trip).
    /// Every message is encoded and checked before any is sent, so a bad argument fails the
    /// whole call with nothing enqueued. A `queue` or `label` applies to all; a `task_id` is
    /// refused here (ids must differ).
    pub async fn kiq_many(
        self,
        broker: &Broker,
        args: impl IntoIterator<Item = A>,
    ) -> Result<Vec<TaskHandle<T>>, DispatchError> {
        if let Some(id) = &self.task_id {
            return Err(DispatchError::Invalid {
                what: "task id (one id cannot name many tasks)",
                value: id.clone(),
            });
        }
        if let Some((key, _)) = &self.unique {
            return Err(DispatchError::Invalid {
                what: "unique key (one key cannot name many tasks)",
                value: key.clone(),
            });
        }
        let msgs = broker.prepare_batch(&self, args)?;
        let ids = broker.enqueue_many(msgs).await?;
        Ok(ids.into_iter().map(|id| broker.handle(id)).collect())
    }

    /// Enqueues the task with `args` (the arguments as one tuple). Resolves once Redis has
    /// accepted the message; an error means nothing was enqueued.
    pub async fn kiq(self, broker: &Broker, args: A) -> Result<TaskHandle<T>, DispatchError> {
        let msg = broker.prepare(&self, &args)?;
        let id = match &self.unique {
            Some((key, ttl)) => broker.enqueue_unique(msg, key, *ttl).await?,
            None => broker.enqueue(msg).await?,
        };
        Ok(broker.handle(id))
    }
}
