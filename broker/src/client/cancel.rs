//! Cancelling tasks.

use super::broker::Broker;
use crate::error::BrokerError;
use crate::model::envelope::now_ms;
use crate::model::record::TaskRecord;

/// What [`Broker::cancel`] did. Serialized as [`CancelOutcome::as_str`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub enum CancelOutcome {
    /// The task will not run (or, if running, is being stopped).
    Cancelled,
    /// It had already finished; nothing changed.
    AlreadyFinished,
    /// No such task (or its record expired); nothing changed. Only said when dispatches write
    /// pending records (`track_pending`, the default): without them, an unknown id is
    /// indistinguishable from a queued task, and is cancelled.
    NotFound,
}

impl CancelOutcome {
    /// Its name in snake case (`cancelled`, `already_finished`, `not_found`), as the API and
    /// the CLI print it.
    pub fn as_str(&self) -> &'static str {
        match self {
            CancelOutcome::Cancelled => "cancelled",
            CancelOutcome::AlreadyFinished => "already_finished",
            CancelOutcome::NotFound => "not_found",
        }
    }
}

impl Broker {
    /// Cancels task `id`: if it is pending or delayed it never runs; if it is running, its
    /// cancellation token fires and it is stopped after the worker's grace period. Its result
    /// says cancelled. A task that already finished is left alone.
    pub async fn cancel(&self, id: &str) -> Result<CancelOutcome, BrokerError> {
        let previous = self.record(id).await?;
        if previous.is_none() && self.config().track_pending {
            return Ok(CancelOutcome::NotFound);
        }
        let record = TaskRecord::cancelled_on_request(previous.as_ref(), now_ms());
        Ok(if self.backend().cancel(id, record).await? {
            CancelOutcome::Cancelled
        } else {
            CancelOutcome::AlreadyFinished
        })
    }
}

#[cfg(test)]
mod tests {
    use super::CancelOutcome;

    /// The API serializes the outcome; the CLI prints `as_str`: the same names.
    #[test]
    fn serializes_as_its_name() {
        for o in [
            CancelOutcome::Cancelled,
            CancelOutcome::AlreadyFinished,
            CancelOutcome::NotFound,
        ] {
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
    }
}
