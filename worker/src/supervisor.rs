//! The process supervisor behind `taskctl worker --workers N`.
//!
//! The supervisor runs N copies of the current program as child processes (marked with
//! [`CHILD_ENV`] so they run a worker instead of supervising). A child that exits on its
//! own is restarted with exponential backoff, reset after it has stayed up a while. When the
//! supervisor is told to stop, every child gets SIGTERM (they drain), and any still running
//! after the grace period gets SIGKILL. Children ask the kernel for SIGTERM if the supervisor
//! itself dies, so no orphan keeps consuming.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// Set in a child's environment to its index (0-based); its presence means "run one worker".
pub const CHILD_ENV: &str = "KIQ_WORKER_CHILD";
/// Set in a child's environment to the supervisor's pid.
pub const SUPERVISOR_PID_ENV: &str = "KIQ_SUPERVISOR_PID";
/// Set (to `1`) in the environment of a child started after the supervisor went quiet: it
/// starts quiet.
pub const QUIET_ENV: &str = "KIQ_QUIET";

/// How the supervisor runs its children.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// How many worker processes.
    pub workers: usize,
    /// The program to run (default: this one).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// How long children may take to drain after SIGTERM before SIGKILL.
    pub grace: Duration,
    /// First restart delay; doubles up to `max_backoff` while a child keeps failing fast.
    pub min_backoff: Duration,
    /// Longest restart delay.
    pub max_backoff: Duration,
    /// A child that ran this long before exiting restarts at `min_backoff` again.
    pub stable_after: Duration,
    /// Environment variables the children get on top of the supervisor's.
    pub env: Vec<(OsString, OsString)>,
    /// Fired to make every child go quiet (they get SIGUSR1); children restarted afterwards
    /// start quiet ([`QUIET_ENV`]).
    pub quiet: CancellationToken,
}

impl SupervisorConfig {
    /// `workers` copies of `program args`, with default timings.
    pub fn new(workers: usize, program: PathBuf, args: Vec<OsString>) -> Self {
        Self {
            workers: workers.max(1),
            program,
            args,
            grace: Duration::from_secs(35),
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            stable_after: Duration::from_secs(30),
            env: Vec::new(),
            quiet: CancellationToken::new(),
        }
    }
}

/// Why the supervisor failed.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A child could not be started at all.
    #[error("cannot start worker process {program:?}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What happened to the children, reported when the supervisor stops.
#[derive(Debug, Default, Clone, Copy)]
pub struct SupervisorReport {
    /// Restarts after unexpected exits.
    pub restarts: u64,
    /// Children that had to be SIGKILLed at shutdown.
    pub killed: u64,
}

/// Runs the children until `shutdown` fires, then stops them.
pub async fn supervise(
    config: SupervisorConfig,
    shutdown: CancellationToken,
) -> Result<SupervisorReport, SupervisorError> {
    let mut slots = tokio::task::JoinSet::new();
    // Start one child first so a program that cannot be executed fails loudly, at once.
    let first = spawn_child(&config, 0)?;
    slots.spawn(keep_alive(config.clone(), 0, Some(first), shutdown.clone()));
    for index in 1..config.workers {
        slots.spawn(keep_alive(config.clone(), index, None, shutdown.clone()));
    }
    let mut report = SupervisorReport::default();
    while let Some(r) = slots.join_next().await {
        if let Ok(slot) = r {
            report.restarts += slot.restarts;
            report.killed += slot.killed;
        }
    }
    Ok(report)
}

/// A child process, and whether it was started quiet.
type Spawned = (Child, bool);

fn spawn_child(config: &SupervisorConfig, index: usize) -> Result<Spawned, SupervisorError> {
    let mut cmd = Command::new(&config.program);
    cmd.args(&config.args)
        .env(CHILD_ENV, index.to_string())
        .env(SUPERVISOR_PID_ENV, std::process::id().to_string())
        .envs(config.env.iter().map(|(k, v)| (k, v)))
        .kill_on_drop(true);
    let quiet = config.quiet.is_cancelled();
    if quiet {
        cmd.env(QUIET_ENV, "1");
    }
    let child = cmd.spawn().map_err(|source| SupervisorError::Spawn {
        program: config.program.clone(),
        source,
    })?;
    tracing::info!(worker = index, pid = child.id(), "worker process started");
    Ok((child, quiet))
}

async fn keep_alive(
    config: SupervisorConfig,
    index: usize,
    mut child: Option<Spawned>,
    shutdown: CancellationToken,
) -> SupervisorReport {
    let mut report = SupervisorReport::default();
    let mut backoff = config.min_backoff;
    loop {
        let (mut running, started_quiet) = match child.take() {
            Some(c) => c,
            None => match spawn_child(&config, index) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(worker = index, error = %e, "cannot start worker process");
                    if wait_or_shutdown(backoff, &shutdown).await {
                        return report;
                    }
                    backoff = (backoff * 2).min(config.max_backoff);
                    continue;
                }
            },
        };
        let started = Instant::now();
        // A child started after the quiet began was told by its environment; any other is
        // sent SIGUSR1 when the quiet begins.
        let mut told_quiet = started_quiet;
        loop {
            tokio::select! {
                status = running.wait() => {
                    let ran = started.elapsed();
                    log_exit(index, status.ok(), ran);
                    if shutdown.is_cancelled() {
                        return report;
                    }
                    backoff = if ran >= config.stable_after { config.min_backoff } else { backoff };
                    tracing::info!(worker = index, delay_ms = backoff.as_millis() as u64, "restarting worker process");
                    report.restarts += 1;
                    if wait_or_shutdown(backoff, &shutdown).await {
                        return report;
                    }
                    backoff = (backoff * 2).min(config.max_backoff);
                    break;
                }
                _ = config.quiet.cancelled(), if !told_quiet => {
                    told_quiet = true;
                    if let Some(pid) = running.id() {
                        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGUSR1);
                    }
                }
                _ = shutdown.cancelled() => {
                    if stop_child(&mut running, index, config.grace).await {
                        report.killed += 1;
                    }
                    return report;
                }
            }
        }
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL. Returns whether SIGKILL was needed.
async fn stop_child(child: &mut Child, index: usize, grace: Duration) -> bool {
    let Some(pid) = child.id() else {
        return false;
    };
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => {
            log_exit(index, status.ok(), Duration::ZERO);
            false
        }
        Err(_) => {
            tracing::warn!(
                worker = index,
                pid,
                "worker process did not stop in time; killing it"
            );
            let _ = child.kill().await;
            true
        }
    }
}

fn log_exit(index: usize, status: Option<ExitStatus>, ran: Duration) {
    match status {
        Some(s) if s.success() => tracing::info!(worker = index, "worker process exited"),
        Some(s) => {
            tracing::warn!(worker = index, status = %s, ran_s = ran.as_secs(), "worker process exited abnormally")
        }
        None => tracing::warn!(worker = index, "worker process vanished"),
    }
}

async fn wait_or_shutdown(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.cancelled() => true,
    }
}

/// In a child: asks the kernel to send SIGTERM if the supervisor dies, and returns false if
/// it already has (the child should then exit rather than run unsupervised).
pub fn bind_to_supervisor() -> bool {
    let Some(expected) = std::env::var(SUPERVISOR_PID_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return true;
    };
    #[cfg(target_os = "linux")]
    {
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    }
    nix::unistd::getppid().as_raw() == expected
}

/// Handles SIGUSR1 and SIGTSTP (Ctrl-Z), the signals that make `taskctl worker` go quiet (take
/// no new work, finish what it holds; stop it with SIGTERM afterwards), from this call on: the
/// future returned resolves on the first of them. Call it (inside a runtime) before anything
/// may send them, so that neither keeps its default action (SIGUSR1 ends a process, SIGTSTP
/// suspends it). Never resolves if the handlers cannot be set.
pub fn quiet_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let usr1 = signal(SignalKind::user_defined1());
    let tstp = signal(SignalKind::from_raw(nix::libc::SIGTSTP));
    async move {
        match (usr1, tstp) {
            (Ok(mut u), Ok(mut t)) => {
                tokio::select! {
                    _ = u.recv() => {}
                    _ = t.recv() => {}
                }
            }
            (Ok(mut u), Err(_)) => {
                u.recv().await;
            }
            _ => std::future::pending::<()>().await,
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn termination_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
