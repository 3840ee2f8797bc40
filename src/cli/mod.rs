//! `taskctl`: the command line, as a library so that any binary linking your tasks gets it.
//!
//! ```no_run
//! // src/bin/taskctl.rs of your application
//! fn main() -> std::process::ExitCode {
//!     kiq::cli::main()
//! }
//! ```
//!
//! Subcommands: `worker` (supervised worker processes), `tasks` (what is linked in), `kiq`
//! (dispatch a task by name with JSON arguments), `result` (a task's state or result), `dead`
//! (dead letters: list, show, replay, purge), `queue partitions` (spread a hot queue).

mod dead;
mod kiq;
mod progress;
mod queue;
mod schedule;
mod serve;
mod status;
mod tasks;
mod wait;
mod worker;
mod worker_metrics;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use kiq_broker::{Broker, BrokerConfig};

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "taskctl",
    version,
    about = "Run and operate kiq workers and tasks"
)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Redis URL: redis://[user:password@]host:port[/db] (rediss:// for TLS); a Redis Cluster:
    /// redis+cluster://[user:password@]host:port[,host:port...]; a primary found through
    /// Sentinels: redis+sentinel://[user:password@]host:port[,host:port...]/<master name>.
    // The doc comment is also `--help`'s text, so it stays plain (no Markdown).
    #[allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]
    #[arg(long, global = true, env = "KIQ_REDIS_URL", default_value = kiq_broker::config::DEFAULT_REDIS_URL, hide_env_values = true)]
    pub redis_url: String,
    /// Prefix of every Redis key.
    #[arg(long, global = true, env = "KIQ_PREFIX", default_value = "kiq")]
    pub prefix: String,
    /// How long finished tasks' results are kept.
    #[arg(long, global = true, env = "KIQ_RESULT_TTL", default_value = "1day", value_parser = humantime::parse_duration)]
    pub result_ttl: Duration,
    /// Replicas that must acknowledge each batch of writes (Redis WAIT) before it counts as
    /// done: 1 closes the window in which a failover loses acknowledged writes (Sentinel, or a
    /// cluster with replicas), at a replication round trip per batch.
    #[arg(long, global = true, env = "KIQ_REPLICA_ACKS", default_value_t = 0)]
    pub replica_acks: usize,
    /// Log filter (tracing's EnvFilter syntax), e.g. `info`, `kiq_worker=debug`.
    #[arg(long, global = true, env = "KIQ_LOG", default_value = "info")]
    pub log: String,
    /// Log lines as text, or as JSON (one object per line, with the current span's fields:
    /// a task's id, name and queue).
    #[arg(long, global = true, env = "KIQ_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Sign every message sent, and run only messages signed by one of these keys:
    /// id:secret[,id:secret...], the first signing (secrets of at least 32 bytes, e.g.
    /// openssl rand -hex 32). Every producer, worker, scheduler and server of a deployment
    /// needs the same keys.
    #[arg(long, global = true, env = "KIQ_SIGNING_KEYS", hide_env_values = true)]
    pub signing_keys: Option<String>,
    /// Where `redis_url` came from (`--redis-url`, `KIQ_REDIS_URL` or the default), named in
    /// connection errors; set when the command line is parsed by [`main`].
    #[arg(skip)]
    pub redis_url_origin: Option<String>,
}

impl GlobalArgs {
    /// The broker configuration these options describe.
    pub fn broker_config(&self) -> anyhow::Result<BrokerConfig> {
        let mut config = BrokerConfig::new(self.redis_url.clone())
            .prefix(self.prefix.clone())
            .result_ttl(self.result_ttl)
            .replica_acks(self.replica_acks);
        config.redis_url_origin = self.redis_url_origin.clone();
        // Set but empty is an error, not "off": a secret that failed to render must not leave
        // workers running whatever anyone writes.
        if let Some(spec) = self.signing_keys.as_deref() {
            let keys = kiq_broker::codec::SigningKeys::parse(spec)
                .map_err(|e| anyhow::anyhow!("--signing-keys / KIQ_SIGNING_KEYS: {e}"))?;
            tracing::debug!(signing = keys.signing_id(), verifying = ?keys.ids().collect::<Vec<_>>(), "signed messages on");
            config = config.signing_keys(keys);
        }
        Ok(config)
    }

    /// Connects, checking Redis answers.
    pub async fn connect(&self) -> anyhow::Result<Broker> {
        Ok(Broker::from_config(self.broker_config()?).await?)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run N supervised worker processes.
    Worker(worker::WorkerArgs),
    /// Queues, workers and the active scheduler at a glance.
    Status(status::StatusArgs),
    /// List the tasks linked into this binary.
    Tasks,
    /// Dispatch a task by name with JSON arguments.
    Kiq(kiq::KiqArgs),
    /// Show a task's state or result, optionally waiting for it.
    Result(wait::ResultArgs),
    /// Wait for many tasks (ids as arguments, or `-` to read them from stdin), with a progress
    /// bar; exits 0 if all succeeded, 2 if any id is unknown, else 1 if any failed, 3 if any
    /// did not finish in time.
    Wait(wait::WaitArgs),
    /// Show everything known about a task: state, attempts, times, worker, error, result, progress.
    Task(tasks::TaskArgs),
    /// List tasks by state (and queue): pending, scheduled, running, retrying, succeeded,
    /// failed, cancelled, dead.
    List(tasks::ListArgs),
    /// Cancel a task: pending or delayed, it never runs; running, it is stopped.
    Cancel(tasks::CancelArgs),
    /// Dead letters: list, show, replay, purge.
    Dead(dead::DeadArgs),
    /// Queue control and settings: `queue pause|resume|purge|drain <queue>`, `queue paused`,
    /// and `queue partitions <queue> [N]`, which spreads a hot queue over N partitions (on a
    /// Redis Cluster, over several masters).
    Queue(queue::QueueArgs),
    /// Run a cron scheduler replica (any number may run; one is active).
    Scheduler(schedule::SchedulerArgs),
    /// Manage schedules: add, list, show, rm, pause, resume, trigger, leader.
    Schedule(schedule::ScheduleArgs),
    /// Serve the HTTP API, the web dashboard and Prometheus metrics.
    Serve(serve::ServeArgs),
}

/// Parses the process's arguments, runs the command, and returns its exit code.
pub fn main() -> ExitCode {
    run(parse())
}

/// The process's command line, noting where the Redis URL came from.
fn parse() -> Cli {
    use clap::parser::ValueSource;
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let mut cli =
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut Cli::command()).exit());
    // For deploy kits and CI: check that a command line (flags and KIQ_* variables) parses,
    // then stop before anything starts or connects.
    if std::env::var_os("KIQ_PARSE_ONLY").is_some_and(|v| v == "1") {
        if let Err(e) = cli.global.broker_config() {
            eprintln!("taskctl: {e:#}");
            std::process::exit(2);
        }
        println!("ok");
        std::process::exit(0);
    }
    // A global argument's value is propagated to the subcommand's matches.
    let source = matches
        .subcommand()
        .and_then(|(_, sub)| sub.value_source("redis_url"))
        .or_else(|| matches.value_source("redis_url"));
    cli.global.redis_url_origin = match source {
        Some(ValueSource::CommandLine) => Some("--redis-url".into()),
        Some(ValueSource::EnvVariable) => Some("KIQ_REDIS_URL".into()),
        Some(ValueSource::DefaultValue) => {
            Some("the default: set KIQ_REDIS_URL or --redis-url".into())
        }
        _ => None,
    };
    cli
}

/// [`main`] for a binary that runs its own Tokio runtime (`#[tokio::main]`): parses the
/// process's arguments and runs the command on the current runtime.
pub async fn main_async() -> ExitCode {
    run_async(parse()).await
}

/// Runs a parsed command line on a Tokio runtime of its own. Called inside a runtime (from a
/// `#[tokio::main]` function, say), it cannot start one: it says so and what to call instead,
/// rather than panicking.
pub fn run(cli: Cli) -> ExitCode {
    if tokio::runtime::Handle::try_current().is_ok() {
        eprintln!(
            "taskctl: kiq::cli::main() and kiq::cli::run() start their own Tokio runtime, and this \
             thread already runs one. Call them from a plain `fn main() -> ExitCode` (without \
             #[tokio::main]), or use `kiq::cli::main_async().await` inside your runtime."
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("taskctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run_async(cli))
}

/// Runs a parsed command line on the current Tokio runtime (for a binary that has its own,
/// e.g. under `#[tokio::main]`; it must be multi-threaded for `worker`).
pub async fn run_async(cli: Cli) -> ExitCode {
    let telemetry = init_tracing(&cli.global.log, cli.global.log_format == "json");
    let result = async move {
        match cli.command {
            Command::Worker(args) => worker::run(&cli.global, args).await,
            Command::Status(args) => status::run(&cli.global, args).await,
            Command::Tasks => {
                print_tasks()?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Kiq(args) => kiq::kiq(&cli.global, args).await,
            Command::Result(args) => wait::result(&cli.global, args).await,
            Command::Task(args) => tasks::task(&cli.global, args).await,
            Command::List(args) => tasks::list(&cli.global, args).await,
            Command::Wait(args) => wait::wait_many(&cli.global, args).await,
            Command::Cancel(args) => tasks::cancel(&cli.global, args).await,
            Command::Dead(args) => dead::run(&cli.global, args).await,
            Command::Queue(args) => queue::run(&cli.global, args).await,
            Command::Scheduler(args) => schedule::run_scheduler(&cli.global, args).await,
            Command::Schedule(args) => schedule::run_schedule(&cli.global, args).await,
            Command::Serve(args) => serve::run(&cli.global, args).await,
        }
    }
    .await;
    telemetry.shutdown().await;
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("taskctl: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A `tracing` layer a binary adds to the subscriber `kiq::cli` installs (see [`add_layer`]).
pub type Layer =
    Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static>;

static EXTRA_LAYERS: std::sync::Mutex<Vec<Layer>> = std::sync::Mutex::new(Vec::new());

/// Adds a `tracing` layer of the binary's own (an OpenTelemetry pipeline of its own, Sentry,
/// ...) to the subscriber that [`main`] and the other entry points install beside kiq's log
/// output, under the same `--log` filter. Call it before them:
///
/// ```no_run
/// # use tracing_subscriber::Layer as _;
/// fn main() -> std::process::ExitCode {
///     kiq::cli::add_layer(tracing_subscriber::fmt::layer().with_writer(std::io::stdout).boxed());
///     kiq::cli::main()
/// }
/// ```
///
/// A binary that installs a global subscriber itself keeps it; `kiq::cli` then says on stderr
/// that `--log`, `--log-format` and OTLP export do not apply.
pub fn add_layer(layer: Layer) {
    if let Ok(mut layers) = EXTRA_LAYERS.lock() {
        layers.push(layer);
    }
}

/// What must outlive the command: the OpenTelemetry exporter, flushed at the end.
#[derive(Default)]
struct Telemetry {
    #[cfg(feature = "otel")]
    otel: Option<crate::otel::Otel>,
}

impl Telemetry {
    /// Sends the spans still buffered.
    async fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(otel) = self.otel {
            let _ = tokio::task::spawn_blocking(move || otel.shutdown()).await;
        }
    }
}

/// Logs to stderr (text or JSON lines), with the layers added by [`add_layer`] and, with the
/// `otel` feature and `OTEL_EXPORTER_OTLP_ENDPOINT` set, OTLP export. If the binary installed
/// a subscriber of its own, that one keeps receiving everything, and this says so.
fn init_tracing(filter: &str, json: bool) -> Telemetry {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    const OWN_SUBSCRIBER: &str = "taskctl: this program installed a tracing subscriber of its \
        own; kiq's --log, --log-format and OTLP export do not apply (use kiq::cli::add_layer to \
        add layers to kiq's subscriber instead)";
    if tracing::dispatcher::has_been_set() {
        eprintln!("{OWN_SUBSCRIBER}");
        return Telemetry::default();
    }
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The binary's layers and the log output follow `--log`.
    let mut logged: Vec<Layer> = EXTRA_LAYERS
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    logged.push(if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed()
    });
    #[allow(unused_mut)] // pushed to with the `otel` feature
    let mut layers: Vec<Layer> = vec![logged.with_filter(filter).boxed()];
    #[allow(unused_mut)]
    let mut telemetry = Telemetry::default();
    #[cfg(feature = "otel")]
    if crate::otel::enabled_by_env() {
        let service = std::env::args()
            .next()
            .and_then(|a| {
                std::path::Path::new(&a)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "taskctl".into());
        match crate::otel::layer_from_env(&service) {
            Ok((layer, otel)) => {
                // Spans are exported at `info` whatever `--log` says: a quiet log must not
                // blank the traces.
                // The exporter's own logs (and its HTTP client's) stay out of the spans.
                let spans = tracing_subscriber::EnvFilter::new(
                    "info,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,\
                     opentelemetry_http=off,reqwest=off,hyper=off,hyper_util=off",
                );
                layers.push(layer.with_filter(spans).boxed());
                telemetry.otel = Some(otel);
            }
            Err(e) => eprintln!("taskctl: {e}; spans are not exported"),
        }
    }
    if tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layers)).is_err()
    {
        eprintln!("{OWN_SUBSCRIBER}");
        return Telemetry::default();
    }
    // Records of the `log` crate become events, unless the program set a logger of its own
    // (kiq's subscriber is installed either way).
    let _ = tracing_log::LogTracer::init();
    telemetry
}

/// Prints the linked tasks; errors if there are none or names clash.
fn print_tasks() -> anyhow::Result<kiq_worker::Registry> {
    let registry = kiq_worker::Registry::linked_non_empty()?;
    println!("{} task(s) registered:", registry.len());
    for def in registry.tasks() {
        let timeout = def
            .timeout
            .map(|t| humantime::format_duration(t).to_string())
            .unwrap_or_else(|| "none".into());
        println!(
            "  {:<40} queue={:<12} timeout={:<8} retries={}  ({})",
            def.name, def.queue, timeout, def.retry.max_retries, def.location
        );
    }
    Ok(registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inside a runtime (a `#[tokio::main]` binary calling `kiq::cli::main()`), the CLI says
    /// what to call instead, where it used to panic with Tokio's "Cannot start a runtime from
    /// within a runtime".
    #[tokio::test]
    async fn run_inside_a_runtime_says_what_to_do_instead_of_panicking() {
        let cli = Cli::parse_from(["taskctl", "tasks"]);
        assert_eq!(run(cli), ExitCode::from(2));
        // The async entry point runs on the caller's runtime (to the end: this test binary
        // links no task, which `tasks` reports with exit code 2).
        let cli = Cli::parse_from(["taskctl", "tasks"]);
        assert_eq!(run_async(cli).await, ExitCode::from(2));
    }
}
