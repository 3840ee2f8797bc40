//! Test support for kiq: a private `redis-server` on a free loopback port.
//!
//! ```no_run
//! let redis = kiq_testkit::RedisServer::start().expect("redis-server");
//! println!("{}", redis.url()); // redis://127.0.0.1:<free port>
//! // stopped (and its directory removed) when `redis` is dropped
//! ```
//!
//! Each server gets its own directory under the system temp dir, never port 6379, and is
//! shut down when dropped. [`RedisServer::kill`] and [`RedisServer::restart`] exist for
//! chaos tests.

pub mod arb;
pub mod browser;
pub mod http;
pub mod topology;

pub use topology::{RedisCluster, RedisSentinels, TestRedis, Topology};

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Options for a private server.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// Turn on the append-only file (`appendfsync always`), for restart tests.
    pub aof: bool,
    /// Extra `redis-server` arguments, e.g. `["--maxmemory", "10mb"]`.
    pub extra_args: Vec<String>,
}

/// A `redis-server` child process owned by a test.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    options: RedisOptions,
}

/// Why a server could not be started.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

impl RedisServer {
    /// Starts a server with default options.
    pub fn start() -> Result<Self, StartError> {
        Self::start_with(RedisOptions::default())
    }

    /// Starts a server with `options` on a free loopback port and waits until it answers PING.
    pub fn start_with(options: RedisOptions) -> Result<Self, StartError> {
        let mut last = String::new();
        // A port found free can be taken before redis binds it: try a few. Each try has a
        // directory of its own: a failed try removes its directory when it is dropped (the
        // next try once found it gone, and failed whatever its port).
        for _ in 0..5 {
            let dir = std::env::temp_dir().join(format!(
                "kiq-redis-{}-{}",
                std::process::id(),
                unique_suffix()
            ));
            std::fs::create_dir_all(&dir).map_err(|e| StartError(format!("temp dir: {e}")))?;
            let port = free_port()?;
            let mut server = Self {
                child: None,
                port,
                dir,
                options: options.clone(),
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => last = e.0,
            }
        }
        Err(StartError(last))
    }

    fn spawn(&mut self) -> Result<(), StartError> {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--save")
            .arg("")
            .arg("--daemonize")
            .arg("no")
            // Replicas sync at once (Redis 7 waits 5 s by default for more to come).
            .arg("--repl-diskless-sync-delay")
            .arg("0")
            .arg("--logfile")
            .arg(self.dir.join("redis.log"));
        if self.options.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.args(&self.options.extra_args);
        // Redis writes configuration errors to stderr before it opens its log: keep them.
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stderr.log"))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = cmd.spawn().map_err(|e| {
            StartError(format!(
                "cannot run redis-server ({e}); install it (Debian: apt-get install redis-server)"
            ))
        })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(StartError(format!(
                        "redis-server exited at start ({status}); log: {}; stderr: {}",
                        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default(),
                        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
                    )));
                }
            }
            if ping(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(StartError(
            "redis-server did not answer PING within 10 s".into(),
        ))
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's working directory (log, AOF).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the server with SIGKILL and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again as a replica of the server on `primary_port`, as an operator
    /// brings back a failed primary that has no persistence: started as a primary, even for a
    /// moment, it is an empty primary that Sentinel may make the promoted server resync from.
    pub fn restart_as_replica_of(&mut self, primary_port: u16) -> Result<(), StartError> {
        let saved = self.options.extra_args.clone();
        if let Some(i) = self
            .options
            .extra_args
            .iter()
            .position(|a| a == "--replicaof")
        {
            let end = (i + 3).min(self.options.extra_args.len());
            self.options.extra_args.drain(i..end);
        }
        self.options.extra_args.extend([
            "--replicaof".to_string(),
            "127.0.0.1".to_string(),
            primary_port.to_string(),
        ]);
        let result = self.restart();
        self.options.extra_args = saved;
        result
    }

    /// Starts the server again on the same port and directory (AOF is replayed if enabled).
    pub fn restart(&mut self) -> Result<(), StartError> {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Sends one command (inline syntax) and returns the raw reply, for assertions in tests.
    pub fn command(&self, line: &str) -> Result<String, StartError> {
        topology::command_at(self.port, line)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_millis(500))).ok();
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    // NOAUTH also means "up": the server has ACLs and the probe has no password.
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
}

/// A loopback port nobody is listening on right now (never 6379).
pub fn free_port() -> Result<u16, StartError> {
    loop {
        let l =
            TcpListener::bind(("127.0.0.1", 0)).map_err(|e| StartError(format!("bind: {e}")))?;
        let port = l
            .local_addr()
            .map_err(|e| StartError(format!("addr: {e}")))?
            .port();
        // Never 6379 (a shared Redis may listen there). A cluster node also listens on its
        // port + 10000 (the cluster bus), so that port must exist (Redis refuses ports above
        // 55535 in cluster mode) and be free too.
        if port == 6379 || port > 55535 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return Ok(port);
        }
    }
}

fn unique_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    (N.fetch_add(1, Ordering::Relaxed) << 32) | nanos
}

/// Polls `check` every 10 ms until it returns true or `timeout` passes; returns whether it did.
/// For waiting on an observable event in tests, never a fixed sleep.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_stops() {
        let mut r = RedisServer::start().unwrap();
        assert_ne!(r.port(), 6379);
        assert!(r.command("PING").unwrap().starts_with("+PONG"));
        let port = r.port();
        r.kill();
        assert!(!ping(port));
        r.restart().unwrap();
        assert!(ping(port));
    }
}
