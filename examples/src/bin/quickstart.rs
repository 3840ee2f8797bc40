//! Dispatches a few example tasks and prints their results. Run a worker first:
//! `taskctl worker --workers 2`, then `quickstart` (both read `KIQ_REDIS_URL`).

use std::time::Duration;

use kiq_examples::{faults, math, text};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("KIQ_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let broker = kiq::Broker::connect(&url).await?;
    let wait = Duration::from_secs(10);

    let sum = math::add::kiq(&broker, 2, 3).await?;
    println!("add(2, 3)           = {}", sum.wait_result(wait).await?);

    let greeting = text::greet::kiq(&broker, "kiq".to_string()).await?;
    println!(
        "greet(\"kiq\")        = {}",
        greeting.wait_result(wait).await?
    );

    let s = math::stats::kiq(&broker, vec![1.0, 2.0, 3.0, 4.0]).await?;
    println!("stats([1, 2, 3, 4]) = {:?}", s.wait_result(wait).await?);

    let q = math::divide::kiq(&broker, 1.0, 0.0).await?;
    match q.wait_result(wait).await {
        Ok(v) => println!("divide(1, 0)        = {v}"),
        Err(e) => println!("divide(1, 0)        -> {e}"),
    }

    let p = faults::explode::kiq(&broker, "on purpose".to_string()).await?;
    match p.wait_result(wait).await {
        Ok(v) => println!("explode             = {v}"),
        Err(e) => println!("explode             -> {e}"),
    }

    // Delayed: waits in Redis, not in a worker.
    let started = std::time::Instant::now();
    let later = text::greet::kicker()
        .delay(Duration::from_millis(500))
        .kiq(&broker, ("later".to_string(),))
        .await?;
    let greeting = later.wait_result(wait).await?;
    println!(
        "greet, delayed 500 ms = {greeting} (after {} ms)",
        started.elapsed().as_millis()
    );

    // Many at once: each handle is awaited concurrently over one shared subscriber.
    let mut handles = Vec::new();
    for i in 0..100 {
        handles.push(math::add::kiq(&broker, i, i).await?);
    }
    let mut total = 0;
    for h in handles {
        total += h.wait_result(wait).await?;
    }
    println!("sum of add(i, i) for i in 0..100 = {total}");

    // Workflows: a chain passes each output on; a group's callback gets every output.
    let chain = math::add::call(1, 2)
        .then(math::double::link())
        .then(math::double::link())
        .kiq(&broker)
        .await?;
    println!(
        "add(1, 2) -> double -> double = {}",
        chain.wait_result(wait).await?
    );
    let (_members, sum) = kiq::group((1..=10).map(|i| math::add::call(i, 0)))
        .then(math::total::link())
        .kiq(&broker)
        .await?;
    println!(
        "group of add(i, 0) for i in 1..=10 -> total = {}",
        sum.wait_result(wait).await?
    );

    // Priorities: under a backlog, critical work starts first.
    let urgent = math::add::kicker()
        .priority(kiq::Priority::Critical)
        .kiq(&broker, (7, 7))
        .await?;
    println!(
        "add(7, 7) at critical priority = {}",
        urgent.wait_result(wait).await?
    );
    Ok(())
}
