//! kiq's scheduler.
#![warn(missing_docs)]

pub mod expr;

pub use expr::{ScheduleError, ScheduleExpr};
