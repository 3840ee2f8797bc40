//! The scheduler's surface: a [`Control`] holds the lease, keeps the stored schedules, and
//! fires ticks through the broker's one enqueue path.

#[allow(clippy::module_inception)]
mod control;

pub use control::{Control, LeaseInfo, ScheduleState, Tick, TickOutcome};
