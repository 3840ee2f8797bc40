//! kiq's worker side: the task registry, the execution of one message, the runtime of one
//! worker process, and the supervisor that runs N of them.
//!
//! - [`registry`]: `#[task]` functions collected at link time ([`Registry::linked`]);
//!   [`handler`] holds what their generated code calls.
//! - [`execute`]: one message's life in a worker: decode, run (through the [`middleware`]),
//!   dispose, as the pure policy in [`outcome`] decides; [`workflow`] adds chain and group
//!   effects.
//! - [`runtime`]: one process's [`Worker`], which wires its loops (fetcher, completer, lease
//!   keeper, forwarder, subscriber, janitor), one per file.
//! - [`local`]: the same execution path behind an in-memory broker, for unit tests.
//! - [`supervisor`]: `taskctl worker --workers N`.
//! - [`taskiq`]: serving Taskiq messages (the pure part; the loop is `runtime/taskiq_bridge.rs`).
#![warn(missing_docs)]

pub mod config;
pub mod context;
pub mod execute;
pub mod handler;
pub mod local;
pub mod metrics;
pub mod middleware;
pub mod outcome;
pub mod registry;
pub mod runtime;
pub mod state;
pub mod supervisor;
pub mod taskiq;
pub mod workflow;

pub use config::WorkerConfig;
pub use context::{current_task, TaskInfo};
pub use middleware::{CircuitBreaker, Middleware, RateLimit, RateLimitRule};
pub use registry::{
    DeclaredSchedule, Handler, HandlerFuture, Invocation, Registry, RegistryError, TaskDef,
};
pub use runtime::{Worker, WorkerBuilder, WorkerError, WorkerReport};
pub use state::{provide, Provided, State};
pub use supervisor::{supervise, SupervisorConfig, SupervisorError, SupervisorReport};

#[doc(hidden)]
pub use inventory;
