//! A circuit breaker per task name: stop running a task that keeps failing, for a while.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::{Middleware, Next, Outcome, TaskCall};

/// Opens a task's circuit after `failures` consecutive failures (errors, panics, timeouts).
/// While open, that task's messages are deferred until the cool-down ends, not failed; then
/// one trial runs (half-open): its success closes the circuit, its failure opens it again.
///
/// The state is per worker process: each process learns on its own.
#[derive(Debug)]
pub struct CircuitBreaker {
    failures: u32,
    cool_down: Duration,
    only: Option<Vec<String>>,
    circuits: Mutex<HashMap<String, Circuit>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Circuit {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// What a circuit lets a task do now.
enum Admit {
    Run { trial: bool },
    Defer(Duration),
}

impl CircuitBreaker {
    /// Breaks after `failures` consecutive failures (at least 1), for `cool_down`.
    pub fn new(failures: u32, cool_down: Duration) -> Self {
        Self {
            failures: failures.max(1),
            cool_down,
            only: None,
            circuits: Mutex::new(HashMap::new()),
        }
    }

    /// Applies only to these task names (by default, to every task, each with its own circuit).
    pub fn only<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.only = Some(names.into_iter().map(Into::into).collect());
        self
    }

    fn applies(&self, name: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == name))
    }

    fn admit(&self, name: &str) -> Admit {
        let Ok(mut circuits) = self.circuits.lock() else {
            return Admit::Run { trial: false };
        };
        let c = circuits
            .entry(name.to_string())
            .or_insert(Circuit::Closed { failures: 0 });
        match *c {
            Circuit::Closed { .. } => Admit::Run { trial: false },
            Circuit::Open { until } => {
                let now = Instant::now();
                if now >= until {
                    *c = Circuit::HalfOpen;
                    Admit::Run { trial: true }
                } else {
                    Admit::Defer(until - now)
                }
            }
            // A trial is running: the others wait for its verdict.
            Circuit::HalfOpen => Admit::Defer(self.cool_down.min(Duration::from_secs(1))),
        }
    }

    fn record(&self, name: &str, trial: bool, outcome: &Outcome) {
        let Ok(mut circuits) = self.circuits.lock() else {
            return;
        };
        let c = circuits
            .entry(name.to_string())
            .or_insert(Circuit::Closed { failures: 0 });
        let failed = outcome.is_task_failure();
        let next = match (*c, failed) {
            (_, false) if matches!(outcome, Outcome::Deferred { .. }) => {
                // A deferral says nothing of the task's health; a deferred trial frees the slot.
                if trial {
                    Circuit::Open {
                        until: Instant::now(),
                    }
                } else {
                    *c
                }
            }
            (_, false) => Circuit::Closed { failures: 0 },
            (Circuit::Closed { failures }, true) if failures + 1 < self.failures => {
                Circuit::Closed {
                    failures: failures + 1,
                }
            }
            (Circuit::Open { until }, true) if !trial => Circuit::Open { until },
            (_, true) => {
                tracing::warn!(
                    task = name,
                    cool_down_ms = self.cool_down.as_millis() as u64,
                    "circuit opened: the task keeps failing; deferring it"
                );
                Circuit::Open {
                    until: Instant::now() + self.cool_down,
                }
            }
        };
        if matches!(*c, Circuit::HalfOpen | Circuit::Open { .. })
            && matches!(next, Circuit::Closed { .. })
        {
            tracing::info!(task = name, "circuit closed: the task succeeded again");
        }
        *c = next;
    }
}

impl Middleware for CircuitBreaker {
    fn call<'a>(&'a self, task: &'a TaskCall<'a>, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let name = task.envelope.task.as_str();
            if !self.applies(name) {
                return next.run(task).await;
            }
            match self.admit(name) {
                Admit::Defer(after) => Outcome::Deferred {
                    after,
                    reason: "circuit open".into(),
                },
                Admit::Run { trial } => {
                    let outcome = next.run(task).await;
                    self.record(name, trial, &outcome);
                    outcome
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiq_broker::{FailureKind, TaskFailure};

    fn fail() -> Outcome {
        Outcome::Finished(Err(TaskFailure::new(FailureKind::Error, "x")))
    }

    #[test]
    fn opens_after_consecutive_failures_and_half_opens_after_the_cool_down() {
        let cb = CircuitBreaker::new(3, Duration::from_millis(50));
        for _ in 0..2 {
            assert!(matches!(cb.admit("t"), Admit::Run { trial: false }));
            cb.record("t", false, &fail());
        }
        // A success in between resets the count.
        cb.record("t", false, &Outcome::Finished(Ok(vec![])));
        for _ in 0..3 {
            assert!(matches!(cb.admit("t"), Admit::Run { .. }));
            cb.record("t", false, &fail());
        }
        assert!(matches!(cb.admit("t"), Admit::Defer(_)));
        assert!(
            matches!(cb.admit("other"), Admit::Run { .. }),
            "per task name"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert!(matches!(cb.admit("t"), Admit::Run { trial: true }));
        assert!(
            matches!(cb.admit("t"), Admit::Defer(_)),
            "one trial at a time"
        );
        cb.record("t", true, &fail());
        assert!(
            matches!(cb.admit("t"), Admit::Defer(_)),
            "a failed trial re-opens"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert!(matches!(cb.admit("t"), Admit::Run { trial: true }));
        cb.record("t", true, &Outcome::Finished(Ok(vec![])));
        assert!(matches!(cb.admit("t"), Admit::Run { trial: false }));
    }

    #[test]
    fn cancellations_and_bad_arguments_do_not_count() {
        let cb = CircuitBreaker::new(1, Duration::from_secs(60));
        for kind in [FailureKind::Cancelled, FailureKind::BadArguments] {
            cb.record(
                "t",
                false,
                &Outcome::Finished(Err(TaskFailure::new(kind, "x"))),
            );
        }
        assert!(matches!(cb.admit("t"), Admit::Run { .. }));
    }
}
