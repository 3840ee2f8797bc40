//! Dispatches tasks and waits for their results. Start a worker first (`starter-worker worker`).
//!
//! ```sh
//! KIQ_REDIS_URL=redis://127.0.0.1:6379 cargo run --bin starter-producer
//! ```

use std::time::Duration;

use kiq_starter::{add, charge, Order};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("KIQ_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let broker = kiq::Broker::connect(&url).await?;
    let wait = Duration::from_secs(10);

    // Typed: the arguments are checked at compile time, and so is the result's type.
    let sum = add::kiq(&broker, 2, 3).await?.wait_result(wait).await?;
    println!("add(2, 3) = {sum}");

    let receipt = charge::kiq(&broker, Order { id: 7, cents: 1250 })
        .await?
        .wait_result(wait)
        .await?;
    println!("charge(7) = {receipt}");

    // A failure comes back as an error, with the task's own message.
    match charge::kiq(&broker, Order { id: 8, cents: 0 })
        .await?
        .wait_result(wait)
        .await
    {
        Ok(r) => println!("charge(8) = {r}"),
        Err(e) => println!("charge(8) failed: {e}"),
    }

    // Per-call options: a delay (it waits in Redis, not in a worker) and a label.
    let later = add::kicker()
        .delay(Duration::from_millis(500))
        .label("source", "producer")
        .kiq(&broker, (40, 2))
        .await?;
    println!("delayed add = {}", later.wait_result(wait).await?);
    Ok(())
}
