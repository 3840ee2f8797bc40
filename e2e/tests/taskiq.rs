//! Taskiq interop, both ways, with the real Python packages (taskiq 0.13.0, taskiq-redis 1.2.4,
//! pinned in `e2e/python/requirements.txt`) on a private Redis:
//! - Python `task.kiq()` served by a kiq worker (`taskctl worker --taskiq ...`), results read by
//!   Python as pickle and as JSON, keyword arguments, labels, errors and bad input;
//! - a kiq producer dispatching to a Python Taskiq worker and reading its results;
//! - a stream shared by Python and kiq workers through one consumer group;
//! - kiq taking over a stopped kiq worker's Taskiq entries, never a Python worker's.
//!
//! The venv comes from `scripts/setup.sh` (`kiq_need_taskiq_venv`, called by
//! `scripts/test.sh`, which exports `KIQ_TASKIQ_PYTHON`). Without it these tests fail and say
//! how to make it. Python workers of these versions do not stop promptly on SIGTERM: they are
//! stopped with SIGKILL to their own process group.

mod support;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kiq::broker::taskiq::{RemoteTask, ResultFormat, TaskiqStream};
use kiq::WaitError;
use serde_json::{json, Value};
use support::{wait_until, RedisServer, Workers};

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("KIQ_TASKIQ_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME");
    let p = cache.join("kiq/venv-taskiq-0.13.0-redis-1.2.4/bin/python");
    assert!(
        p.exists(),
        "the Taskiq interop tests need the test venv, which scripts/test.sh creates; create it \
         with `bash -c 'source scripts/setup.sh && kiq_need_taskiq_venv'` (from the repository \
         root), or set KIQ_TASKIQ_PYTHON to a python with e2e/python/requirements.txt"
    );
    p
}

/// A plain connection for assertions, on any topology `KIQ_TEST_TOPOLOGY` names (the cluster's
/// follows its slots; Sentinel's goes to the primary).
fn raw(redis: &RedisServer) -> Box<dyn redis::ConnectionLike> {
    match redis {
        RedisServer::Cluster(c) => {
            let seeds: Vec<String> = c.nodes().iter().map(|n| n.url()).collect();
            Box::new(
                redis::cluster::ClusterClient::new(seeds)
                    .unwrap()
                    .get_connection()
                    .unwrap(),
            )
        }
        RedisServer::Sentinel(s) => Box::new(
            redis::Client::open(format!("redis://127.0.0.1:{}", s.primary_port().unwrap()))
                .unwrap()
                .get_connection()
                .unwrap(),
        ),
        RedisServer::Single(r) => Box::new(
            redis::Client::open(r.url())
                .unwrap()
                .get_connection()
                .unwrap(),
        ),
    }
}

fn python_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// The Python side's settings (see `e2e/python/kiq_interop.py`).
#[derive(Clone)]
struct PySide {
    url: String,
    stream: &'static str,
    results: &'static str,
    prefix: &'static str,
    idle_ms: u64,
}

impl PySide {
    fn new(url: &str, stream: &'static str) -> Self {
        Self {
            url: url.to_string(),
            stream,
            results: "pickle",
            prefix: "",
            idle_ms: 600_000,
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(python());
        cmd.current_dir(python_dir())
            .env("KIQ_TEST_REDIS_URL", &self.url)
            .env("KIQ_TEST_STREAM", self.stream)
            .env("KIQ_TEST_RESULTS", self.results)
            .env("KIQ_TEST_PREFIX", self.prefix)
            .env("KIQ_TEST_IDLE_MS", self.idle_ms.to_string())
            .env("PYTHONUNBUFFERED", "1");
        cmd
    }

    /// Starts `producer.py` with `calls`; its output is one JSON line per call.
    fn spawn_producer(&self, calls: &Value, timeout_s: u64) -> Child {
        let mut child = self
            .command()
            .arg("producer.py")
            .arg(timeout_s.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .expect("start producer.py");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(calls.to_string().as_bytes())
            .expect("write calls");
        child
    }

    /// Runs `producer.py` with `calls` and returns what each call gave.
    fn produce(&self, calls: &Value) -> Vec<Value> {
        outputs(self.spawn_producer(calls, 30))
    }

    /// Starts a Python Taskiq worker (`taskiq worker kiq_interop:broker`) and waits until it
    /// reads the stream (it logs "Listening started").
    fn worker(&self) -> PyWorker {
        let log = std::env::temp_dir().join(format!(
            "kiq-taskiq-worker-{}-{}.log",
            std::process::id(),
            self.stream
        ));
        let file = std::fs::File::create(&log).expect("worker log");
        let child = self
            .command()
            .args([
                "-m",
                "taskiq",
                "worker",
                "kiq_interop:broker",
                "--workers",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(file)
            .process_group(0)
            .spawn()
            .expect("start the Python worker");
        let w = PyWorker(child);
        let ready = wait_until(Duration::from_secs(60), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Listening started"))
        });
        assert!(
            ready,
            "the Python worker did not start within 60 s: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        w
    }
}

/// A Python worker, killed with its process group when dropped.
struct PyWorker(Child);

impl Drop for PyWorker {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

fn outputs(child: Child) -> Vec<Value> {
    let out = child.wait_with_output().expect("producer.py output");
    assert!(out.status.success(), "producer.py failed: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn ok(v: &Value) -> &Value {
    assert_eq!(v["ok"], json!(true), "{v}");
    &v["value"]
}

fn err(v: &Value) -> (&str, &str) {
    assert_eq!(v["ok"], json!(false), "{v}");
    (
        v["exc_type"].as_str().unwrap(),
        v["message"].as_str().unwrap(),
    )
}

/// The calls a Python producer makes to kiq's `interop.*` tasks, and what each must give.
fn python_calls() -> Value {
    json!([
        {"name": "interop.add", "args": [2, 3]},
        {"name": "interop.add", "kwargs": {"a": 20, "b": 22}},
        {"name": "interop.add", "args": [5], "kwargs": {"b": 6}},
        {"name": "interop.greet", "args": ["wörld ✓"], "kwargs": {"punctuation": "!"}},
        {"name": "interop.summarise", "args": [[1.5, 2.5, 3]]},
        {"name": "interop.fail", "args": ["boom: kiq interop"]},
        {"name": "interop.flaky", "args": [7], "labels": {"retry_on_error": "True", "max_retries": "2"}},
        {"name": "interop.flaky", "args": [8], "labels": {"retry_on_error": "False"}},
        {"name": "interop.add", "args": [1], "kwargs": {"c": 2}},
        {"name": "interop.add", "args": ["x", "y"]},
        {"name": "interop.no_such_task", "args": []},
        // A delay past ten years: kiq refuses the dispatch, and says so to the caller.
        {"name": "interop.add", "args": [1, 2], "labels": {"delay": "400000000"}},
    ])
}

fn check_python_results(r: &[Value]) {
    assert_eq!(r.len(), 12, "{r:?}");
    assert_eq!(ok(&r[0]), &json!(5));
    assert_eq!(ok(&r[1]), &json!(42));
    assert_eq!(ok(&r[2]), &json!(11));
    assert_eq!(ok(&r[3]), &json!("hello wörld ✓!"));
    assert_eq!(ok(&r[4]), &json!({"count": 3, "total": 7.0}));
    assert_eq!(err(&r[5]), ("TaskError", "boom: kiq interop"));
    // retry_on_error honoured: retried once, then succeeded; not retried when False.
    assert_eq!(ok(&r[6]), &json!(7));
    assert_eq!(err(&r[7]), ("TaskError", "first attempt fails"));
    let (t, m) = err(&r[8]);
    assert_eq!(t, "BadArguments");
    assert!(m.contains("unexpected keyword argument \"c\""), "{m}");
    let (t, m) = err(&r[9]);
    assert_eq!(t, "BadArguments");
    // In the caller's terms: JSON types, not MessagePack markers.
    assert!(
        m.contains("interop.add, [integer, integer]") && m.contains("found a string"),
        "{m}"
    );
    let (t, m) = err(&r[10]);
    assert_eq!(t, "UnknownTask");
    assert!(m.contains("interop.no_such_task"), "{m}");
    let (t, m) = err(&r[11]);
    assert_eq!(t, "Refused");
    assert!(m.contains("10 years"), "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_calls_run_on_kiq_with_pickle_and_json_results() {
    let redis = RedisServer::start().expect("redis");
    let url = redis.url();
    // One worker serves Taskiq's default stream (pickle results), another a stream whose
    // Python side reads JSON under a prefix.
    let _pickle = Workers::start(&url, 1, &["--taskiq", "taskiq"]);
    let _json = Workers::start(
        &url,
        1,
        &[
            "--taskiq",
            "tq-json",
            "--taskiq-results",
            "json",
            "--taskiq-result-prefix",
            "p",
            "--taskiq-result-ttl",
            "10m",
        ],
    );
    let py = PySide::new(&url, "taskiq");
    check_python_results(&py.produce(&python_calls()));
    let json_side = PySide {
        results: "json",
        prefix: "p",
        ..PySide::new(&url, "tq-json")
    };
    let r = json_side.produce(&python_calls());
    check_python_results(&r);

    let mut conn = raw(&redis);
    // The JSON side's results are JSON under the prefix, with the TTL asked for.
    let id = r[0]["task_id"].as_str().unwrap();
    let raw: Vec<u8> = redis::cmd("GET")
        .arg(format!("p:{id}"))
        .query(&mut *conn)
        .unwrap();
    let stored: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(stored["return_value"], json!(5));
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("p:{id}"))
        .query(&mut *conn)
        .unwrap();
    assert!(pttl > 0 && pttl <= 600_000, "{pttl}");
    // kiq acks and deletes what it took: nothing left in Taskiq's streams.
    for stream in ["taskiq", "tq-json"] {
        let emptied = wait_until(Duration::from_secs(20), || {
            redis::cmd("XLEN")
                .arg(stream)
                .query::<u64>(&mut *conn)
                .unwrap()
                == 0
        });
        assert!(emptied, "{stream} still holds entries");
    }
    // The messages that could never run are dead letters with their reason (listed under the
    // kiq queue `taskiq`), and kiq's own record of each task that ran is there too.
    let broker = kiq::Broker::connect(&url).await.unwrap();
    let dead = broker
        .inspector()
        .dead_letters("taskiq", "-", 100)
        .await
        .unwrap();
    let mut reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "bad_arguments",
            "bad_arguments",
            "refused",
            "refused",
            "unknown_task",
            "unknown_task"
        ]
    );
    assert!(dead.iter().all(|d| d
        .origin
        .as_deref()
        .is_some_and(|o| o.starts_with("taskiq:"))));
    let rec = broker.record(id).await.unwrap().expect("kiq's record");
    assert_eq!(rec.state, kiq::TaskState::Succeeded);
    // A replayed Taskiq dead letter goes back to its Taskiq stream (and dead-letters again:
    // the task still does not exist).
    let unknown = dead.iter().find(|d| d.reason == "unknown_task").unwrap();
    assert!(broker
        .inspector()
        .replay_dead_letter("taskiq", &unknown.id)
        .await
        .unwrap());
    let inspector = broker.inspector();
    let again = wait_until(Duration::from_secs(20), || {
        let dead = futures_block(inspector.dead_letters("taskiq", "-", 100));
        dead.iter().any(|d| {
            d.reason == "unknown_task" && d.id != unknown.id && d.task_id == unknown.task_id
        })
    });
    assert!(
        again,
        "the replayed message did not come back through its Taskiq stream"
    );
}

/// Runs a future to completion from a synchronous closure (inside a multi-thread runtime).
fn futures_block<F: std::future::Future<Output = Result<T, E>>, T: Default, E>(f: F) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn kiq_dispatches_to_python_workers_and_reads_their_results() {
    let redis = RedisServer::start().expect("redis");
    let url = redis.url();
    let _pickle_worker = PySide::new(&url, "py-tasks").worker();
    let _json_worker = PySide {
        results: "json",
        ..PySide::new(&url, "py-json")
    }
    .worker();
    let broker = kiq::Broker::connect(&url).await.unwrap();

    /// A typed declaration of Python's `py.mul(a: int, b: int) -> int`.
    const MUL: RemoteTask<(i64, i64), i64> = RemoteTask::new("py.mul");
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Described {
        name: String,
        size: i64,
        tags: Vec<String>,
    }
    let t = Duration::from_secs(30);
    for (stream, format) in [
        ("py-tasks", ResultFormat::Pickle),
        ("py-json", ResultFormat::Json),
    ] {
        let py = broker.taskiq(TaskiqStream::new(stream).results(format));
        assert_eq!(
            MUL.kiq(&py, (6, 7))
                .await
                .unwrap()
                .wait_result(t)
                .await
                .unwrap(),
            42
        );
        let kw = MUL
            .call(&py)
            .kwarg("a", &3)
            .kwarg("b", &4)
            .kiq::<i64>()
            .await
            .unwrap();
        assert_eq!(kw.wait_result(t).await.unwrap(), 12);
        let d = py
            .call("py.describe")
            .args(&("bolt",))
            .kwargs(&json!({"tags": ["m3", "steel"]}))
            .kiq::<Described>()
            .await
            .unwrap();
        assert_eq!(
            d.wait_result(t).await.unwrap(),
            Described {
                name: "bolt".into(),
                size: 1,
                tags: vec!["m3".into(), "steel".into()]
            }
        );
        // A Python exception is kiq's typed failure, with its class and message.
        let failed = py
            .call("py.fail")
            .args(&("bad input: ✗",))
            .kiq::<()>()
            .await
            .unwrap();
        match failed.wait_result(t).await {
            Err(WaitError::Failed(f)) => {
                assert_eq!(f.error_type.as_deref(), Some("ValueError"), "{stream}");
                assert_eq!(f.message, "bad input: ✗");
            }
            other => panic!("{stream}: {other:?}"),
        }
        // The wrong output type is a decode error, not a wrong value.
        let wrong = MUL.call(&py).args(&(2, 2)).kiq::<String>().await.unwrap();
        assert!(matches!(
            wrong.wait_result(t).await,
            Err(WaitError::Decode(_))
        ));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_shared_with_python_workers_serves_every_task_once() {
    let redis = RedisServer::start().expect("redis");
    let url = redis.url();
    // kiq runs interop.add, Python runs py.mul (and interop.add too: the task being moved).
    // Passes back for up to about three minutes: long enough for a Python worker to start on a
    // loaded machine (CI runs this beside the other tests, on a Sentinel set too).
    let _kiq = Workers::start(
        &url,
        1,
        &[
            "--taskiq",
            "mixed",
            "--taskiq-shared",
            "--taskiq-max-hops",
            "40",
        ],
    );
    let py = PySide::new(&url, "mixed");
    let mut calls = Vec::new();
    for i in 0..15 {
        calls.push(json!({"name": "interop.add", "args": [i, i]}));
        calls.push(json!({"name": "py.mul", "args": [i, 3]}));
    }
    // The producer sends before any Python worker runs: kiq takes every message, runs
    // interop.add and passes py.mul back to the stream until a Python worker takes them.
    let producer = py.spawn_producer(&Value::Array(calls), 200);
    let mut conn = raw(&redis);
    let broker = kiq::Broker::connect(&url).await.unwrap();
    let inspector = broker.inspector();
    let kiq_took = wait_until(Duration::from_secs(20), || {
        futures_block(inspector.counters())
            .get("succeeded")
            .is_some_and(|n| *n >= 15)
    });
    assert!(kiq_took, "kiq did not run the interop.add calls");
    let _python = py.worker();
    let r = outputs(producer);
    assert_eq!(r.len(), 30);
    for (i, pair) in r.chunks(2).enumerate() {
        let i = i as i64;
        assert_eq!(ok(&pair[0]), &json!(2 * i));
        assert_eq!(ok(&pair[1]), &json!(3 * i));
    }
    // Every message was served once: interop.add by kiq (15, none by Python, which started
    // after kiq had taken them), py.mul by Python (15 runs: no pass-back was sent twice).
    let counters = futures_block(inspector.counters());
    assert_eq!(counters.get("succeeded"), Some(&15), "{counters:?}");
    let python_ran = |conn: &mut dyn redis::ConnectionLike, task: &str| -> u64 {
        redis::cmd("GET")
            .arg(format!("kiq-test:python-ran:{task}"))
            .query::<Option<u64>>(conn)
            .unwrap()
            .unwrap_or(0)
    };
    assert_eq!(python_ran(&mut *conn, "py.mul"), 15);
    assert_eq!(python_ran(&mut *conn, "interop.add"), 0);
    // Nothing is left pending (Python acks after writing its result: wait for it).
    let settled = wait_until(Duration::from_secs(20), || {
        let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
            .arg("mixed")
            .arg("taskiq")
            .query(&mut *conn)
            .unwrap();
        pending.0 == 0
    });
    assert!(settled, "entries are left pending");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_no_worker_serves_on_a_shared_stream_ends_as_a_dead_letter() {
    let redis = RedisServer::start().expect("redis");
    let url = redis.url();
    let _kiq = Workers::start(
        &url,
        1,
        &[
            "--taskiq",
            "mixed",
            "--taskiq-shared",
            "--taskiq-max-hops",
            "3",
        ],
    );
    let py = PySide::new(&url, "mixed");
    let r = py.produce(&json!([{"name": "nobody.serves", "args": [1]}]));
    let (t, m) = err(&r[0]);
    assert_eq!(t, "UnknownTask");
    assert!(m.contains("3 passes"), "{m}");
    let broker = kiq::Broker::connect(&url).await.unwrap();
    let dead = broker
        .inspector()
        .dead_letters("taskiq", "-", 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].task.as_deref(), Some("nobody.serves"));
}

#[tokio::test(flavor = "multi_thread")]
async fn kiq_takes_over_a_stopped_kiq_workers_taskiq_entries_but_never_pythons() {
    let redis = RedisServer::start().expect("redis");
    let url = redis.url();
    let mut conn = raw(&redis);
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("taskiq")
        .arg("taskiq")
        .arg("$")
        .arg("MKSTREAM")
        .query(&mut *conn)
        .unwrap();
    let message = |id: &str, a: i64| {
        format!(
            r#"{{"task_id": "{id}", "task_name": "interop.add", "labels": {{}}, "args": [{a}, 1], "kwargs": {{}}}}"#
        )
    };
    // One message read by a kiq worker that then died, one by a (live, slow) Python worker.
    for (id, consumer, a) in [
        (
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "kiq-dead-host-1-abcdef",
            1,
        ),
        (
            "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
            "5f0c6a4e-3c1b-4a57-9e0e-1d2f3a4b5c6d",
            2,
        ),
    ] {
        let _: String = redis::cmd("XADD")
            .arg("taskiq")
            .arg("*")
            .arg("data")
            .arg(message(id, a))
            .query(&mut *conn)
            .unwrap();
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("taskiq")
            .arg(consumer)
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg("taskiq")
            .arg(">")
            .query(&mut *conn)
            .unwrap();
    }
    let _kiq = Workers::start(
        &url,
        1,
        &["--taskiq", "taskiq", "--taskiq-reclaim-after", "1s"],
    );
    let py = broker_for(&url).await;
    let handle = py.handle::<i64>("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    assert_eq!(
        handle.wait_result(Duration::from_secs(30)).await.unwrap(),
        2
    );
    // The Python worker's entry stays with it, however long it has been idle.
    std::thread::sleep(Duration::from_secs(3));
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg("taskiq")
        .arg("taskiq")
        .arg("-")
        .arg("+")
        .arg(10)
        .query(&mut *conn)
        .unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].1, "5f0c6a4e-3c1b-4a57-9e0e-1d2f3a4b5c6d");
    let none: Option<Vec<u8>> = redis::cmd("GET")
        .arg("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")
        .query(&mut *conn)
        .unwrap();
    assert!(none.is_none());
}

async fn broker_for(url: &str) -> kiq::broker::taskiq::TaskiqClient {
    kiq::Broker::connect(url)
        .await
        .unwrap()
        .taskiq(TaskiqStream::default())
}

/// A `taskctl scheduler` replica, SIGKILLed when dropped.
struct SchedulerProcess(Child);

impl SchedulerProcess {
    fn start(url: &str) -> Self {
        Self(
            Command::new(support::taskctl())
                .args(["scheduler", "--redis-url", url, "--lease-ttl", "2s"])
                .args([
                    "--taskiq-schedules",
                    "schedule",
                    "--taskiq-stream",
                    "sched-out",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start taskctl scheduler"),
        )
    }
}

impl Drop for SchedulerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One stream entry as XRANGE gives it: its id and its fields.
type Entry = (String, Vec<(String, Vec<u8>)>);

/// The Taskiq messages in `stream`, oldest first.
fn sent(conn: &mut dyn redis::ConnectionLike, stream: &str) -> Vec<Value> {
    let entries: Vec<Entry> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(conn)
        .unwrap();
    entries
        .into_iter()
        .filter_map(|(_, fields)| {
            fields
                .into_iter()
                .find(|(k, _)| k == "data")
                .map(|(_, v)| serde_json::from_slice(&v).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn python_schedules_fire_once_per_tick_under_kiqs_scheduler() {
    let redis = RedisServer::start().expect("redis");
    let url = redis.url();
    let mut conn = raw(&redis);
    // Python stores its schedules (then exits: it keeps owning them, kiq only reads them).
    let at = (chrono::Utc::now() + chrono::Duration::seconds(3))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let plain = match &redis {
        RedisServer::Single(r) => r.url(),
        RedisServer::Sentinel(s) => format!("redis://127.0.0.1:{}", s.primary_port().unwrap()),
        RedisServer::Cluster(_) => panic!(
            "Python's ListRedisScheduleSource cannot write to a Redis Cluster: this test runs on \
             one server and on Sentinel (scripts/test.sh skips it on a cluster)"
        ),
    };
    let out = PySide::new(&url, "taskiq")
        .command()
        .env("KIQ_TEST_PLAIN_URL", plain)
        .args(["schedules.py", &at])
        .output()
        .expect("schedules.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Two replicas: one is active under the lease.
    let first = SchedulerProcess::start(&url);
    let _second = SchedulerProcess::start(&url);
    let ticks = |conn: &mut dyn redis::ConnectionLike, schedule: &str| {
        sent(conn, "sched-out")
            .into_iter()
            .filter(|m| m["labels"]["schedule_id"] == json!(schedule))
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(Duration::from_secs(30), || ticks(
            &mut *conn,
            "every-second"
        )
        .len()
            >= 3),
        "the interval schedule did not fire"
    );
    // The active replica dies; the other takes over and carries on, firing missed ticks once.
    drop(first);
    let before = ticks(&mut *conn, "every-second").len();
    assert!(
        wait_until(Duration::from_secs(30), || {
            ticks(&mut *conn, "every-second").len() >= before + 4
                && ticks(&mut *conn, "one-shot").len() == 1
        }),
        "the schedules did not go on after a failover"
    );
    let every = ticks(&mut *conn, "every-second");
    let mut at_ms: Vec<u64> = every
        .iter()
        .map(|m| {
            let id = m["task_id"].as_str().unwrap();
            assert!(id.starts_with("s:taskiq.every-second:"), "{id}");
            id.rsplit(':').next().unwrap().parse().unwrap()
        })
        .collect();
    let n = at_ms.len();
    at_ms.dedup();
    assert_eq!(at_ms.len(), n, "a tick was sent twice: {at_ms:?}");
    assert!(
        at_ms.windows(2).all(|w| w[1] - w[0] == 1000),
        "a tick was skipped or sent out of order: {at_ms:?}"
    );
    // Sent as `taskiq scheduler` sends them: stored labels and the schedule id, all as strings.
    let m = &every[0];
    assert_eq!(m["task_name"], json!("interop.add"));
    assert_eq!(m["args"], json!([3, 4]));
    assert_eq!(m["labels"]["retry_on_error"], json!("False"));
    assert_eq!(m["labels_types"]["schedule_id"], json!(3));
    let two = ticks(&mut *conn, "every-2s-timedelta");
    assert!(!two.is_empty());
    assert_eq!(two[0]["kwargs"], json!({"a": 1, "b": 1}));
    // The one-shot fired once; the nightly cron (02:00 Berlin) is not due.
    assert_eq!(ticks(&mut *conn, "one-shot").len(), 1);
    assert!(ticks(&mut *conn, "nightly-berlin").is_empty());
    // A kiq worker serving the stream runs them, and the results are where Python reads them.
    let _worker = Workers::start(&url, 1, &["--taskiq", "sched-out"]);
    let one_shot_id = ticks(&mut *conn, "one-shot")[0]["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    let py = kiq::Broker::connect(&url)
        .await
        .unwrap()
        .taskiq(TaskiqStream::new("sched-out"));
    assert_eq!(
        py.handle::<String>(one_shot_id)
            .wait_result(Duration::from_secs(30))
            .await
            .unwrap(),
        "hello once."
    );
}
