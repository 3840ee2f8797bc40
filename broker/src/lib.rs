//! kiq's broker: everything between a task's dispatch and its result.
//!
//! One surface per role, over one backend seam:
//! - [`Broker`] ([`client`]): what producers hold: dispatch ([`Kicker`], workflows) and
//!   waiting ([`TaskHandle`]), progress and cancellation.
//! - [`Consumer`] ([`consumer`]): what a worker reads and writes, from [`Broker::consumer`].
//! - [`Inspector`] ([`inspector`]): what operators' tools read, from [`Broker::inspector`].
//! - [`Control`] ([`control`]): the scheduler's lease and schedules, from [`Broker::control`].
//! - The backend (Redis, or in-memory for unit tests) is chosen when the broker is made; all
//!   Redis commands and Lua scripts (`broker/lua/*.lua`) live in its Redis variant.
//! - [`taskiq`]: Python Taskiq producers and workers exchange tasks and results with kiq.
//! - [`model`]: the stable types every role speaks ([`Envelope`], [`TaskRecord`], ...), and
//!   [`codec`]: the value codec and the wire format a broker holds.
#![warn(missing_docs)]

mod backend;
pub mod client;
pub mod codec;
pub mod config;
pub mod consumer;
pub mod control;
pub mod error;
pub mod inspector;
pub mod keys;
pub mod model;
pub mod taskiq;

pub use backend::memory::LocalRunner;
#[cfg(feature = "raw-redis")]
pub use backend::redis::connection::{connect_redis, RedisConnection};
pub use client::{
    group, valid_queue_name, workflow, Broker, Call, CancelOutcome, Chain, Chord, DispatchLayer,
    Group, GroupHandle, Kicker, Link, OutgoingMessage, RawDispatch, TaskHandle, TaskSpec,
};
pub use codec::{CodecError, KiqWire, ValueCodec, WireFormat};
pub use config::BrokerConfig;
pub use consumer::{
    Completion, Consumer, DeadLetter, Delivery, Effect, End, Gate, Notice, Promotion, ReadBatch,
    Reclaimed, StoredRecord, StreamReader, WorkerInfo, Write,
};
pub use control::{Control, LeaseInfo, ScheduleState, Tick, TickOutcome};
pub use error::{BrokerError, DispatchError, RedisErrorKind, RedisFailure, WaitError};
pub use inspector::{
    DeadCursor, DeadEntry, DeadFilter, DeadPage, Inspector, QueueStats, TaskCursor, TaskPage,
    TaskSummary,
};
pub use keys::Keys;
pub use model::envelope::{self, Envelope, GroupRef};
pub use model::history::{self, Counters, History, HistoryPoint, LastFailure, TaskTotals};
pub use model::partition;
pub use model::priority::{self, Priority};
pub use model::record::{
    self, FailureKind, FailureView, StateChange, StateChangeView, TaskFailure, TaskRecord,
    TaskState, TaskView,
};
pub use model::retry::{self, Backoff, RetryPolicy};
pub use model::trace_context;
