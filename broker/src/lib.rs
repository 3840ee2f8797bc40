//! kiq's broker: the message envelope, the wire codec, the Redis streams broker, the result
//! store and task handles.
//!
//! Most users reach this through the `kiq` facade crate. The pieces:
//! - [`Envelope`] and [`codec`]: what a message is and how it is encoded (MessagePack).
//! - [`Broker`]: connects to Redis, enqueues ([`Kicker`]), and gives workers their
//!   [`StreamReader`] and [`Broker::complete`].
//! - [`TaskRecord`]: a task's state and result, stored with a TTL.
//! - [`TaskHandle`]: `wait_result(timeout)` for a typed output, woken by pub/sub.
#![warn(missing_docs)]

pub mod broker;
pub mod cancel;
pub mod codec;
pub mod config;
pub mod connection;
pub mod dead;
pub mod delayed;
pub mod dispatch_layer;
pub mod envelope;
pub mod error;
pub mod handle;
pub mod keys;
pub mod memory;
pub mod priority;
pub mod rate_limit;
pub mod record;
pub mod recovery;
pub mod retry;
pub mod status;
pub mod task;
pub mod tasks;
pub mod trace_context;
mod waiter;
pub mod workflow;

pub use broker::{
    Broker, Completion, DeadLetter, Delivery, Finished, OutgoingMessage, RawDispatch, ReadBatch,
    StreamReader,
};
pub use cancel::CancelOutcome;
pub use codec::{Codec, CodecError, MsgPack};
pub use config::BrokerConfig;
pub use dead::{DeadEntry, DeadFilter};
pub use delayed::Promotion;
pub use dispatch_layer::DispatchLayer;
pub use envelope::Envelope;
pub use error::{BrokerError, DispatchError, WaitError};
pub use handle::TaskHandle;
pub use keys::Keys;
pub use memory::LocalRunner;
pub use priority::Priority;
pub use record::{FailureKind, StateChange, TaskFailure, TaskRecord, TaskState};
pub use recovery::Reclaimed;
pub use retry::{Backoff, RetryPolicy};
pub use status::{QueueStats, WorkerInfo};
pub use task::{Kicker, TaskSpec};
pub use workflow::{group, Call, Chain, Chord, Group, GroupHandle, Link};

/// Re-exported for generated code and advanced users.
pub use redis;
