//! `taskctl queue`: per-queue settings. `taskctl queue partitions <queue> [N]` shows or sets how
//! many partitions a queue is spread over (on a Redis Cluster, each partition's slot may be
//! served by another master).

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::GlobalArgs;

#[derive(Debug, Args)]
pub(crate) struct QueueArgs {
    #[command(subcommand)]
    command: QueueCommand,
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Show or set how many partitions a queue's tasks are spread over. Producers follow
    /// within seconds, workers within 5 s. Lowering the count stops producers using the
    /// higher partitions; workers keep reading them, so no task is stranded.
    Partitions(PartitionsArgs),
}

#[derive(Debug, Args)]
struct PartitionsArgs {
    /// The queue (omit with --all).
    queue: Option<String>,
    /// The new count (1 to 256); omit to show the current one.
    count: Option<u16>,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(global: &GlobalArgs, args: QueueArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        QueueCommand::Partitions(a) => partitions(global, a).await,
    }
}

async fn partitions(global: &GlobalArgs, args: PartitionsArgs) -> anyhow::Result<ExitCode> {
    let broker = global.connect().await?;
    let inspector = broker.inspector();
    match (args.queue, args.count) {
        (Some(queue), Some(count)) => {
            let (before, after) = inspector.set_partitions(&queue, count).await?;
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"queue": queue, "before": before, "after": after})
                );
            } else {
                println!(
                    "{queue}: producers spread new tasks over {} partition(s) (was {}); workers read {}: {}",
                    after.spread,
                    before.spread,
                    after.names.len(),
                    after.names.join(" ")
                );
            }
        }
        (queue, None) => {
            let all = inspector.partitions().await?;
            let shown: Vec<_> = all
                .into_iter()
                .filter(|(q, _)| queue.as_ref().is_none_or(|want| want == q))
                .collect();
            if args.json {
                let map: serde_json::Map<String, serde_json::Value> = shown
                    .iter()
                    .map(|(q, c)| (q.clone(), serde_json::json!(c)))
                    .collect();
                println!("{}", serde_json::Value::Object(map));
            } else if shown.is_empty() {
                match queue {
                    Some(q) => println!("{q}: 1 partition"),
                    None => println!("no queue is partitioned"),
                }
            } else {
                for (q, c) in shown {
                    println!(
                        "{q}: producers spread over {} partition(s); workers read {}: {}",
                        c.spread,
                        c.names.len(),
                        c.names.join(" ")
                    );
                }
            }
        }
        (None, Some(_)) => anyhow::bail!("name the queue to partition"),
    }
    Ok(ExitCode::SUCCESS)
}
