//! `taskctl worker --metrics-port`: one scrape target for all the processes of a supervisor.
//!
//! Each worker process records into a Prometheus recorder of its own, installed as the global
//! `metrics` recorder (so a task's own `metrics::counter!` calls are served too), with the
//! label `process="<index>"` on every sample. It answers on a Unix socket in a directory only
//! the supervisor's user can enter: a one-line request (`metrics` or `ready`), then the answer,
//! then the connection closes. The supervisor's HTTP listener asks every process on each
//! scrape and merges the answers ([`kiq_server::metrics::merge_expositions`]), so
//! Prometheus sees one target however many processes run, and `/readyz` is ready only when
//! every process is.
//!
//! A socket rather than one port per process: ports would have to be allocated, opened and
//! scraped one by one (the old `--metrics-port` did that), and a restarted process's port
//! could be taken meanwhile. The exchange is one line each way, so it needs no HTTP client.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kiq_server::metrics::{Readiness, Render};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// The directory of the processes' sockets, passed from the supervisor to its children.
pub(crate) const SOCKET_DIR_ENV: &str = "KIQ_METRICS_SOCKET_DIR";

/// How long one exchange with a process may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// How often histograms are drained when nobody scrapes (so they do not grow).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

fn socket_of(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("{index}.sock"))
}

/// The supervisor's socket directory, removed when dropped: a new directory only this user
/// can enter, under `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`) or the temporary
/// directory. Its name is not guessable, so nobody can take it first.
pub(crate) struct SocketDir(PathBuf);

impl SocketDir {
    pub(crate) fn create() -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::var_os("RUNTIME_DIRECTORY")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let mut attempt = 0;
        loop {
            let dir = base.join(format!(
                "kiq-worker-{}-{:016x}",
                std::process::id(),
                random_u64()
            ));
            // `create`, never reuse: a directory that exists is someone else's.
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(Self(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => {
                    attempt += 1
                }
                Err(e) => anyhow::bail!("cannot create {}: {e}", dir.display()),
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// 64 random bits from the standard library's randomly seeded hasher (no RNG crate for one
/// directory name).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// In a worker process: installs its Prometheus recorder (before the worker starts, so the
/// worker's handles record into it) and answers on its socket for the rest of the process's
/// life, through the drain after SIGTERM (when `ready` says "draining").
pub(crate) fn serve_child(dir: PathBuf, index: usize, ready: Readiness) -> anyhow::Result<()> {
    let process = index.to_string();
    let handle = match kiq_server::metrics::prometheus_builder(&[("process", &process)])
        .install_recorder()
    {
        Ok(h) => Some(h),
        Err(e) => {
            // The program installed a `metrics` recorder of its own: kiq's metrics go there.
            tracing::warn!(error = %e, "a metrics recorder is already installed; --metrics-port serves nothing from this process");
            None
        }
    };
    let collector = metrics_process::Collector::default();
    collector.describe();
    let path = socket_of(&dir, index);
    // A socket left by this index's previous process.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", path.display()))?;
    tracing::info!(socket = %path.display(), "serving this process's metrics to the supervisor");
    if let Some(upkeep) = handle.clone() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP_EVERY);
            loop {
                tick.tick().await;
                upkeep.run_upkeep();
            }
        });
    }
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: try again shortly rather than spin.
                    tracing::warn!(error = %e, "metrics socket: cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (handle, collector, ready) = (handle.clone(), collector.clone(), ready.clone());
            tokio::spawn(async move {
                let answer = async {
                    let mut stream = BufReader::new(stream);
                    let mut line = String::new();
                    stream.read_line(&mut line).await?;
                    let reply = match line.trim() {
                        "metrics" => match &handle {
                            Some(h) => {
                                collector.collect();
                                h.render()
                            }
                            None => String::new(),
                        },
                        "ready" => match ready().await {
                            Ok(()) => "ok\n".to_string(),
                            Err(why) => format!("{why}\n"),
                        },
                        other => format!("unknown request {other:?}\n"),
                    };
                    stream.get_mut().write_all(reply.as_bytes()).await?;
                    stream.get_mut().shutdown().await
                };
                let _ = tokio::time::timeout(ASK_TIMEOUT, answer).await;
            });
        }
    });
    Ok(())
}

/// One exchange with process `index`.
async fn ask(dir: &Path, index: usize, request: &str) -> Result<String, String> {
    let exchange = async {
        let mut stream = UnixStream::connect(socket_of(dir, index))
            .await
            .map_err(|e| format!("process {index} does not answer: {e}"))?;
        stream
            .write_all(format!("{request}\n").as_bytes())
            .await
            .map_err(|e| format!("process {index}: {e}"))?;
        let mut reply = String::new();
        stream
            .read_to_string(&mut reply)
            .await
            .map_err(|e| format!("process {index}: {e}"))?;
        Ok(reply)
    };
    tokio::time::timeout(ASK_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("process {index} did not answer within 3 s")))
}

/// The supervisor's `/metrics`: every process's, merged, and how many answered
/// (`kiq_worker_processes_up` out of `kiq_worker_processes`).
pub(crate) fn supervisor_render(dir: PathBuf, processes: usize) -> Render {
    std::sync::Arc::new(move || {
        let dir = dir.clone();
        Box::pin(async move {
            let asks = (0..processes).map(|i| {
                let dir = dir.clone();
                async move { ask(&dir, i, "metrics").await }
            });
            let answers = futures_util::future::join_all(asks).await;
            let mut parts: Vec<String> = answers.into_iter().filter_map(Result::ok).collect();
            parts.push(format!(
                "# HELP kiq_worker_processes Worker processes this supervisor runs.\n# TYPE kiq_worker_processes gauge\nkiq_worker_processes {processes}\n# HELP kiq_worker_processes_up Worker processes that answered this scrape.\n# TYPE kiq_worker_processes_up gauge\nkiq_worker_processes_up {}\n",
                parts.len()
            ));
            kiq_server::metrics::merge_expositions(&parts)
        })
    })
}

/// The supervisor's `/readyz`: ready when every process is.
pub(crate) fn supervisor_ready(dir: PathBuf, processes: usize) -> Readiness {
    std::sync::Arc::new(move || {
        let dir = dir.clone();
        Box::pin(async move {
            let asks = (0..processes).map(|i| {
                let dir = dir.clone();
                async move {
                    match ask(&dir, i, "ready").await {
                        Ok(r) if r.trim() == "ok" => Ok(()),
                        Ok(r) => Err(format!("process {i}: {}", r.trim())),
                        Err(e) => Err(e),
                    }
                }
            });
            let not_ready: Vec<String> = futures_util::future::join_all(asks)
                .await
                .into_iter()
                .filter_map(Result::err)
                .collect();
            if not_ready.is_empty() {
                Ok(())
            } else {
                Err(not_ready.join("; "))
            }
        })
    })
}
