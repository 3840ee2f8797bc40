//! Loads the maintenance schedule table (seeds 002/004) into Redis and lists it. Run
//! `taskctl scheduler` and `taskctl worker` beside it; manage the rows with `taskctl schedule`.
//! The program is [`kiq_examples::maintenance::schedule_table`].

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kiq_examples::maintenance::schedule_table().await
}
