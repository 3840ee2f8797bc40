//! `taskctl kiq` and `taskctl result`: dispatch by name from a shell, read results.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use kiq_broker::{RawDispatch, TaskRecord, TaskState, WaitError};

use super::GlobalArgs;

#[derive(Debug, Args)]
pub(crate) struct KiqArgs {
    /// The task name (see `taskctl tasks`).
    task: String,
    /// The arguments as a JSON array, e.g. '[2, 3]'.
    #[arg(long, short = 'a', default_value = "[]")]
    args: String,
    /// Queue to send to (default: the task's queue if it is linked in, else `default`).
    #[arg(long, short = 'q')]
    queue: Option<String>,
    /// Use this task id instead of a fresh one.
    #[arg(long)]
    task_id: Option<String>,
    /// Priority: critical, high, normal or low.
    #[arg(long, short = 'p', default_value = "normal")]
    priority: kiq_broker::Priority,
    /// Start no earlier than this from now, e.g. `30s`, `5m`.
    #[arg(long, value_parser = humantime::parse_duration)]
    delay: Option<Duration>,
    /// Wait this long for the result and print it.
    #[arg(long, value_parser = humantime::parse_duration)]
    wait: Option<Duration>,
}

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
pub(crate) struct WaitArgs {
    /// Task ids; `-` reads them from stdin, one per line.
    #[arg(required = true)]
    ids: Vec<String>,
    /// How long to wait for all of them.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// One JSON line per task instead of a summary.
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

#[derive(Debug, Args)]
pub(crate) struct ResultArgs {
    /// The task id.
    id: String,
    /// Wait this long for the task to finish.
    #[arg(long, value_parser = humantime::parse_duration)]
    wait: Option<Duration>,
}

pub(crate) async fn kiq(global: &GlobalArgs, args: KiqArgs) -> anyhow::Result<ExitCode> {
    let json: serde_json::Value = serde_json::from_str(&args.args)
        .map_err(|e| anyhow::anyhow!("--args must be JSON: {e}"))?;
    if !json.is_array() {
        anyhow::bail!("--args must be a JSON array of the task's arguments, e.g. '[2, 3]'");
    }
    let encoded = kiq_broker::codec::from_json(&json)?;
    let linked_queue = kiq_worker::Registry::linked()
        .ok()
        .and_then(|r| r.get(&args.task).map(|d| d.queue));
    let queue = args.queue.as_deref().or(linked_queue).unwrap_or("default");
    let broker = global.connect().await?;
    let msg = broker.prepare_raw(RawDispatch {
        task: &args.task,
        queue,
        args: encoded,
        task_id: args.task_id.as_deref(),
        labels: Default::default(),
        retry: None,
        timeout: None,
        due_ms: args
            .delay
            .map(|d| kiq_broker::envelope::now_ms() + d.as_millis() as u64),
        unique_key: None,
        priority: args.priority,
    })?;
    let id = broker.enqueue(msg).await?;
    println!("{id}");
    match args.wait {
        None => Ok(ExitCode::SUCCESS),
        Some(timeout) => print_outcome(broker.wait_record(&id, timeout).await),
    }
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
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn result(global: &GlobalArgs, args: ResultArgs) -> anyhow::Result<ExitCode> {
    let broker = global.connect().await?;
    match args.wait {
        Some(timeout) => print_outcome(broker.wait_record(&args.id, timeout).await),
        None => match broker.record(&args.id).await? {
            None => print_outcome(Err(WaitError::NotFound(args.id))),
            Some(r) if r.state.is_final() => print_outcome(Ok(r)),
            Some(r) => {
                println!("{}", serde_json::json!({ "id": args.id, "state": r.state }));
                Ok(ExitCode::SUCCESS)
            }
        },
    }
}

pub(crate) async fn wait_many(global: &GlobalArgs, args: WaitArgs) -> anyhow::Result<ExitCode> {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let mut ids = Vec::new();
    for id in args.ids {
        if id == "-" {
            for line in std::io::stdin().lines() {
                let line = line?;
                if !line.trim().is_empty() {
                    ids.push(line.trim().to_string());
                }
            }
        } else {
            ids.push(id);
        }
    }
    let broker = global.connect().await?;
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut pending: FuturesUnordered<_> = ids
        .iter()
        .map(|id| {
            let broker = broker.clone();
            let id = id.clone();
            async move {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let r = broker.wait_record(&id, left).await;
                (id, r)
            }
        })
        .collect();
    let (mut ok, mut failed, mut late, mut done) = (0usize, 0usize, 0usize, 0usize);
    while let Some((id, r)) = pending.next().await {
        done += 1;
        super::progress::show("waiting", done, ids.len());
        let (state, error) = match &r {
            Ok(rec) if rec.state == TaskState::Succeeded => {
                ok += 1;
                ("succeeded".to_string(), None)
            }
            Ok(rec) => {
                failed += 1;
                (
                    rec.state.as_str().to_string(),
                    rec.failure.as_ref().map(|f| f.to_string()),
                )
            }
            Err(WaitError::Timeout) => {
                late += 1;
                ("timeout".into(), None)
            }
            Err(e) => {
                failed += 1;
                ("error".into(), Some(e.to_string()))
            }
        };
        if args.json {
            println!(
                "{}",
                serde_json::json!({ "id": id, "state": state, "error": error })
            );
        }
    }
    if !args.json {
        println!("{ok} succeeded, {failed} failed, {late} still running after the timeout");
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else if late > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

pub(crate) async fn list(global: &GlobalArgs, args: ListArgs) -> anyhow::Result<ExitCode> {
    let broker = global.connect().await?;
    let tasks = broker
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
    let view = r.to_json(&args.id, progress);
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

fn print_outcome(outcome: Result<TaskRecord, WaitError>) -> anyhow::Result<ExitCode> {
    match outcome {
        Ok(r) if r.state == TaskState::Succeeded => {
            let value = match &r.output {
                Some(bytes) => kiq_broker::codec::to_json(bytes)?,
                None => serde_json::Value::Null,
            };
            println!("{value}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(r) => {
            let f = r.failure.map(|f| f.to_string()).unwrap_or_default();
            eprintln!("task failed: {f}");
            Ok(ExitCode::FAILURE)
        }
        Err(WaitError::Failed(f)) => {
            eprintln!("task failed: {f}");
            Ok(ExitCode::FAILURE)
        }
        Err(WaitError::Timeout) => {
            eprintln!("timed out waiting for the result");
            Ok(ExitCode::from(3))
        }
        Err(e) => Err(e.into()),
    }
}
