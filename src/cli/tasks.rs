//! `taskctl task`, `taskctl list` and `taskctl cancel`: look at tasks and cancel them.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub(crate) struct CancelArgs {
    /// The task id.
    id: String,
}

#[derive(Debug, Args)]
pub(crate) struct TaskArgs {
    /// The task id.
    id: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// The state: pending, scheduled, running, retrying, succeeded, failed, cancelled, dead.
    #[arg(long, short = 's')]
    state: kiq_broker::TaskState,
    /// Only this queue (default: every queue).
    #[arg(long, short = 'q')]
    queue: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn cancel(global: &GlobalArgs, args: CancelArgs) -> anyhow::Result<ExitCode> {
    let broker = global.connect().await?;
    match broker.cancel(&args.id).await? {
        kiq_broker::CancelOutcome::Cancelled => println!("cancelled {}", args.id),
        kiq_broker::CancelOutcome::AlreadyFinished => {
            println!("{} had already finished; nothing changed", args.id)
        }
        kiq_broker::CancelOutcome::NotFound => {
            eprintln!("task {} is unknown or its record has expired", args.id);
            return Ok(ExitCode::from(2));
        }
        other => println!("{}: {}", args.id, other.as_str()),
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn list(global: &GlobalArgs, args: ListArgs) -> anyhow::Result<ExitCode> {
    let broker = global.connect().await?;
    let tasks = broker
        .inspector()
        .list_tasks(args.state, args.queue.as_deref(), args.limit)
        .await?;
    if !args.json {
        println!(
            "{:<34} {:<40} {:<12} {:<10} {:>8}  ERROR",
            "ID", "TASK", "QUEUE", "STATE", "ATTEMPTS"
        );
    }
    for t in tasks {
        let Some(r) = t.record else { continue };
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "id": t.id, "task": r.task, "queue": r.queue, "state": r.state,
                    "attempts": r.attempts, "enqueued_at_ms": r.enqueued_at_ms,
                    "finished_at_ms": r.finished_at_ms,
                    "error": r.failure.as_ref().map(|f| f.message.clone()),
                })
            );
        } else {
            let error = r.failure.map(|f| f.message).unwrap_or_default();
            println!(
                "{:<34} {:<40} {:<12} {:<10} {:>8}  {}",
                t.id,
                r.task,
                r.queue,
                r.state.as_str(),
                r.attempts,
                error.chars().take(60).collect::<String>()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn task(global: &GlobalArgs, args: TaskArgs) -> anyhow::Result<ExitCode> {
    let broker = global.connect().await?;
    let Some(r) = broker.record(&args.id).await? else {
        eprintln!("task {} is unknown or its record has expired", args.id);
        return Ok(ExitCode::from(2));
    };
    let progress: Option<serde_json::Value> = broker.progress(&args.id).await?;
    let view = r.to_json(broker.codec(), &args.id, progress);
    if args.json {
        println!("{view}");
        return Ok(ExitCode::SUCCESS);
    }
    let time = |ms: u64| {
        humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms))
            .to_string()
    };
    println!("id          {}", args.id);
    println!("task        {}", r.task);
    println!("queue       {}", r.queue);
    println!("state       {}", view["state"].as_str().unwrap_or("?"));
    println!("attempts    {}", r.attempts);
    if !view["args"].is_null() {
        println!("args        {}", view["args"]);
    }
    println!("enqueued    {}", time(r.enqueued_at_ms));
    if let Some(f) = r.finished_at_ms {
        println!(
            "finished    {}  ({} ms after it was enqueued)",
            time(f),
            f.saturating_sub(r.enqueued_at_ms)
        );
    }
    if let Some(w) = &r.worker {
        println!("worker      {w}");
    }
    if let Some(f) = &r.failure {
        println!("error       {}: {}", f.kind, f.message);
    }
    if let Some(t) = &r.trace {
        println!("trace       {t}");
    }
    if !view["output"].is_null() {
        println!("result      {}", view["output"]);
    }
    if !r.history.is_empty() {
        println!("history");
        for h in &r.history {
            println!(
                "  {}  {:<10} attempt {}  {}",
                time(h.at_ms),
                h.state.as_str(),
                h.attempt,
                h.note.as_deref().unwrap_or("")
            );
        }
    }
    if !view["progress"].is_null() {
        println!("progress    {}", view["progress"]);
    }
    Ok(ExitCode::SUCCESS)
}
