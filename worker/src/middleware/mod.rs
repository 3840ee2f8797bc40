//! Middleware around task execution, in the manner of tower layers.
//!
//! A [`Middleware`] gets each task before it runs and decides what happens: call
//! [`Next::run`] to go on (to the next layer, and finally the task), or return without it to
//! refuse or defer the task. Whatever the task returns passes back out through the same
//! layers, so a layer can time, log or count outcomes.
//!
//! Layers are installed per worker ([`crate::Worker::layer`]) or for every worker of the
//! process ([`install`], e.g. in your `taskctl` binary's `main` before `kiq::cli::main()`).
//! The first installed is the outermost.
//!
//! Built in:
//! - [`RateLimit`]: a token bucket per task name in Redis, shared by every worker.
//! - [`CircuitBreaker`]: per task name, opens after N consecutive failures; while open,
//!   tasks are deferred, not failed.
//! - [`Trace`]: logs each task's start and outcome with its duration.
//!
//! ```
//! use kiq_worker::middleware::{Middleware, Next, Outcome, TaskCall};
//! use futures_util::future::BoxFuture;
//!
//! /// Refuses tasks whose `tenant` label is missing.
//! struct RequireTenant;
//!
//! impl Middleware for RequireTenant {
//!     fn call<'a>(&'a self, task: &'a TaskCall<'a>, next: Next<'a>) -> BoxFuture<'a, Outcome> {
//!         Box::pin(async move {
//!             if !task.envelope.labels.contains_key("tenant") {
//!                 return Outcome::failed("a tenant label is required");
//!             }
//!             next.run(task).await
//!         })
//!     }
//! }
//! ```

mod circuit_breaker;
mod rate_limit;
mod trace;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use kiq_broker::{Consumer, Envelope, FailureKind, TaskFailure};

pub use circuit_breaker::CircuitBreaker;
pub use rate_limit::{RateLimit, RateLimitRule};
pub use trace::Trace;

/// What a layer sees of a task about to run.
#[derive(Debug)]
pub struct TaskCall<'a> {
    /// The message: id, task name, queue, attempt, labels and arguments.
    pub envelope: &'a Envelope,
    /// The worker's consumer (on an in-memory broker for unit tests): shared state such as
    /// rate-limit buckets is reached through it.
    pub consumer: &'a Consumer,
}

/// How a task's run ended, as it passes back out through the layers.
#[derive(Debug)]
pub enum Outcome {
    /// It ran (or a layer refused it): the encoded output, or why it failed. Failures follow
    /// the task's retry policy.
    Finished(Result<Vec<u8>, TaskFailure>),
    /// Not run now: put back and started again after `after`. Not an attempt, not a failure.
    Deferred {
        /// How long to wait.
        after: Duration,
        /// Why, for logs.
        reason: String,
    },
}

impl Outcome {
    /// A failure (kind `error`) with `message`, as if the task had returned `Err`.
    pub fn failed(message: impl Into<String>) -> Self {
        Outcome::Finished(Err(TaskFailure::new(FailureKind::Error, message)))
    }

    /// Whether this outcome counts against the task's health: it returned an error, panicked
    /// or timed out (not a cancellation, bad arguments or a deferral).
    pub fn is_task_failure(&self) -> bool {
        matches!(
            self,
            Outcome::Finished(Err(f))
                if matches!(f.kind, FailureKind::Error | FailureKind::Panic | FailureKind::Timeout)
        )
    }
}

/// A layer around task execution.
pub trait Middleware: Send + Sync + 'static {
    /// Handles one task: usually does something, then `next.run(task).await`, then returns
    /// (possibly after looking at) its outcome.
    fn call<'a>(&'a self, task: &'a TaskCall<'a>, next: Next<'a>) -> BoxFuture<'a, Outcome>;
}

impl std::fmt::Debug for dyn Middleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Middleware")
    }
}

/// The rest of the stack below a layer: the inner layers, then the task itself.
pub struct Next<'a> {
    rest: &'a [Arc<dyn Middleware>],
    task: BoxFuture<'a, Outcome>,
}

impl<'a> Next<'a> {
    /// Runs the inner layers and the task.
    pub async fn run(self, call: &'a TaskCall<'a>) -> Outcome {
        match self.rest.split_first() {
            None => self.task.await,
            Some((layer, rest)) => {
                layer
                    .call(
                        call,
                        Next {
                            rest,
                            task: self.task,
                        },
                    )
                    .await
            }
        }
    }
}

/// Runs `task` (the handler's future, not yet polled) through `layers`, outermost first.
pub async fn run_layers<'a>(
    layers: &'a [Arc<dyn Middleware>],
    call: &'a TaskCall<'a>,
    task: BoxFuture<'a, Outcome>,
) -> Outcome {
    Next { rest: layers, task }.run(call).await
}

static INSTALLED: Mutex<Vec<Arc<dyn Middleware>>> = Mutex::new(Vec::new());

/// Adds `layer` to every worker this process starts from now on (after those installed
/// before it, and before each worker's own [`crate::Worker::layer`]s).
pub fn install(layer: impl Middleware) {
    if let Ok(mut l) = INSTALLED.lock() {
        l.push(Arc::new(layer));
    }
}

/// The layers installed process-wide.
pub fn installed() -> Vec<Arc<dyn Middleware>> {
    INSTALLED.lock().map(|l| l.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tag(&'static str, Arc<Mutex<Vec<&'static str>>>);

    impl Middleware for Tag {
        fn call<'a>(&'a self, task: &'a TaskCall<'a>, next: Next<'a>) -> BoxFuture<'a, Outcome> {
            Box::pin(async move {
                self.1.lock().unwrap().push(self.0);
                let out = next.run(task).await;
                self.1.lock().unwrap().push(self.0);
                out
            })
        }
    }

    struct Refuse;

    impl Middleware for Refuse {
        fn call<'a>(&'a self, _: &'a TaskCall<'a>, _: Next<'a>) -> BoxFuture<'a, Outcome> {
            Box::pin(async { Outcome::failed("refused") })
        }
    }

    #[tokio::test]
    async fn layers_wrap_in_order_and_may_stop_the_task() {
        let env = Envelope {
            id: "t".into(),
            task: "x".into(),
            queue: "q".into(),
            ..Default::default()
        };
        let broker = crate::local::in_memory_broker(crate::Registry::default());
        let consumer = broker.consumer("test");
        let call = TaskCall {
            envelope: &env,
            consumer: &consumer,
        };
        let log = Arc::new(Mutex::new(Vec::new()));
        let ran = Arc::new(Mutex::new(false));
        let layers: Vec<Arc<dyn Middleware>> = vec![
            Arc::new(Tag("outer", log.clone())),
            Arc::new(Tag("inner", log.clone())),
        ];
        let r = ran.clone();
        let out = run_layers(
            &layers,
            &call,
            Box::pin(async move {
                *r.lock().unwrap() = true;
                Outcome::Finished(Ok(vec![1]))
            }),
        )
        .await;
        assert!(matches!(out, Outcome::Finished(Ok(ref b)) if b == &[1]));
        assert!(*ran.lock().unwrap());
        assert_eq!(*log.lock().unwrap(), ["outer", "inner", "inner", "outer"]);

        let ran = Arc::new(Mutex::new(false));
        let r = ran.clone();
        let layers: Vec<Arc<dyn Middleware>> = vec![Arc::new(Refuse)];
        let out = run_layers(
            &layers,
            &call,
            Box::pin(async move {
                *r.lock().unwrap() = true;
                Outcome::Finished(Ok(vec![]))
            }),
        )
        .await;
        assert!(out.is_task_failure());
        assert!(
            !*ran.lock().unwrap(),
            "a refusing layer must not run the task"
        );
    }
}
