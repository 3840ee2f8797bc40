//! `taskctl worker`: a supervisor of N worker processes, or (in a child) one worker.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use kiq_broker::taskiq::TaskiqStream;
use kiq_broker::Broker;
use kiq_worker::middleware::{CircuitBreaker, RateLimit, RateLimitRule, Trace};
use kiq_worker::supervisor::{self, SupervisorConfig, CHILD_ENV};
use kiq_worker::{Registry, Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

use super::worker_metrics;
use super::GlobalArgs;

#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// Worker processes to run.
    #[arg(long, short = 'w', default_value_t = 1, env = "KIQ_WORKERS")]
    workers: usize,
    /// Runtime threads in each worker process (default: 1, or `TOKIO_WORKER_THREADS`). One
    /// thread costs the least CPU per task; scale across CPUs with `--workers`. More threads
    /// help a process whose tasks hold their thread without awaiting (CPU-bound work, blocking
    /// calls) so the others can go on; such a task never costs its lease, whose keeper runs
    /// on a thread of its own.
    #[arg(long, env = "KIQ_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// The RESP client each process talks to Redis with (its queue reads, its completions, its
    /// other commands; not pub/sub): `kiq` (kiq's own connections, which cost less CPU per
    /// request) or `redis-rs`. Over TLS and on a cluster, redis-rs serves either way, and so it
    /// does batches with `--replica-acks`.
    #[arg(long, default_value = "kiq", env = "KIQ_RESP", value_parser = ["kiq", "redis-rs"])]
    resp: String,
    /// Tasks each process runs at once.
    #[arg(long, short = 'c', default_value_t = 16, env = "KIQ_CONCURRENCY")]
    concurrency: usize,
    /// Messages each process reads ahead of free slots (default: = concurrency).
    #[arg(long, env = "KIQ_PREFETCH")]
    prefetch: Option<usize>,
    /// Queues to read, comma-separated (default: every queue a linked task names).
    #[arg(long, short = 'q', value_delimiter = ',', env = "KIQ_QUEUES")]
    queues: Vec<String>,
    /// How long in-flight tasks may finish after SIGTERM; the rest are redelivered.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, env = "KIQ_SHUTDOWN_TIMEOUT")]
    shutdown_timeout: Duration,
    /// A message whose worker stopped refreshing its lease this long ago is redelivered.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration, env = "KIQ_VISIBILITY_TIMEOUT")]
    visibility_timeout: Duration,
    /// How long a cancelled running task may go on before it is stopped.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, env = "KIQ_CANCEL_GRACE")]
    cancel_grace: Duration,
    /// A message delivered more times than this without finishing is dead-lettered.
    #[arg(long, default_value_t = 5, env = "KIQ_MAX_DELIVERIES")]
    max_deliveries: u64,
    /// Limit how often a task starts, across all workers: `<task>=<count>/<period>[:<burst>]`,
    /// e.g. `mail.send=10/s`. Repeatable. Tasks over the limit are deferred, not failed.
    #[arg(long = "rate-limit", value_parser = parse_rate_limit)]
    rate_limits: Vec<(String, RateLimitRule)>,
    /// Open a task's circuit after N consecutive failures for a cool-down: `<N>/<cool-down>`,
    /// e.g. `5/30s`. Applies to every task, each with its own circuit, per process.
    #[arg(long, value_parser = parse_breaker, env = "KIQ_CIRCUIT_BREAKER")]
    circuit_breaker: Option<(u32, Duration)>,
    /// Serve `/metrics` (every worker process's Prometheus metrics, each sample labelled
    /// `process`), `/healthz` and `/readyz` on this port of `--metrics-host`: one scrape
    /// target however many processes run.
    #[arg(long, env = "KIQ_METRICS_PORT")]
    metrics_port: Option<u16>,
    /// Address the worker metrics listen on.
    #[arg(long, default_value = "127.0.0.1", env = "KIQ_METRICS_HOST")]
    metrics_host: String,
    /// Log every task's start and outcome with its duration (the `Trace` middleware).
    #[arg(long, env = "KIQ_TRACE_TASKS")]
    trace_tasks: bool,
    /// Also serve these Taskiq streams (taskiq-redis's `queue_name`), comma-separated: a
    /// Python `task.kiq()` runs the linked task of the same name (`#[task(name = "...")]`).
    #[arg(long = "taskiq", value_delimiter = ',', env = "KIQ_TASKIQ_STREAMS")]
    taskiq: Vec<String>,
    /// The Taskiq consumer group (the same as the Python workers').
    #[arg(long, default_value = "taskiq", env = "KIQ_TASKIQ_GROUP")]
    taskiq_group: String,
    /// How the Python side reads results: `pickle` (Taskiq's default) or `json`.
    #[arg(long, default_value = "pickle", env = "KIQ_TASKIQ_RESULTS")]
    taskiq_results: kiq_broker::taskiq::ResultFormat,
    /// The Python result backend's `prefix_str`: results go under `<prefix>:<task id>`.
    #[arg(long, env = "KIQ_TASKIQ_RESULT_PREFIX")]
    taskiq_result_prefix: Option<String>,
    /// How long results written for Python are kept (default: kiq's result TTL).
    #[arg(long, value_parser = humantime::parse_duration, env = "KIQ_TASKIQ_RESULT_TTL")]
    taskiq_result_ttl: Option<Duration>,
    /// Python workers read these streams too: a message for a task no linked task serves is
    /// left to them instead of being dead-lettered at once.
    #[arg(long, env = "KIQ_TASKIQ_SHARED")]
    taskiq_shared: bool,
    /// A Taskiq entry a stopped kiq worker held is taken over after this long (Python
    /// workers' entries never are).
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration, env = "KIQ_TASKIQ_RECLAIM_AFTER")]
    taskiq_reclaim_after: Duration,
    /// On a shared stream, a message for a task kiq does not run is passed back for Python
    /// workers at most this many times, then dead-lettered.
    #[arg(long, default_value_t = 30, env = "KIQ_TASKIQ_MAX_HOPS")]
    taskiq_max_hops: u64,
}

fn parse_rate_limit(s: &str) -> Result<(String, RateLimitRule), String> {
    let (task, rule) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected <task>=<count>/<period>, e.g. mail.send=10/s"))?;
    let rule = rule.parse::<RateLimitRule>().map_err(|e| e.to_string())?;
    Ok((task.trim().to_string(), rule))
}

fn parse_breaker(s: &str) -> Result<(u32, Duration), String> {
    let bad = || format!("{s:?}: expected <failures>/<cool-down>, e.g. 5/30s");
    let (n, d) = s.split_once('/').ok_or_else(bad)?;
    let n: u32 = n.trim().parse().map_err(|_| bad())?;
    let d = humantime::parse_duration(d.trim()).map_err(|_| bad())?;
    if n == 0 {
        return Err(bad());
    }
    Ok((n, d))
}

pub(crate) async fn run(global: &GlobalArgs, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    if std::env::var_os(CHILD_ENV).is_some() {
        return run_child(global, args).await;
    }
    // Before anything can send them: neither keeps its default action (see `quiet_signal`).
    let quiet_signal = supervisor::quiet_signal();
    let registry = super::print_tasks()?;
    let config = worker_config(&args, &registry);
    println!(
        "queues: {}  processes: {}  concurrency: {}  redis: {}",
        config.queues.join(","),
        args.workers.max(1),
        config.concurrency,
        kiq_broker::config::redact(&global.redis_url)
    );
    if let Err(e) = global.connect().await {
        // A URL of the wrong kind, or credentials Redis refuses, are mistakes to report now;
        // Redis being down is waited out.
        if let Some(b) = e.downcast_ref::<kiq_broker::BrokerError>() {
            if matches!(
                b,
                kiq_broker::BrokerError::Topology(_) | kiq_broker::BrokerError::InvalidUrl { .. }
            ) || b.is_auth_failure()
            {
                return Err(e);
            }
        }
        tracing::warn!(error = %e, "Redis is not reachable yet; workers will keep retrying");
    }
    let program = std::env::current_exe()?;
    let child_args: Vec<_> = std::env::args_os().skip(1).collect();
    let mut sup = SupervisorConfig::new(args.workers, program, child_args);
    sup.grace = args.shutdown_timeout + Duration::from_secs(5);
    let tokio_threads = std::env::var_os("TOKIO_WORKER_THREADS");
    if let (Some(threads), Some(_)) = (args.threads, &tokio_threads) {
        tracing::warn!(
            threads,
            "--threads overrides TOKIO_WORKER_THREADS for the workers"
        );
    }
    let threads = match (args.threads, tokio_threads) {
        (Some(threads), _) => Some(threads),
        (None, Some(_)) => None,
        (None, None) => Some(1),
    };
    if let Some(threads) = threads {
        sup.env
            .push(("TOKIO_WORKER_THREADS".into(), threads.to_string().into()));
    }

    let shutdown = CancellationToken::new();
    // The metrics listener outlives the signal: probes and scrapes go on answering through
    // the drain (`/readyz` then says "draining"), and stop once the processes have.
    let metrics_stop = CancellationToken::new();
    let socket_dir = match args.metrics_port {
        Some(port) => {
            let addr = format!("{}:{port}", args.metrics_host);
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
            let dir = worker_metrics::SocketDir::create()?;
            sup.env.push((
                worker_metrics::SOCKET_DIR_ENV.into(),
                dir.path().as_os_str().to_owned(),
            ));
            tracing::info!(%addr, "serving the worker processes' metrics on /metrics");
            let render = worker_metrics::supervisor_render(dir.path().to_owned(), sup.workers);
            let ready = worker_metrics::supervisor_ready(dir.path().to_owned(), sup.workers);
            let stop = metrics_stop.clone();
            tokio::spawn(async move {
                if let Err(e) =
                    kiq_server::metrics::serve_worker_metrics(listener, render, ready, stop).await
                {
                    tracing::warn!(error = %e, "metrics server stopped");
                }
            });
            Some(dir)
        }
        None => None,
    };
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        supervisor::termination_signal().await;
        tracing::info!("stopping worker processes");
        on_signal.cancel();
    });
    let quiet = sup.quiet.clone();
    tokio::spawn(async move {
        quiet_signal.await;
        tracing::info!("going quiet: worker processes take no new work and finish what they hold; stop with SIGTERM");
        quiet.cancel();
    });
    let report = supervisor::supervise(sup, shutdown).await;
    metrics_stop.cancel();
    drop(socket_dir);
    let report = report?;
    tracing::info!(
        restarts = report.restarts,
        killed = report.killed,
        "supervisor stopped"
    );
    Ok(ExitCode::SUCCESS)
}

fn worker_config(args: &WorkerArgs, registry: &Registry) -> WorkerConfig {
    let queues = if args.queues.is_empty() {
        registry.queues()
    } else {
        args.queues.clone()
    };
    let concurrency = args.concurrency.max(1);
    let mut config = WorkerConfig::default();
    config.queues = queues;
    config.concurrency = concurrency;
    config.prefetch = args.prefetch.unwrap_or(concurrency);
    config.shutdown_timeout = args.shutdown_timeout;
    config.visibility_timeout = args.visibility_timeout;
    config.max_deliveries = args.max_deliveries.max(1);
    config.cancel_grace = args.cancel_grace;
    config.taskiq = args
        .taskiq
        .iter()
        .map(|name| {
            let mut s = TaskiqStream::new(name.trim())
                .group(args.taskiq_group.clone())
                .results(args.taskiq_results)
                .shared(args.taskiq_shared);
            s.result_prefix = args.taskiq_result_prefix.clone();
            s.result_ttl = args.taskiq_result_ttl;
            s.reclaim_after = args.taskiq_reclaim_after;
            s.max_hops = args.taskiq_max_hops;
            s
        })
        .collect();
    config
}

async fn run_child(global: &GlobalArgs, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    // First: the supervisor may forward SIGUSR1 as soon as this process exists.
    let quiet_signal = supervisor::quiet_signal();
    if !supervisor::bind_to_supervisor() {
        anyhow::bail!("the supervisor is gone; not starting an orphan worker");
    }
    let registry = Registry::linked_non_empty()?;
    let config = worker_config(&args, &registry);
    // Lazy: a worker started while Redis is down waits for it rather than exiting.
    let broker = Broker::lazy(global.broker_config()?.native_resp(args.resp == "kiq"))?;
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        supervisor::termination_signal().await;
        on_signal.cancel();
    });
    // Quiet on SIGUSR1/SIGTSTP (from the supervisor, or a terminal's Ctrl-Z), or from the
    // start when the supervisor already was.
    let quiet = CancellationToken::new();
    if std::env::var_os(supervisor::QUIET_ENV).is_some_and(|v| v == "1") {
        quiet.cancel();
    }
    let on_quiet = quiet.clone();
    tokio::spawn(async move {
        quiet_signal.await;
        on_quiet.cancel();
    });
    if let Some(dir) = std::env::var_os(worker_metrics::SOCKET_DIR_ENV) {
        let index: usize = std::env::var(CHILD_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let ready = worker_readiness(broker.clone(), config.consumer.clone(), shutdown.clone());
        worker_metrics::serve_child(dir.into(), index, ready)?;
    }
    let mut worker = Worker::builder(broker, registry)
        .config(config)
        .quiet_on(quiet)
        .build();
    if args.trace_tasks {
        worker = worker.layer(Trace);
    }
    if !args.rate_limits.is_empty() {
        let limits = args
            .rate_limits
            .iter()
            .fold(RateLimit::new(), |l, (task, rule)| l.limit(task, *rule));
        worker = worker.layer(limits);
    }
    if let Some((failures, cool_down)) = args.circuit_breaker {
        worker = worker.layer(CircuitBreaker::new(failures, cool_down));
    }
    let report = worker.run(shutdown).await?;
    if report.abandoned > 0 || report.unwritten > 0 {
        tracing::warn!(
            abandoned = report.abandoned,
            unwritten = report.unwritten,
            "left work pending for redelivery"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A worker process's `/readyz`: not draining, Redis answers, and its consumer is registered
/// (its heartbeat entry is in Redis: it has started and keeps its leases fresh).
fn worker_readiness(
    broker: Broker,
    consumer: String,
    shutdown: CancellationToken,
) -> kiq_server::metrics::Readiness {
    std::sync::Arc::new(move || {
        let (broker, consumer, shutdown) = (broker.clone(), consumer.clone(), shutdown.clone());
        Box::pin(async move {
            if shutdown.is_cancelled() {
                return Err("draining: the worker is shutting down".to_string());
            }
            // One round trip: reading the heartbeats also proves Redis answers.
            let check = async {
                let workers = broker
                    .inspector()
                    .workers(u64::MAX)
                    .await
                    .map_err(|e| e.to_string())?;
                if workers.iter().any(|w| w.consumer == consumer) {
                    Ok(())
                } else {
                    Err(format!("consumer {consumer} has not registered yet"))
                }
            };
            tokio::time::timeout(std::time::Duration::from_secs(2), check)
                .await
                .unwrap_or_else(|_| Err("Redis did not answer within 2 s".to_string()))
        })
    })
}
