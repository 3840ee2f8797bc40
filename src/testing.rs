//! Unit tests without Redis: an in-memory broker that runs your tasks in-process.
//!
//! [`broker()`] returns a [`Broker`](crate::Broker) with the same dispatch and result API as
//! a Redis one: `.kiq()`, `wait_result`, `cancel`, `progress`, delays, retries, chains and
//! groups all work, and the tasks run on the test's Tokio runtime through the same execution
//! path as a real worker (timeouts, caught panics, retry backoff, middleware). Operator
//! tools (dead-letter replay, status, the scheduler) need Redis.
//!
//! ```
//! use std::time::Duration;
//!
//! #[kiq::task(retries = 2, backoff = "fixed", backoff_delay = "10ms")]
//! async fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! #[kiq::task]
//! async fn double(x: i64) -> i64 {
//!     x * 2
//! }
//!
//! #[tokio::main]
//! async fn main() {
//!     let broker = kiq::testing::broker().unwrap();
//!     let handle = add::kiq(&broker, 2, 3).await.unwrap();
//!     assert_eq!(handle.wait_result(Duration::from_secs(1)).await.unwrap(), 5);
//!
//!     let chain = add::call(1, 2).then(double::link()).kiq(&broker).await.unwrap();
//!     assert_eq!(chain.wait_result(Duration::from_secs(1)).await.unwrap(), 6);
//! }
//! ```

use kiq_worker::{Registry, RegistryError};

/// Builds an in-memory broker with middleware:
/// `LocalWorker::new(Registry::linked()?).layer(my_layer).into_broker()`.
pub use kiq_worker::local::LocalWorker;

/// An in-memory broker running every `#[task]` linked into the test binary. Call it inside a
/// Tokio runtime (`#[tokio::test]`). Errors if two linked tasks share a name.
pub fn broker() -> Result<crate::Broker, RegistryError> {
    Ok(LocalWorker::new(Registry::linked()?).into_broker())
}
