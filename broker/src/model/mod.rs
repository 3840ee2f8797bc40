//! The stable types: what travels through a queue and what is stored about a task. Every role
//! (producer, worker, operator) and every backend speaks these.

pub mod envelope;
pub mod history;
pub mod partition;
pub mod priority;
pub mod record;
pub mod reply;
pub mod retry;
pub mod trace_context;
