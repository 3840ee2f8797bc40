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

use super::broker::Broker;
use super::dispatch::OutgoingMessage;
use super::handle::TaskHandle;
use super::kicker::Kicker;
use crate::codec::{CodecError, ValueCodec};
use crate::error::{DispatchError, WaitError};
use crate::model::envelope::{self, Envelope, GroupRef};

/// A task with its arguments and options, not sent yet: the first step of a [`Chain`] or a
/// member of a [`Group`]. Made by [`Kicker::with_args`] (or `my_task::call(...)`).
pub struct Call<T> {
    kicker: Kicker<(), ()>,
    /// Encodes the arguments with the codec of the broker the call is sent through.
    args: EncodeArgs,
    _output: PhantomData<fn() -> T>,
}

type EncodeArgs = Box<dyn FnOnce(ValueCodec) -> Result<Vec<u8>, CodecError> + Send>;

impl<T> std::fmt::Debug for Call<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("kicker", &self.kicker)
            .finish()
    }
}

/// A task that takes the previous step's output (an `I`) as its one argument: a later step of
/// a [`Chain`], or a group's callback (then `I` is `Vec<T>`). Made by [`Kicker::link`] (or
/// `my_task::link()`).
#[derive(Debug)]
pub struct Link<I, T> {
    kicker: Kicker<(), ()>,
    _types: PhantomData<fn(I) -> T>,
}

impl<A: serde::Serialize + Send + 'static, T: DeserializeOwned> Kicker<A, T> {
    /// These options with `args`, as a step of a workflow.
    pub fn with_args(self, args: A) -> Call<T> {
        Call {
            args: Box::new(move |codec: ValueCodec| codec.encode(&args)),
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
        let args = (self.first.args)(broker.codec());
        let (first, due) = step_envelope(broker, &self.first.kicker, args, now)?;
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
    if members.len() > envelope::MAX_GROUP_MEMBERS {
        return Err(DispatchError::OverLimit {
            task: members[0].kicker.spec().name.to_string(),
            reason: format!(
                "a group of {} members, over the limit of {}",
                members.len(),
                envelope::MAX_GROUP_MEMBERS
            ),
        });
    }
    let now = envelope::now_ms();
    let group_id = envelope::new_task_id();
    // The callback's envelope first: its lane goes into every member's group reference. Its
    // `gather` (the members' ids) is filled in once they have ids.
    let callback = match callback {
        None => None,
        Some(k) => Some(step_envelope(broker, &k, Ok(Vec::new()), now)?.0),
    };
    // On a partitioned queue, the callback's id picks its partition now: the group's hash
    // lives in that partition's slot.
    let callback_lane = match &callback {
        None => None,
        Some(c) => Some(
            broker
                .backend()
                .route_lane(&c.priority.lane(&c.queue), &c.id)
                .await
                .map_err(|error| DispatchError::Broker {
                    task: c.task.clone(),
                    id: Some(c.id.clone()),
                    error,
                })?,
        ),
    };
    let mut msgs = Vec::with_capacity(members.len());
    for (index, m) in members.into_iter().enumerate() {
        let args = (m.args)(broker.codec());
        let (mut env, due) = step_envelope(broker, &m.kicker, args, now)?;
        env.group = Some(GroupRef {
            id: group_id.clone(),
            index: index as u32,
            callback_lane: callback_lane.clone(),
        });
        msgs.push(broker.outgoing(env, due, None)?);
    }
    let callback = match callback {
        None => None,
        Some(mut env) => {
            env.gather = msgs.iter().map(|m| m.id.clone()).collect();
            let mut msg = broker.outgoing(env, None, None)?;
            if let Some(lane) = &callback_lane {
                msg.lane = lane.clone();
            }
            Some(msg)
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
        self.backend().prepare_chain(&later).await?;
        first.then = later;
        let msg = self.outgoing(first, due, None)?;
        self.enqueue(msg).await
    }

    /// Sends a group's members, after storing its size and callback.
    async fn send_group(
        &self,
        group_id: &str,
        callback: Option<OutgoingMessage>,
        members: Vec<OutgoingMessage>,
    ) -> Result<Vec<String>, DispatchError> {
        let task = members.first().map(|m| m.task.clone()).unwrap_or_default();
        self.backend()
            .register_group(group_id, members.len(), callback.as_ref(), &task)
            .await?;
        self.enqueue_many(members).await
    }
}
