//! A kiq application's tasks. They live in the library so that every binary of the crate (the
//! worker, the producer, the web app) and its tests share them.
//!
//! Each `#[kiq::task]` stays a plain async function and gains a module of the same name with
//! `kiq(&broker, ...)` (typed dispatch), `kicker()` (per-call options), `call(...)` (a workflow
//! step) and `SPEC` (name and queue). Tasks register themselves when the binary is linked.

use serde::{Deserialize, Serialize};

/// An order to charge: any `Serialize + Deserialize` type can be an argument or a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// The order's id.
    pub id: u64,
    /// The amount, in cents.
    pub cents: u64,
}

/// Adds two numbers. Runs on the `default` queue, for at most 10 s per attempt.
#[kiq::task(timeout = "10s")]
pub async fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Charges an order. An `Err` is a failure the caller sees (after the retries).
#[kiq::task(
    queue = "billing",
    retries = 3,
    backoff = "exponential",
    backoff_delay = "500ms"
)]
pub async fn charge(order: Order) -> Result<String, String> {
    if order.cents == 0 {
        return Err(format!("order {} has nothing to charge", order.id));
    }
    // The task id is the same on every attempt: an idempotency key for the payment provider.
    let key = kiq::current_task().map(|t| t.id).unwrap_or_default();
    Ok(format!(
        "receipt for order {} ({} cents, key {key})",
        order.id, order.cents
    ))
}
