//! `taskctl kiq`: dispatch a task by name from a shell.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use kiq_broker::RawDispatch;

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
    /// Send even if no live worker runs a task of this name (one may start later).
    #[arg(long)]
    force: bool,
}

pub(crate) async fn kiq(global: &GlobalArgs, args: KiqArgs) -> anyhow::Result<ExitCode> {
    let json: serde_json::Value = serde_json::from_str(&args.args)
        .map_err(|e| anyhow::anyhow!("--args must be JSON: {e}"))?;
    if !json.is_array() {
        anyhow::bail!("--args must be a JSON array of the task's arguments, e.g. '[2, 3]'");
    }
    let linked_queue = kiq_worker::Registry::linked()
        .ok()
        .and_then(|r| r.get(&args.task).map(|d| d.queue));
    let queue = args.queue.as_deref().or(linked_queue).unwrap_or("default");
    let broker = global.connect().await?;
    if !args.force {
        // The names live workers run: a name none of them knows would wait in its queue (or
        // dead-letter as unknown) while the shell said all was well.
        let known = broker.inspector().advertised_tasks().await?;
        if known.is_empty() {
            eprintln!(
                "taskctl: no live worker says which tasks it runs: sending {:?} unchecked",
                args.task
            );
        } else if !known.contains(&args.task) {
            eprintln!(
                "taskctl: no live worker runs a task named {:?}; they run:\n  {}\n\
                 (--force sends it anyway, for a worker that will start later)",
                args.task,
                known.join("\n  ")
            );
            return Ok(ExitCode::from(2));
        }
    }
    let encoded = broker.codec().from_json(&json)?;
    let msg = broker.prepare_raw(RawDispatch {
        task: &args.task,
        queue,
        args: encoded,
        task_id: args.task_id.as_deref(),
        labels: Default::default(),
        retry: None,
        timeout: None,
        due_ms: args.delay.map(kiq_broker::envelope::due_in),
        unique_key: None,
        priority: args.priority,
    })?;
    let id = broker.enqueue(msg).await?;
    println!("{id}");
    match args.wait {
        None => Ok(ExitCode::SUCCESS),
        Some(timeout) => {
            super::wait::print_outcome(broker.codec(), broker.wait_record(&id, timeout).await)
        }
    }
}
