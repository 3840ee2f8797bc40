//! The end-to-end tests' `schedule-table`: the same program as `kiq-examples`' binary of that
//! name (a test can only run a binary of its own package).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kiq_examples::maintenance::schedule_table().await
}
