//! Workflows: chains (each step gets the previous step's output), groups (run together,
//! gathered together) and a group's callback (run once every member has finished).
//!
//! The steps travel with the messages: a chain's first message carries the envelopes of the
//! steps after it, and the worker that finishes a step sends the next one in the same Redis
//! write that stores the step's result (so a step is never lost between the two). A group's
//! members count down a Redis hash; the member that finishes last sends the callback.
//!
//! ```no_run
//! # use kiq_broker::{Broker, Kicker, TaskSpec, RetryPolicy, workflow};
//! # const ADD: TaskSpec = TaskSpec { name: "add", queue: "default", retry: RetryPolicy::NONE };
//! # const DOUBLE: TaskSpec = TaskSpec { name: "double", queue: "default", retry: RetryPolicy::NONE };
//! # const SUM: TaskSpec = TaskSpec { name: "sum", queue: "default", retry: RetryPolicy::NONE };
//! # async fn demo(broker: &Broker) -> Result<(), Box<dyn std::error::Error>> {
//! # let add = || Kicker::<(i64, i64), i64>::new(ADD);
//! # let double = || Kicker::<(i64,), i64>::new(DOUBLE);
//! # let sum = || Kicker::<(Vec<i64>,), i64>::new(SUM);
//! # use std::time::Duration;
//! // With #[task] functions this reads `add::call(1, 2).then(double::link())`.
//! let chain = add().with_args((1, 2)).then(double().link()).then(double().link());
//! assert_eq!(chain.kiq(broker).await?.wait_result(Duration::from_secs(5)).await?, 12);
//!
//! let group = workflow::group((0..10).map(|i| add().with_args((i, i))));
//! let outputs: Vec<i64> = group.kiq(broker).await?.gather_all(Duration::from_secs(5)).await?;
//!
//! let chord = workflow::group((0..10).map(|i| add().with_args((i, i)))).then(sum().link());
//! let (_members, total) = chord.kiq(broker).await?;
//! assert_eq!(total.wait_result(Duration::from_secs(5)).await?, 90);
//! # Ok(()) }
//! ```

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::broker::Broker;
use crate::codec::{self, CodecError};
use crate::envelope::{self, Envelope, GroupRef};
use crate::error::{DispatchError, WaitError};
use crate::handle::TaskHandle;
use crate::task::Kicker;

/// Marks group member `ARGV[1]` of the group hash `KEYS[1]` done, once (redeliveries do not
/// count twice). When the last member is done, sends the stored callback to its stream.
pub(crate) const GROUP_MEMBER_DONE: &str = r#"
if redis.call('HSETNX', KEYS[1], 'm' .. ARGV[1], 1) == 0 then return 0 end
local done = redis.call('HINCRBY', KEYS[1], 'done', 1)
local size = tonumber(redis.call('HGET', KEYS[1], 'size'))
if size and done >= size then
  local cb = redis.call('HMGET', KEYS[1], 'callback', 'callback_stream')
  if cb[1] and cb[2] then
    redis.call('XADD', cb[2], '*', ARGV[2], cb[1])
  end
  return 2
end
return 1
"#;

/// A task with its arguments and options, not sent yet: the first step of a [`Chain`] or a
/// member of a [`Group`]. Made by [`Kicker::with_args`] (or `my_task::call(...)`).
#[derive(Debug)]
pub struct Call<T> {
    kicker: Kicker<(), ()>,
    args: Result<Vec<u8>, CodecError>,
    _output: PhantomData<fn() -> T>,
}

/// A task that takes the previous step's output (an `I`) as its one argument: a later step of
/// a [`Chain`], or a group's callback (then `I` is `Vec<T>`). Made by [`Kicker::link`] (or
/// `my_task::link()`).
#[derive(Debug)]
pub struct Link<I, T> {
    kicker: Kicker<(), ()>,
    _types: PhantomData<fn(I) -> T>,
}

impl<A: serde::Serialize, T: DeserializeOwned> Kicker<A, T> {
    /// These options with `args`, as a step of a workflow.
    pub fn with_args(self, args: A) -> Call<T> {
        Call {
            args: codec::encode(&args),
            kicker: self.retype(),
            _output: PhantomData,
        }
    }
}

impl<I, T: DeserializeOwned> Kicker<(I,), T> {
    /// These options as a later step of a workflow: the task's one argument will be the
    /// previous step's output.
    pub fn link(self) -> Link<I, T> {
        Link {
            kicker: self.retype(),
            _types: PhantomData,
        }
    }
}

impl<T: DeserializeOwned> Call<T> {
    /// A chain: this call, then `next` with this call's output.
    pub fn then<U: DeserializeOwned>(self, next: Link<T, U>) -> Chain<U> {
        Chain {
            first: self.erase(),
            rest: vec![next.kicker],
            _output: PhantomData,
        }
    }

    /// Sends this call alone (as [`Kicker::kiq`] would).
    pub async fn kiq(self, broker: &Broker) -> Result<TaskHandle<T>, DispatchError> {
        Chain::<T> {
            first: self.erase(),
            rest: Vec::new(),
            _output: PhantomData,
        }
        .kiq(broker)
        .await
    }

    fn erase(self) -> Call<()> {
        Call {
            kicker: self.kicker,
            args: self.args,
            _output: PhantomData,
        }
    }
}

/// Tasks run one after another, each given the previous one's output. If a step fails for
/// good (after its retries), the steps after it do not run: they fail with kind `aborted`.
#[derive(Debug)]
pub struct Chain<T> {
    first: Call<()>,
    rest: Vec<Kicker<(), ()>>,
    _output: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Chain<T> {
    /// Adds a step that gets this chain's output.
    pub fn then<U: DeserializeOwned>(mut self, next: Link<T, U>) -> Chain<U> {
        self.rest.push(next.kicker);
        Chain {
            first: self.first,
            rest: self.rest,
            _output: PhantomData,
        }
    }

    /// Sends the chain's first step; returns a handle on its last step's output. Every step
    /// has a `pending` record from now on.
    pub async fn kiq(self, broker: &Broker) -> Result<TaskHandle<T>, DispatchError> {
        let now = envelope::now_ms();
        let (first, due) = step_envelope(broker, &self.first.kicker, self.first.args, now)?;
        let mut later = Vec::with_capacity(self.rest.len());
        for k in &self.rest {
            later.push(step_envelope(broker, k, Ok(Vec::new()), now)?.0);
        }
        let last_id = later.last().map_or(first.id.clone(), |e| e.id.clone());
        broker
            .send_chain(first, due, later)
            .await
            .map(|_| broker.handle(last_id))
    }
}

/// Tasks sent together (pipelined) and gathered together; optionally a callback once all of
/// them have finished.
#[derive(Debug)]
pub struct Group<T> {
    members: Vec<Call<()>>,
    _output: PhantomData<fn() -> T>,
}

/// A group of `calls`, all with the same output type.
pub fn group<T: DeserializeOwned>(calls: impl IntoIterator<Item = Call<T>>) -> Group<T> {
    Group {
        members: calls.into_iter().map(Call::erase).collect(),
        _output: PhantomData,
    }
}

impl<T: DeserializeOwned> Group<T> {
    /// Runs `callback` with every member's output, in member order, once all have finished.
    /// If any member fails for good, the callback does not run: it fails with kind `aborted`
    /// and the member's error.
    pub fn then<U: DeserializeOwned>(self, callback: Link<Vec<T>, U>) -> Chord<T, U> {
        Chord {
            group: self,
            callback: callback.kicker,
            _output: PhantomData,
        }
    }

    /// Sends every member in one pipeline.
    pub async fn kiq(self, broker: &Broker) -> Result<GroupHandle<T>, DispatchError> {
        Ok(send_group(broker, self.members, None).await?.0)
    }
}

/// A group and its callback (what Celery calls a chord).
#[derive(Debug)]
pub struct Chord<T, U> {
    group: Group<T>,
    callback: Kicker<(), ()>,
    _output: PhantomData<fn() -> U>,
}

impl<T: DeserializeOwned, U: DeserializeOwned> Chord<T, U> {
    /// Sends the members; the callback is sent by whichever worker finishes the last one.
    pub async fn kiq(
        self,
        broker: &Broker,
    ) -> Result<(GroupHandle<T>, TaskHandle<U>), DispatchError> {
        let (group, callback) = send_group(broker, self.group.members, Some(self.callback)).await?;
        let id = callback.unwrap_or_default();
        Ok((group, broker.handle(id)))
    }
}

/// The members of a sent group.
#[derive(Debug, Clone)]
pub struct GroupHandle<T> {
    /// The group id.
    pub id: String,
    /// One handle per member, in order.
    pub handles: Vec<TaskHandle<T>>,
}

impl<T: DeserializeOwned> GroupHandle<T> {
    /// Waits (all within `timeout`) for every member; one result per member, in order.
    pub async fn gather(&self, timeout: Duration) -> Vec<Result<T, WaitError>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let waits = self.handles.iter().map(|h| async move {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            h.wait_result(left).await
        });
        futures_util::future::join_all(waits).await
    }

    /// Like [`GroupHandle::gather`], but every output or the first error.
    pub async fn gather_all(&self, timeout: Duration) -> Result<Vec<T>, WaitError> {
        self.gather(timeout).await.into_iter().collect()
    }
}

/// The envelope of one step, and when it is due.
fn step_envelope(
    broker: &Broker,
    kicker: &Kicker<(), ()>,
    args: Result<Vec<u8>, CodecError>,
    now: u64,
) -> Result<(Envelope, Option<u64>), DispatchError> {
    let args = args.map_err(|error| DispatchError::Encode {
        task: kicker.spec.name.to_string(),
        error,
    })?;
    if let Some((key, _)) = &kicker.unique {
        return Err(DispatchError::Invalid {
            what: "unique key (not supported in workflows)",
            value: key.clone(),
        });
    }
    let d = kicker.raw_dispatch(args);
    let due = d.due_ms;
    Ok((broker.envelope_for(d, now)?, due))
}

async fn send_group<T: DeserializeOwned>(
    broker: &Broker,
    members: Vec<Call<()>>,
    callback: Option<Kicker<(), ()>>,
) -> Result<(GroupHandle<T>, Option<String>), DispatchError> {
    if members.is_empty() {
        return Err(DispatchError::Invalid {
            what: "group (it has no members)",
            value: String::new(),
        });
    }
    let now = envelope::now_ms();
    let group_id = envelope::new_task_id();
    let mut msgs = Vec::with_capacity(members.len());
    for (index, m) in members.into_iter().enumerate() {
        let (mut env, due) = step_envelope(broker, &m.kicker, m.args, now)?;
        env.group = Some(GroupRef {
            id: group_id.clone(),
            index: index as u32,
        });
        msgs.push(broker.outgoing(env, due, None)?);
    }
    let callback = match callback {
        None => None,
        Some(k) => {
            let (mut env, _) = step_envelope(broker, &k, Ok(Vec::new()), now)?;
            env.gather = msgs.iter().map(|m| m.id.clone()).collect();
            Some(broker.outgoing(env, None, None)?)
        }
    };
    let callback_id = callback.as_ref().map(|c| c.id.clone());
    let ids = broker.send_group(&group_id, callback, msgs).await?;
    let handles = ids.into_iter().map(|id| broker.handle(id)).collect();
    Ok((
        GroupHandle {
            id: group_id,
            handles,
        },
        callback_id,
    ))
}

impl Broker {
    /// Sends a chain: `first` (due at `due`) carrying `later`, after writing the later steps'
    /// pending records.
    async fn send_chain(
        &self,
        mut first: Envelope,
        due: Option<u64>,
        later: Vec<Envelope>,
    ) -> Result<String, DispatchError> {
        let broker_err = |task: &str, error| DispatchError::Broker {
            task: task.to_string(),
            error,
        };
        if let Some(m) = self.memory() {
            for step in &later {
                m.set_record(
                    &step.id,
                    crate::broker::pending_record_struct(
                        &step.task,
                        &step.queue,
                        step.enqueued_at_ms,
                        false,
                    ),
                );
            }
            first.then = later;
            let msg = self.outgoing(first, due, None)?;
            return self.enqueue(msg).await;
        }
        let mut pipe = redis::pipe();
        for step in &later {
            // The worker that finishes the step before sends it: its lane must have a group.
            self.ensure_group(&step.priority.lane(&step.queue))
                .await
                .map_err(|e| broker_err(&step.task, e))?;
            let record =
                crate::broker::pending_record(&step.task, &step.queue, step.enqueued_at_ms, false)
                    .map_err(|error| DispatchError::Encode {
                        task: step.task.clone(),
                        error,
                    })?;
            pipe.cmd("SET")
                .arg(self.keys().task(&step.id))
                .arg(record)
                .arg("EX")
                .arg(self.config().pending_ttl.as_secs().max(1))
                .ignore();
        }
        if !later.is_empty() {
            self.pool()
                .query::<(), _>(&pipe)
                .await
                .map_err(|e| broker_err(&first.task, e))?;
        }
        first.then = later;
        let msg = self.outgoing(first, due, None)?;
        self.enqueue(msg).await
    }

    /// Sends a group's members, after storing its size and callback.
    async fn send_group(
        &self,
        group_id: &str,
        callback: Option<crate::broker::OutgoingMessage>,
        members: Vec<crate::broker::OutgoingMessage>,
    ) -> Result<Vec<String>, DispatchError> {
        let task = members.first().map(|m| m.task.clone()).unwrap_or_default();
        let broker_err = |error| DispatchError::Broker {
            task: task.clone(),
            error,
        };
        if let Some(m) = self.memory() {
            if let Some(cb) = &callback {
                if let Ok(r) = crate::codec::decode(&cb.pending_record) {
                    m.set_record(&cb.id, r);
                }
            }
            m.register_group(
                group_id,
                members.len(),
                callback.map(|cb| (cb.lane, cb.payload)),
            );
            return self.enqueue_many(members).await;
        }
        let ttl = self.config().pending_ttl.as_secs().max(1);
        let key = self.keys().group(group_id);
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(&key)
            .arg("size")
            .arg(members.len())
            .ignore();
        if let Some(cb) = &callback {
            self.ensure_group(&cb.lane).await.map_err(broker_err)?;
            pipe.cmd("HSET")
                .arg(&key)
                .arg("callback")
                .arg(&cb.payload)
                .arg("callback_stream")
                .arg(self.keys().stream(&cb.lane))
                .ignore();
            pipe.cmd("SET")
                .arg(self.keys().task(&cb.id))
                .arg(cb.pending_record.as_slice())
                .arg("EX")
                .arg(ttl)
                .ignore();
        }
        pipe.cmd("EXPIRE").arg(&key).arg(ttl).ignore();
        self.pool()
            .query::<(), _>(&pipe)
            .await
            .map_err(broker_err)?;
        self.enqueue_many(members).await
    }
}
