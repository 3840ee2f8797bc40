//! Loads the maintenance schedule table (seeds 002/004) into Redis and lists it. Run
//! `taskctl scheduler` and `taskctl worker` beside it; manage the rows with `taskctl schedule`.

use kiq_examples::maintenance::{load_table, TASK_DEFINITIONS};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("KIQ_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let broker = kiq::Broker::connect(&url).await?;
    let n = load_table(&broker, TASK_DEFINITIONS)
        .await
        .map_err(anyhow::Error::msg)?;
    println!("{n} schedules loaded:");
    for d in kiq::Schedules::new(&broker).list().await? {
        println!(
            "  {:<20} {:<12} enabled={:<5} retries={:?} timeout={:?}s  {}",
            d.id,
            d.schedule,
            d.enabled,
            d.retries,
            d.timeout_secs,
            d.description.unwrap_or_default()
        );
    }
    Ok(())
}
