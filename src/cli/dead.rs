//! `taskctl dead`: list, show, replay and purge dead letters.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use kiq_broker::{Broker, DeadEntry, DeadFilter};

use super::GlobalArgs;

#[derive(Debug, Args)]
pub(crate) struct DeadArgs {
    #[command(subcommand)]
    command: DeadCommand,
}

#[derive(Debug, Args, Clone)]
struct Filter {
    /// Only this queue, its priority lanes and partitions included (default: every known queue).
    #[arg(long, short = 'q')]
    queue: Option<String>,
    /// Only dead letters with this reason (malformed, too_large, unknown_task, bad_arguments,
    /// retries_exhausted, too_many_deliveries).
    #[arg(long)]
    reason: Option<String>,
    /// Only dead letters of this task name.
    #[arg(long)]
    task: Option<String>,
}

#[derive(Debug, Subcommand)]
enum DeadCommand {
    /// List dead letters, oldest first.
    List {
        #[command(flatten)]
        filter: Filter,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter in full.
    Show {
        /// The dead letter's id (from `list`).
        id: String,
        /// Its queue (any of its priority lanes and partitions is searched), or its exact lane.
        #[arg(long, short = 'q', default_value = "default")]
        queue: String,
    },
    /// Put dead letters back into their queue (attempts reset): one id, or every match of a filter.
    Replay {
        /// One dead letter's id.
        id: Option<String>,
        #[command(flatten)]
        filter: Filter,
        /// Replay every dead letter matching the filter.
        #[arg(long)]
        all: bool,
    },
    /// Delete dead letters: one id, or every match of a filter.
    Purge {
        /// One dead letter's id.
        id: Option<String>,
        #[command(flatten)]
        filter: Filter,
        /// Purge every dead letter matching the filter.
        #[arg(long)]
        all: bool,
    },
}

pub(crate) async fn run(global: &GlobalArgs, args: DeadArgs) -> anyhow::Result<ExitCode> {
    let broker = global.connect().await?;
    match args.command {
        DeadCommand::List {
            filter,
            limit,
            json,
        } => {
            let entries = matching(&broker, &filter, limit).await?;
            if json {
                for e in &entries {
                    println!("{}", to_json(e, false));
                }
            } else {
                println!(
                    "{:<18} {:<10} {:<20} {:<34} {:>3}  ERROR",
                    "ID", "QUEUE", "REASON", "TASK", "ATT"
                );
                for e in &entries {
                    println!(
                        "{:<18} {:<10} {:<20} {:<34} {:>3}  {}",
                        e.id,
                        e.queue,
                        e.reason,
                        e.task.as_deref().unwrap_or("-"),
                        e.attempts,
                        one_line(&e.error, 60)
                    );
                }
                println!("{} dead letter(s)", entries.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        DeadCommand::Show { id, queue } => match locate(&broker, &queue, &id).await? {
            Some(e) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&to_json(&e, true)).unwrap_or_default()
                );
                Ok(ExitCode::SUCCESS)
            }
            None => anyhow::bail!("no dead letter {id} in queue {queue}"),
        },
        DeadCommand::Replay { id, filter, all } => {
            let targets = targets(&broker, id, &filter, all).await?;
            let mut n = 0;
            for (i, (queue, id)) in targets.iter().enumerate() {
                if broker.inspector().replay_dead_letter(queue, id).await? {
                    n += 1;
                }
                super::progress::show("replaying", i + 1, targets.len());
            }
            println!("replayed {n} dead letter(s)");
            Ok(ExitCode::SUCCESS)
        }
        DeadCommand::Purge { id, filter, all } => {
            let targets = targets(&broker, id, &filter, all).await?;
            let mut n = 0;
            for (queue, id) in &targets {
                n += broker
                    .inspector()
                    .purge_dead_letters(queue, std::slice::from_ref(id))
                    .await?;
            }
            println!("purged {n} dead letter(s)");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `(queue, id)` pairs to act on: one id (in `--queue`, default `default`), or every match.
async fn targets(
    broker: &Broker,
    id: Option<String>,
    filter: &Filter,
    all: bool,
) -> anyhow::Result<Vec<(String, String)>> {
    match (id, all) {
        (Some(id), false) => {
            let queue = filter.queue.clone().unwrap_or_else(|| "default".into());
            Ok(vec![match locate(broker, &queue, &id).await? {
                Some(e) => (e.queue, e.id),
                None => (queue, id),
            }])
        }
        (None, true) => Ok(matching(broker, filter, usize::MAX)
            .await?
            .into_iter()
            .map(|e| (e.queue, e.id))
            .collect()),
        (Some(_), true) => anyhow::bail!("give either an id or --all, not both"),
        (None, false) => {
            anyhow::bail!("give a dead letter id, or --all (with --queue/--reason/--task filters)")
        }
    }
}

/// Dead letter `id` in `queue`'s lane of that name, or else in any lane of the queue (its
/// priority lanes and partitions): users name the queue, the id says the rest.
async fn locate(broker: &Broker, queue: &str, id: &str) -> anyhow::Result<Option<DeadEntry>> {
    let inspector = broker.inspector();
    let exact = inspector.dead_letters(queue, id, 1).await?;
    if let Some(e) = exact.into_iter().find(|e| e.id == id) {
        return Ok(Some(e));
    }
    let filter = DeadFilter {
        queue: Some(queue.to_string()),
        reason: None,
        task: None,
    };
    Ok(inspector
        .find_dead_letters(&filter, usize::MAX)
        .await?
        .into_iter()
        .find(|e| e.id == id))
}

async fn matching(
    broker: &Broker,
    filter: &Filter,
    limit: usize,
) -> anyhow::Result<Vec<DeadEntry>> {
    let filter = DeadFilter {
        queue: filter.queue.clone(),
        reason: filter.reason.clone(),
        task: filter.task.clone(),
    };
    Ok(broker.inspector().find_dead_letters(&filter, limit).await?)
}

fn to_json(e: &DeadEntry, with_payload: bool) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": e.id, "queue": e.queue, "reason": e.reason, "error": e.error,
        "task_id": e.task_id, "task": e.task, "attempts": e.attempts, "at_ms": e.at_ms,
        "payload_bytes": e.payload.len(),
    });
    if with_payload {
        v["payload_hex"] =
            serde_json::Value::String(e.payload.iter().map(|b| format!("{b:02x}")).collect());
    }
    v
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.chars().map(|c| if c == '\n' { ' ' } else { c }).collect();
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}
