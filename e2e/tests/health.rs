//! Probes and logs for orchestrators: `/healthz` and `/readyz` on a worker's metrics listener
//! and on `taskctl serve` (no token), and `--log-format json`.

mod support;

use std::time::Duration;

use kiq_examples::math;
use kiq_testkit::http::request;
use kiq_testkit::wait_until;
use serde_json::Value;
use support::{redis_and_broker, ApiServer, Workers};

const WAIT: Duration = Duration::from_secs(20);

/// Status and JSON body; status 0 while nothing listens yet.
fn get(base: &str, path: &str) -> (u16, Value) {
    match request("GET", &format!("{base}{path}"), &[], None) {
        Ok(r) => (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        ),
        Err(_) => (0, Value::Null),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_and_the_server_answer_probes_and_log_json() {
    let (mut redis, broker) = redis_and_broker().await;
    let api = ApiServer::start(&redis.url());
    let port = kiq_testkit::free_port().unwrap();
    let workers = Workers::start(
        &redis.url(),
        2,
        &[
            "--metrics-port",
            &port.to_string(),
            "--log-format",
            "json",
            "--trace-tasks",
            "--queues",
            "default",
        ],
    );
    let worker = format!("http://127.0.0.1:{port}");

    // Live at once; ready once its consumer is registered.
    assert!(wait_until(WAIT, || get(&worker, "/healthz").0 == 200));
    assert!(wait_until(WAIT, || get(&worker, "/readyz").0 == 200));
    assert_eq!(get(&worker, "/readyz").1["status"], "ready");
    // One scrape target for both processes: each family once, a sample per process.
    let text = kiq_testkit::http::request("GET", &format!("{worker}/metrics"), &[], None)
        .unwrap()
        .text();
    let mut types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let n = types.len();
    types.sort_unstable();
    types.dedup();
    assert_eq!(types.len(), n, "a family appears twice:\n{text}");
    for p in ["0", "1"] {
        for name in [
            "kiq_worker_concurrency",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            assert!(
                support::sample(&text, name, &[("process", p)]).is_some(),
                "{name} of process {p} missing:\n{text}"
            );
        }
    }
    assert_eq!(
        support::sample(&text, "kiq_worker_processes_up", &[]),
        Some(2.0)
    );
    // The server's probes need no token (everything else does).
    assert_eq!(get(&api.base, "/healthz").0, 200);
    assert_eq!(get(&api.base, "/readyz").0, 200);
    assert_eq!(get(&api.base, "/api/stats").0, 401);

    // JSON logs: one object per line, the task's span fields on its lines.
    let h = math::add::kiq(&broker, 2, 3).await.unwrap();
    assert_eq!(h.wait_result(WAIT).await.unwrap(), 5);
    let id = h.id().to_string();
    assert!(
        wait_until(WAIT, || workers.log_text().contains(&id)),
        "{}",
        workers.log_text()
    );
    let log = workers.log_text();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty(), "{log}");
    let task_line = lines
        .iter()
        .find(|l| l["span"]["task_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no line in the task's span: {log}"));
    assert_eq!(task_line["span"]["task"], math::add::SPEC.name);

    // Redis down: still live, not ready, and both say why.
    redis.kill();
    assert!(wait_until(WAIT, || get(&worker, "/readyz").0 == 503));
    assert_eq!(get(&worker, "/healthz").0, 200);
    let (code, body) = get(&api.base, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["status"], "not_ready");
    assert!(
        body["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
}

/// After SIGTERM, while a task finishes, the one listener of `taskctl worker` goes on
/// answering: alive, not ready ("draining"), metrics still served; it closes once the
/// processes have stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_worker_still_answers_its_probes_and_says_it_drains() {
    use kiq_examples::faults;
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let (redis, broker) = redis_and_broker().await;
    let port = kiq_testkit::free_port().unwrap();
    let workers = Workers::start(
        &redis.url(),
        2,
        &["--metrics-port", &port.to_string(), "--queues", "default"],
    );
    let worker = format!("http://127.0.0.1:{port}");
    assert!(wait_until(WAIT, || get(&worker, "/readyz").0 == 200));
    let h = faults::nap::kiq(&broker, 3_000).await.unwrap();
    assert!(
        support::wait_for_state(&broker, h.id(), kiq::TaskState::Running).await,
        "the task never started"
    );
    kill(Pid::from_raw(workers.pid()), Signal::SIGTERM).unwrap();
    assert!(
        wait_until(WAIT, || {
            let (code, body) = get(&worker, "/readyz");
            code == 503
                && body["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("draining"))
        }),
        "readyz: {:?}",
        get(&worker, "/readyz")
    );
    assert_eq!(get(&worker, "/healthz").0, 200);
    let metrics = kiq_testkit::http::request("GET", &format!("{worker}/metrics"), &[], None)
        .map(|r| (r.status, r.text()))
        .unwrap();
    assert_eq!(metrics.0, 200);
    assert!(metrics.1.contains("kiq_worker_executing"), "{}", metrics.1);
    // The task finishes within the drain, and the listener goes with the processes.
    assert_eq!(h.wait_result(WAIT).await.unwrap(), 3_000);
    assert!(
        wait_until(WAIT, || get(&worker, "/healthz").0 == 0),
        "the listener outlived the supervisor"
    );
    drop(workers);
}
