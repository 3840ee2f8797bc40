//! The scheduler's errors.

use crate::expr::ScheduleError;

/// Why a scheduler operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// A schedule expression or definition is invalid.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// Something else about a schedule is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The fired task could not be built or enqueued.
    #[error(transparent)]
    Dispatch(kiq_broker::DispatchError),
    /// Redis failed.
    #[error(transparent)]
    Broker(kiq_broker::BrokerError),
}
