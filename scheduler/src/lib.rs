//! kiq's scheduler: cron schedules that fire tasks exactly once per tick, whatever the number
//! of scheduler replicas.
//!
//! - [`expr`]: schedule expressions (cron with Unix weekdays, shorthands, `@every`, one-shot)
//!   and their next fire time in any IANA zone, DST included.
//! - [`def`] and [`store`]: schedules stored in Redis, managed at run time ([`Schedules`]).
//! - [`lease`]: one active scheduler under a Redis lease with a fencing token.
//! - [`runner`]: the scheduler loop ([`Scheduler::run`]); each tick is enqueued by one atomic
//!   script that checks the lease and the tick's fire id.
#![warn(missing_docs)]

pub mod def;
pub mod error;
pub mod expr;
pub mod lease;
pub mod runner;
pub mod store;

pub use def::{fire_id, Misfire, ScheduleDef, ScheduleStatus};
pub use error::SchedulerError;
pub use expr::{ScheduleError, ScheduleExpr};
pub use runner::{Scheduler, SchedulerConfig, SchedulerReport};
pub use store::Schedules;
