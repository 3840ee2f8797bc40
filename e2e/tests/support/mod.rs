//! Shared harness of the end-to-end tests: a private Redis, a `taskctl worker` supervisor
//! process, and bounded waits on events.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kiq::Broker;
pub use kiq_testkit::{wait_until, TestRedis as RedisServer};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Path of the `taskctl` binary built from this package (example tasks linked in).
pub fn taskctl() -> &'static str {
    env!("CARGO_BIN_EXE_e2e-taskctl")
}

/// A private Redis and a broker connected to it.
pub async fn redis_and_broker() -> (RedisServer, Broker) {
    let redis = RedisServer::start().expect("start redis-server");
    let broker = Broker::connect(&redis.url()).await.expect("connect");
    (redis, broker)
}

/// Enqueues task `task` on `default` by name with `args` (any serde value, encoded as-is): for
/// messages no typed `.kiq()` can produce (unknown names, wrong argument types). Returns the id.
pub async fn enqueue_by_name<A: serde::Serialize>(broker: &Broker, task: &str, args: &A) -> String {
    let msg = broker
        .prepare_raw(kiq::broker::RawDispatch {
            task,
            queue: "default",
            args: kiq::broker::codec::encode(args).unwrap(),
            task_id: None,
            labels: Default::default(),
            retry: None,
            timeout: None,
            due_ms: None,
            unique_key: None,
            priority: Default::default(),
        })
        .unwrap();
    broker.enqueue(msg).await.unwrap()
}

/// Waits (bounded, 20 s) until task `id`'s record is in `state`.
pub async fn wait_for_state(broker: &Broker, id: &str, state: kiq::TaskState) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(r)) = broker.record(id).await {
            if r.state == state {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// An `HGETALL` reply of the `tally` task's hash as item → executions, so tests can tell lost
/// work (absent) from duplicates (more than 1).
pub fn parse_tallies(reply: &str) -> std::collections::HashMap<u64, u64> {
    let vals: Vec<&str> = reply
        .lines()
        .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
        .collect();
    vals.chunks(2)
        .filter_map(|kv| Some((kv[0].parse().ok()?, kv.get(1)?.parse().ok()?)))
        .collect()
}

/// Runs `taskctl <args> --redis-url <url>` to completion.
pub fn taskctl_at(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(taskctl())
        .args(args)
        .args(["--redis-url", url])
        .output()
        .expect("run taskctl")
}

/// A running `taskctl worker` supervisor.
pub struct Workers {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Workers {
    /// `taskctl worker --workers n --redis-url url <extra>`.
    pub fn start(url: &str, n: usize, extra: &[&str]) -> Self {
        Self::start_env(url, n, extra, &[])
    }

    /// Like [`Workers::start`], with extra environment variables.
    pub fn start_env(url: &str, n: usize, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let log = std::env::temp_dir().join(format!(
            "kiq-workers-{}-{}.log",
            std::process::id(),
            uuid_like()
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let err = file.try_clone().expect("log file");
        let mut cmd = Command::new(taskctl());
        cmd.arg("worker")
            .arg("--workers")
            .arg(n.to_string())
            .arg("--redis-url")
            .arg(url)
            .args(extra)
            .env("KIQ_LOG", "info")
            .env_remove("KIQ_WORKER_CHILD")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn taskctl worker");
        let w = Self {
            child: Some(child),
            log,
        };
        let pid = w.pid();
        assert!(
            wait_until(Duration::from_secs(20), || children_of(pid).len() >= n),
            "worker processes did not start; log:\n{}",
            w.log_text()
        );
        w
    }

    /// The supervisor's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// The worker processes' pids.
    pub fn children(&self) -> Vec<i32> {
        children_of(self.pid())
    }

    /// Everything the supervisor and its workers logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM to the supervisor, then waits (bounded) for it to exit.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let status = wait_exit(&mut child, Duration::from_secs(60));
        match status {
            Some(s) => s,
            None => {
                let _ = child.kill();
                panic!(
                    "supervisor did not stop within 60 s; log:\n{}",
                    self.log_text()
                );
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as i32;
            for c in children_of(pid) {
                let _ = kill(Pid::from_raw(c), Signal::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// Waits up to `timeout` for `child` to exit.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Live child processes of `parent`, from /proc.
pub fn children_of(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name: state, ppid, ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid = fields.next().and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(parent) && state != "Z" {
            out.push(pid);
        }
    }
    out
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A running `taskctl serve`.
pub struct ApiServer {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

/// The token the test servers use.
pub const API_TOKEN: &str = "test-token-0123";

impl ApiServer {
    /// `taskctl serve` against `redis_url` on a free port; returns once it answers.
    pub fn start(redis_url: &str) -> Self {
        Self::start_env(redis_url, &[])
    }

    /// Like [`ApiServer::start`], with extra environment variables.
    pub fn start_env(redis_url: &str, env: &[(&str, &str)]) -> Self {
        let port = kiq_testkit::free_port().expect("free port");
        let child = Command::new(taskctl())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--token", API_TOKEN, "--redis-url", redis_url])
            .env("KIQ_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn taskctl serve");
        let base = format!("http://127.0.0.1:{port}");
        let s = Self { child, base };
        assert!(
            wait_until(Duration::from_secs(20), || {
                kiq_testkit::http::request("GET", &format!("{}/", s.base), &[], None).is_ok()
            }),
            "taskctl serve did not come up"
        );
        s
    }

    /// A request with the bearer token; returns the status and the body as JSON (or Null).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let auth = format!("Bearer {API_TOKEN}");
        let bytes = body.map(|b| b.to_string().into_bytes());
        let mut headers = vec![("Authorization", auth.as_str())];
        if bytes.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let r = kiq_testkit::http::request(
            method,
            &format!("{}{path}", self.base),
            &headers,
            bytes.as_deref(),
        )
        .expect("request");
        let json = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
        (r.status, json)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the sample of metric `name` whose labels include all of `labels`, in a
/// Prometheus text exposition (label order does not matter).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (set, value) = match rest.strip_prefix('{') {
            Some(r) => r.rsplit_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|(k, v)| set.split(',').any(|p| p == format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}
