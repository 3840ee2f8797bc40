//! Taskiq interop: Python Taskiq (taskiq-redis) producers and workers exchange tasks and
//! results with kiq, both ways.
//!
//! - [`TaskiqStream`]: a Taskiq stream, its group, and its result backend's settings.
//! - A worker serves a stream through a [`TaskiqReader`] (`Consumer::taskiq_reader`): each
//!   message is handed on to the named task's kiq queue with a [`TaskiqReply`], so it gets all
//!   of kiq's guarantees, and its result is written where Python reads it.
//! - A producer sends to Python workers with a [`TaskiqClient`] (`Broker::taskiq`), or a typed
//!   [`RemoteTask`], and waits on a [`TaskiqHandle`].
//! - The formats: [`TaskiqMessage`] (JSON), [`TaskiqResult`] (pickle or JSON), and [`pickle`],
//!   read and written as plain data only.

mod client;
mod message;
pub mod pickle;
mod reader;
mod result;
mod stream;

pub use crate::model::reply::{ResultFormat, TaskiqReply};
pub use client::{RemoteTask, TaskiqCall, TaskiqClient, TaskiqHandle};
pub use message::{bind_args, KnownLabels, MessageError, TaskiqMessage};
pub use reader::{Settle, TaskiqReader, KIQ_CONSUMER_PREFIX};
pub use result::{ResultError, TaskiqException, TaskiqResult};
pub use stream::{TaskiqEntry, TaskiqStream, HOPS_FIELD};
