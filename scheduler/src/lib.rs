//! kiq's scheduler: cron schedules that fire tasks exactly once per tick, whatever the number
//! of scheduler replicas.
//!
//! - [`expr`]: schedule expressions (cron with Unix weekdays, shorthands, `@every`, one-shot)
//!   and their next fire time in any IANA zone, DST included.
//! - [`def`] and [`store`]: schedules stored in Redis, managed at run time ([`Schedules`]).
//! - [`runner`]: the scheduler loop ([`Scheduler::run`]): one active scheduler under the
//!   broker's lease ([`kiq_broker::Control`]) with a fencing token; each tick is decided under
//!   the lease in one step, then delivered through the broker's idempotent enqueue.
//! - [`taskiq`]: a Python Taskiq app's stored schedules, served read-only by the same loop.
#![warn(missing_docs)]

pub mod def;
pub mod error;
pub mod expr;
pub mod runner;
pub mod store;
pub mod taskiq;

pub use def::{fire_id, Misfire, ScheduleDef, ScheduleStatus};
pub use error::SchedulerError;
pub use expr::{ScheduleError, ScheduleExpr};
pub use runner::{Scheduler, SchedulerConfig, SchedulerReport};
pub use store::Schedules;
pub use taskiq::TaskiqSchedules;
