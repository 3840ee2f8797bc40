//! One worker process: [`Worker`] only wires its loops, one per file:
//! - `fetcher`: reads new messages into free slots (with `recoverer` passes that take over
//!   stopped workers' messages);
//! - `executions`: runs held messages within the concurrency;
//! - `completer`: writes results and acks in batches;
//! - `lease_keeper`: keeps held messages' leases and the heartbeat fresh;
//! - `forwarder`: promotes due delayed messages;
//! - `subscriber`: wake, cancel and control notices;
//! - `gate`: paused queues and quiet, which the fetch loops obey;
//! - `janitor`: index trims and consumer pruning;
//! - `taskiq_bridge`: hands a Taskiq stream's messages on to kiq's queues.

mod completer;
mod executions;
mod fetcher;
mod forwarder;
mod gate;
mod inflight;
mod janitor;
mod lease_keeper;
mod outage;
mod recoverer;
mod subscriber;
mod taskiq_bridge;
mod worker;

pub use completer::MAX_BATCH;
pub use inflight::InFlight;
pub use worker::{Worker, WorkerBuilder, WorkerError, WorkerReport};
