//! Running one delivered message, in three steps: `decode` its envelope, `run` the task
//! (middleware, timeout, cancellation, panics caught), and `dispose` of the result (the
//! record, the end, the effects), as the pure policy in [`crate::outcome`] decides.

mod decode;
mod dispose;
mod executor;
mod run;
mod running;

pub use dispose::poisoned;
pub use executor::Executor;
pub use run::RUNNING_MARK_AFTER;
pub use running::RunningTasks;
