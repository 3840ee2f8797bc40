//! What becomes of a task after an attempt, decided from the attempt's result, the retry
//! policy and the attempt count alone: a pure function, apart from the mechanism that carries
//! it out (`execute::dispose`), as tower keeps `retry::Policy` apart from the retry layer.

use kiq_broker::{FailureKind, RetryPolicy, TaskFailure, TaskState};

/// The decision after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The task is done: `Succeeded`, `Failed` or `Cancelled`.
    Finish(TaskState),
    /// Tried again: this is retry number `retry` (1 for the first), after the policy's delay.
    Retry {
        /// The retry's number.
        retry: u32,
    },
    /// Failed for good, and its message goes to the dead letters with `reason`.
    Dead {
        /// `unknown_task`, `bad_arguments` or `retries_exhausted`.
        reason: &'static str,
    },
}

/// Decides what becomes of a task whose attempt number `attempts` (1 for the first) ended
/// with `result`, under `policy`.
///
/// - Success finishes it.
/// - A retryable failure (an error, a panic, a timeout) is retried while the policy allows.
/// - A cancellation finishes it as cancelled.
/// - Any other failure finishes it as failed, or dead when it can never succeed as sent (an
///   unknown task, bad arguments) or when it exhausted retries it was given.
pub fn decide(result: Result<(), &TaskFailure>, policy: &RetryPolicy, attempts: u32) -> Decision {
    let f = match result {
        Ok(()) => return Decision::Finish(TaskState::Succeeded),
        Err(f) => f,
    };
    if f.kind.is_retryable() && policy.allows_another(attempts) {
        return Decision::Retry { retry: attempts };
    }
    match f.kind {
        FailureKind::Cancelled => Decision::Finish(TaskState::Cancelled),
        FailureKind::UnknownTask => Decision::Dead {
            reason: "unknown_task",
        },
        FailureKind::BadArguments => Decision::Dead {
            reason: "bad_arguments",
        },
        _ if policy.max_retries > 0 => Decision::Dead {
            reason: "retries_exhausted",
        },
        _ => Decision::Finish(TaskState::Failed),
    }
}

impl Decision {
    /// The state the task's record takes.
    pub fn state(self) -> TaskState {
        match self {
            Decision::Finish(state) => state,
            Decision::Retry { .. } => TaskState::Retrying,
            Decision::Dead { .. } => TaskState::Dead,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(kind: FailureKind) -> TaskFailure {
        TaskFailure::new(kind, "x")
    }

    #[test]
    fn success_finishes() {
        assert_eq!(
            decide(Ok(()), &RetryPolicy::retries(3), 1),
            Decision::Finish(TaskState::Succeeded)
        );
    }

    #[test]
    fn retryable_failures_retry_while_the_policy_allows() {
        let p = RetryPolicy::retries(2);
        for kind in [FailureKind::Error, FailureKind::Panic, FailureKind::Timeout] {
            assert_eq!(
                decide(Err(&fail(kind)), &p, 1),
                Decision::Retry { retry: 1 }
            );
            assert_eq!(
                decide(Err(&fail(kind)), &p, 2),
                Decision::Retry { retry: 2 }
            );
            assert_eq!(
                decide(Err(&fail(kind)), &p, 3),
                Decision::Dead {
                    reason: "retries_exhausted"
                }
            );
        }
    }

    #[test]
    fn without_retries_a_failure_just_fails() {
        assert_eq!(
            decide(Err(&fail(FailureKind::Error)), &RetryPolicy::NONE, 1),
            Decision::Finish(TaskState::Failed)
        );
        assert_eq!(
            decide(Err(&fail(FailureKind::Aborted)), &RetryPolicy::NONE, 1),
            Decision::Finish(TaskState::Failed)
        );
    }

    #[test]
    fn messages_that_can_never_succeed_are_dead_at_once() {
        let p = RetryPolicy::retries(5);
        assert_eq!(
            decide(Err(&fail(FailureKind::UnknownTask)), &p, 1),
            Decision::Dead {
                reason: "unknown_task"
            }
        );
        assert_eq!(
            decide(Err(&fail(FailureKind::BadArguments)), &RetryPolicy::NONE, 1),
            Decision::Dead {
                reason: "bad_arguments"
            }
        );
    }

    #[test]
    fn cancellation_is_never_retried() {
        assert_eq!(
            decide(
                Err(&fail(FailureKind::Cancelled)),
                &RetryPolicy::retries(5),
                1
            ),
            Decision::Finish(TaskState::Cancelled)
        );
    }

    #[test]
    fn decisions_name_the_record_state() {
        assert_eq!(Decision::Retry { retry: 1 }.state(), TaskState::Retrying);
        assert_eq!(Decision::Dead { reason: "x" }.state(), TaskState::Dead);
    }
}
