//! `taskctl queue`: per-queue control and settings. `pause`, `resume`, `purge` and `drain` a
//! queue; `partitions <queue> [N]` shows or sets how many partitions a queue is spread over
//! (on a Redis Cluster, each partition's slot may be served by another master).

use std::io::{IsTerminal, Write as _};
use std::process::ExitCode;
use std::time::Duration;

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
    /// Pause a queue: it still accepts tasks, but workers stop reading it (every partition and
    /// priority lane) within about a second; the tasks they hold finish.
    Pause(NameArgs),
    /// Resume a paused queue.
    Resume(NameArgs),
    /// List paused queues.
    Paused(JsonArgs),
    /// Delete every waiting and delayed task of a queue (every partition and priority lane),
    /// recording each as cancelled; tasks workers hold finish. Asks first unless --yes.
    Purge(PurgeArgs),
    /// Wait until a queue holds nothing (no waiting, delayed or running task), printing its
    /// numbers as they fall. Exits 1 if the timeout runs out first.
    Drain(DrainArgs),
}

#[derive(Debug, Args)]
struct NameArgs {
    /// The queue.
    queue: String,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct JsonArgs {
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct PurgeArgs {
    /// The queue.
    queue: String,
    /// Do not ask for confirmation (needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    yes: bool,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct DrainArgs {
    /// The queue.
    queue: String,
    /// Give up after this long (e.g. `90s`, `10m`).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print nothing but the outcome.
    #[arg(long)]
    quiet: bool,
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
        QueueCommand::Pause(a) => pause_or_resume(global, a, true).await,
        QueueCommand::Resume(a) => pause_or_resume(global, a, false).await,
        QueueCommand::Paused(a) => paused(global, a).await,
        QueueCommand::Purge(a) => purge(global, a).await,
        QueueCommand::Drain(a) => drain(global, a).await,
    }
}

async fn pause_or_resume(
    global: &GlobalArgs,
    args: NameArgs,
    pause: bool,
) -> anyhow::Result<ExitCode> {
    let inspector = global.connect().await?.inspector();
    let changed = if pause {
        inspector.pause_queue(&args.queue).await?
    } else {
        inspector.resume_queue(&args.queue).await?
    };
    let q = &args.queue;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"queue": q, "paused": pause, "changed": changed})
        );
    } else {
        match (pause, changed) {
            (true, true) => println!(
                "{q}: paused (workers stop reading it within a second; tasks still accepted)"
            ),
            (true, false) => println!("{q}: was already paused"),
            (false, true) => println!("{q}: resumed"),
            (false, false) => println!("{q}: was not paused"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn paused(global: &GlobalArgs, args: JsonArgs) -> anyhow::Result<ExitCode> {
    let paused = global.connect().await?.inspector().paused_queues().await?;
    if args.json {
        println!("{}", serde_json::json!(paused));
    } else if paused.is_empty() {
        println!("no queue is paused");
    } else {
        let now = kiq_broker::envelope::now_ms();
        for (q, at) in paused {
            println!(
                "{q}: paused {} ago",
                humantime::format_duration(Duration::from_secs(now.saturating_sub(at) / 1000))
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn purge(global: &GlobalArgs, args: PurgeArgs) -> anyhow::Result<ExitCode> {
    let inspector = global.connect().await?.inspector();
    let q = &args.queue;
    let before = inspector.queue_totals(q).await?;
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!(
                "purging {q} deletes {} waiting and {} delayed task(s): pass --yes to confirm",
                before.waiting,
                before.delayed
            );
        }
        print!(
            "delete {} waiting and {} delayed task(s) of {q}, recording them as cancelled? [y/N] ",
            before.waiting, before.delayed
        );
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("nothing purged");
            return Ok(ExitCode::FAILURE);
        }
    }
    let purged = inspector.purge_queue(q).await?;
    if args.json {
        println!("{}", serde_json::json!({"queue": q, "purged": purged}));
    } else {
        println!("{q}: purged {purged} task(s) (recorded as cancelled)");
    }
    Ok(ExitCode::SUCCESS)
}

async fn drain(global: &GlobalArgs, args: DrainArgs) -> anyhow::Result<ExitCode> {
    let inspector = global.connect().await?.inspector();
    let q = &args.queue;
    let mut last: Option<(u64, u64, u64)> = None;
    let end = inspector
        .drain(q, args.timeout, |s| {
            let now = (s.waiting, s.delayed, s.in_flight);
            if !args.quiet && last != Some(now) {
                println!(
                    "{q}: {} waiting, {} delayed, {} running{}",
                    s.waiting,
                    s.delayed,
                    s.in_flight,
                    if s.paused { " (paused)" } else { "" }
                );
            }
            last = Some(now);
        })
        .await?;
    if end.depth + end.delayed == 0 {
        println!("{q}: empty");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{q}: not empty after {}: {} waiting, {} delayed, {} running",
            humantime::format_duration(args.timeout),
            end.waiting,
            end.delayed,
            end.in_flight
        );
        Ok(ExitCode::FAILURE)
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
