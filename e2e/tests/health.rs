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
        1,
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
