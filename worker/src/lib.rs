//! kiq's worker side: the task registry, the execution runtime of one worker process, and the
//! supervisor that runs N of them.
//!
//! - [`registry`]: `#[task]` functions collected at link time ([`Registry::linked`]).
//! - [`Worker`]: one process's consumer loop ([`Worker::run`]).
//! - [`supervisor`]: `taskctl worker --workers N`.
#![warn(missing_docs)]

pub mod completer;
pub mod config;
pub mod context;
pub mod execute;
pub mod handler;
pub mod inflight;
pub mod local;
pub mod metrics;
pub mod middleware;
pub mod registry;
pub mod runtime;
pub mod state;
pub mod supervisor;
pub mod workflow;

pub use config::WorkerConfig;
pub use context::{current_task, TaskInfo};
pub use middleware::{CircuitBreaker, Middleware, RateLimit, RateLimitRule};
pub use registry::{
    DeclaredSchedule, Handler, HandlerFuture, Invocation, Registry, RegistryError, TaskDef,
};
pub use runtime::{Worker, WorkerError, WorkerReport};
pub use state::{provide, State};
pub use supervisor::{supervise, SupervisorConfig, SupervisorError, SupervisorReport};

#[doc(hidden)]
pub use inventory;
