//! The worker's surface: a [`Consumer`] reads messages ([`Delivery`]), and writes back what
//! became of them ([`Write`]: a [`Completion`] with its [`End`] and [`Effect`]s, or a state
//! change).

pub(crate) mod completion;
#[allow(clippy::module_inception)]
pub(crate) mod consumer;
pub(crate) mod delivery;

pub use crate::backend::redis::queues::Gate;
pub use crate::backend::redis::reader::StreamReader;
pub use completion::{Completion, DeadLetter, Effect, End, StoredRecord, Write};
pub use consumer::Consumer;
pub use delivery::{Delivery, Notice, Promotion, ReadBatch, Reclaimed, WorkerInfo};
