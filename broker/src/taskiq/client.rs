//! The producer's side: a kiq program dispatching to Python Taskiq workers and reading their
//! results, typed.

use std::marker::PhantomData;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use serde_json::{Map, Value};

use super::message::TaskiqMessage;
use super::result::TaskiqResult;
use super::stream::TaskiqStream;
use crate::client::broker::Broker;
use crate::codec::CodecError;
use crate::error::{BrokerError, DispatchError, WaitError};
use crate::model::envelope::{new_task_id, validate_task_id};
use crate::model::record::{FailureKind, TaskFailure};

/// Sends tasks to the Python workers of one Taskiq stream: from [`Broker::taskiq`].
#[derive(Debug, Clone)]
pub struct TaskiqClient {
    broker: Broker,
    stream: TaskiqStream,
}

impl Broker {
    /// A client of the Taskiq stream `stream`: dispatches to Python Taskiq workers by task
    /// name, and reads the results they write. Redis only.
    pub fn taskiq(&self, stream: TaskiqStream) -> TaskiqClient {
        TaskiqClient {
            broker: self.clone(),
            stream,
        }
    }
}

impl TaskiqClient {
    /// The stream sent to.
    pub fn stream(&self) -> &TaskiqStream {
        &self.stream
    }

    /// A call of the Python task registered as `task_name`, to fill in and send.
    pub fn call(&self, task_name: impl Into<String>) -> TaskiqCall<'_> {
        TaskiqCall {
            client: self,
            message: TaskiqMessage {
                task_id: String::new(),
                task_name: task_name.into(),
                labels: Map::new(),
                labels_types: None,
                args: Vec::new(),
                kwargs: Map::new(),
            },
            error: None,
        }
    }

    /// The handle of a task sent earlier (by kiq or by Python) with id `id`.
    pub fn handle<T: DeserializeOwned>(&self, id: impl Into<String>) -> TaskiqHandle<T> {
        TaskiqHandle {
            client: self.clone(),
            id: id.into(),
            _output: PhantomData,
        }
    }
}

/// A call of a Python task, built then sent with [`TaskiqCall::kiq`].
#[derive(Debug)]
pub struct TaskiqCall<'a> {
    client: &'a TaskiqClient,
    message: TaskiqMessage,
    error: Option<String>,
}

fn to_json<V: Serialize + ?Sized>(v: &V) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

impl TaskiqCall<'_> {
    /// The positional arguments: anything that serializes to a JSON array (a tuple, a
    /// `Vec`), or `()` for none.
    pub fn args<A: Serialize + ?Sized>(mut self, args: &A) -> Self {
        match to_json(args) {
            Ok(Value::Array(a)) => self.message.args = a,
            Ok(Value::Null) => self.message.args = Vec::new(),
            Ok(other) => {
                self.error = Some(format!(
                    "positional arguments must be a JSON array, not {other}"
                ))
            }
            Err(e) => self.error = Some(e),
        }
        self
    }

    /// One keyword argument.
    pub fn kwarg<V: Serialize + ?Sized>(mut self, name: &str, value: &V) -> Self {
        match to_json(value) {
            Ok(v) => {
                self.message.kwargs.insert(name.to_string(), v);
            }
            Err(e) => self.error = Some(e),
        }
        self
    }

    /// Keyword arguments from anything that serializes to a JSON object (a struct, a map).
    pub fn kwargs<K: Serialize + ?Sized>(mut self, kwargs: &K) -> Self {
        match to_json(kwargs) {
            Ok(Value::Object(m)) => self.message.kwargs.extend(m),
            Ok(other) => {
                self.error = Some(format!(
                    "keyword arguments must be a JSON object, not {other}"
                ))
            }
            Err(e) => self.error = Some(e),
        }
        self
    }

    /// A label (Taskiq's `timeout`, `retry_on_error`, `max_retries`, `delay`, or your own).
    pub fn label<V: Serialize + ?Sized>(mut self, name: &str, value: &V) -> Self {
        match to_json(value) {
            Ok(v) => {
                self.message.labels.insert(name.to_string(), v);
            }
            Err(e) => self.error = Some(e),
        }
        self
    }

    /// Uses `id` as the task id (default: 32 fresh hex characters, as Taskiq's).
    pub fn task_id(mut self, id: impl Into<String>) -> Self {
        self.message.task_id = id.into();
        self
    }

    /// Sends the message to the stream (making Taskiq's group first if it is missing, as a
    /// Python producer does) and returns a handle to its result, read as a `T`.
    pub async fn kiq<T: DeserializeOwned>(mut self) -> Result<TaskiqHandle<T>, DispatchError> {
        let task = self.message.task_name.clone();
        if let Some(error) = self.error {
            return Err(DispatchError::Encode {
                task,
                error: CodecError::Encode(error),
            });
        }
        if self.message.task_id.is_empty() {
            self.message.task_id = new_task_id();
        } else if !validate_task_id(&self.message.task_id) {
            return Err(DispatchError::Invalid {
                what: "task id",
                value: self.message.task_id,
            });
        }
        let data = self.message.to_json();
        let limit = self.client.broker.config().max_payload_bytes;
        if data.len() > limit {
            return Err(DispatchError::PayloadTooLarge {
                task,
                size: data.len(),
                limit,
            });
        }
        let id = self.message.task_id.clone();
        let err = |error| DispatchError::Broker {
            task: task.clone(),
            id: Some(id.clone()),
            error,
        };
        let redis = self
            .client
            .broker
            .backend()
            .redis("sending to Taskiq")
            .map_err(err)?;
        redis
            .taskiq_send(&self.client.stream, &data)
            .await
            .map_err(err)?;
        Ok(self.client.handle(id))
    }
}

/// A Python Taskiq task declared on the Rust side: its name, argument tuple and output type,
/// no body. `kiq` sends it to a [`TaskiqClient`]'s stream.
///
/// ```
/// use kiq_broker::taskiq::RemoteTask;
/// /// `interop.add(a: int, b: int) -> int`, served by Python.
/// const ADD: RemoteTask<(i64, i64), i64> = RemoteTask::new("interop.add");
/// assert_eq!(ADD.name(), "interop.add");
/// ```
pub struct RemoteTask<A, T> {
    name: &'static str,
    _types: PhantomData<fn(A) -> T>,
}

impl<A, T> std::fmt::Debug for RemoteTask<A, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteTask")
            .field("name", &self.name)
            .finish()
    }
}

impl<A: Serialize, T: DeserializeOwned> RemoteTask<A, T> {
    /// The task Python registered as `name`.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            _types: PhantomData,
        }
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Sends it with positional arguments `args` (a tuple).
    pub async fn kiq(
        &self,
        client: &TaskiqClient,
        args: A,
    ) -> Result<TaskiqHandle<T>, DispatchError> {
        client.call(self.name).args(&args).kiq().await
    }

    /// A call to fill in further (keyword arguments, labels) before sending.
    pub fn call<'a>(&self, client: &'a TaskiqClient) -> TaskiqCall<'a> {
        client.call(self.name)
    }
}

/// A task sent to a Taskiq stream, whose result is a `T`.
#[derive(Debug, Clone)]
pub struct TaskiqHandle<T> {
    client: TaskiqClient,
    id: String,
    _output: PhantomData<fn() -> T>,
}

/// How often a Taskiq result key is checked while waiting (Taskiq writes no notice; its own
/// `wait_result` checks every 200 ms).
const POLL_FIRST: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_millis(100);

impl<T: DeserializeOwned> TaskiqHandle<T> {
    /// The task id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The result if it is stored now.
    pub async fn result(&self) -> Result<Option<TaskiqResult>, WaitError> {
        let key = self.client.stream.result_key(&self.id);
        let bytes = self
            .client
            .broker
            .backend()
            .redis("reading Taskiq results")?
            .taskiq_result(&key)
            .await?;
        match bytes {
            None => Ok(None),
            Some(b) => TaskiqResult::decode(&b, self.client.stream.results)
                .map(Some)
                .map_err(|e| WaitError::Decode(CodecError::Decode(e.to_string()))),
        }
    }

    /// Waits up to `timeout` for the result and returns the task's output, or its error: a
    /// Python exception is [`WaitError::Failed`] with `error_type` the exception's class
    /// (`ValueError`, `mymodule.MyError`) and its message.
    pub async fn wait_result(&self, timeout: Duration) -> Result<T, WaitError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = POLL_FIRST;
        let mut last_error: Option<BrokerError>;
        loop {
            match self.result().await {
                Ok(Some(r)) => return output_of(r),
                Ok(None) => last_error = None,
                Err(WaitError::Broker(e)) => last_error = Some(e),
                Err(e) => return Err(e),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(last_error
                    .map(WaitError::Broker)
                    .unwrap_or(WaitError::Timeout { hint: None }));
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }
}

fn output_of<T: DeserializeOwned>(r: TaskiqResult) -> Result<T, WaitError> {
    if r.is_err {
        let (error_type, message) = match r.error {
            Some(e) => (Some(e.qualified_type()), e.message()),
            None => (None, "the task failed without an exception".to_string()),
        };
        return Err(WaitError::Failed(TaskFailure {
            kind: FailureKind::Error,
            error_type,
            message,
        }));
    }
    serde_json::from_value(r.return_value)
        .map_err(|e| WaitError::Decode(CodecError::Decode(e.to_string())))
}
