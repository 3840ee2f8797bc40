//! The HTTP API of `taskctl serve`, end to end: auth, tasks, stats, schedules, dead letters,
//! errors, the OpenAPI document, and Prometheus metrics from the server and the workers.

mod support;

use std::time::Duration;

use kiq_testkit::http::request;
use serde_json::{json, Value};
use support::{redis_and_broker, wait_until, ApiServer, Workers, API_TOKEN};

const ADD: &str = "kiq_examples::math::add";

fn wait_for(server: &ApiServer, id: &str, state: &str) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(Duration::from_secs(20), || {
        let (code, t) = server.call("GET", &format!("/api/tasks/{id}"), None);
        last = t.clone();
        code == 200 && t["state"] == state
    });
    assert!(ok, "task {id} never reached {state}: {last}");
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_creates_lists_and_cancels_tasks_behind_a_token() {
    let (redis, broker) = redis_and_broker().await;
    // The API server first, listening before the worker's metrics port is picked: picked
    // first, that port was not yet bound when the server picked its own, and both once got the
    // same one (the API's requests reached the worker's metrics server).
    let api = ApiServer::start(&redis.url());
    let metrics_port = kiq_testkit::free_port().unwrap();
    let _w = Workers::start(
        &redis.url(),
        1,
        &[
            "--queues",
            "default",
            "--metrics-port",
            &metrics_port.to_string(),
        ],
    );

    // Every API route needs the token; errors are JSON.
    let r = request("GET", &format!("{}/api/stats", api.base), &[], None).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let err: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(err["error"]["code"], "unauthorized");
    let wrong = request(
        "GET",
        &format!("{}/metrics", api.base),
        &[("Authorization", "Bearer nope-nope-nope")],
        None,
    )
    .unwrap();
    assert_eq!(wrong.status, 401);
    let (code, doc) = api.call("GET", "/api/openapi.json", None);
    assert_eq!(code, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/tasks"]["post"].is_object());

    // Create by name, with a priority; the worker runs it.
    let (code, created) = api.call(
        "POST",
        "/api/tasks",
        Some(json!({"task": ADD, "args": [2, 3], "priority": "high"})),
    );
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["state"], "pending");
    let id = created["id"].as_str().unwrap().to_string();
    let done = wait_for(&api, &id, "succeeded");
    assert_eq!(done["output"], 5);
    assert_eq!(done["history"][0]["state"], "pending");
    assert!(done["trace"].as_str().unwrap().starts_with("00-"));
    // A caller's traceparent is continued by the task's execution.
    let traced = request(
        "POST",
        &format!("{}/api/tasks", api.base),
        &[
            ("Authorization", &format!("Bearer {API_TOKEN}")),
            ("Content-Type", "application/json"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ],
        Some(json!({"task": ADD, "args": [1, 1]}).to_string().as_bytes()),
    )
    .unwrap();
    let traced: Value = serde_json::from_slice(&traced.body).unwrap();
    let traced = wait_for(&api, traced["id"].as_str().unwrap(), "succeeded");
    assert!(traced["trace"]
        .as_str()
        .unwrap()
        .starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
    let (_, listed) = api.call("GET", "/api/tasks?state=succeeded&queue=default", None);
    assert!(listed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["id"] == id.as_str()));

    // A delayed one is scheduled, listed as such, and can be cancelled.
    let (code, later) = api.call(
        "POST",
        "/api/tasks",
        Some(json!({"task": ADD, "args": [1, 1], "delay": "10m"})),
    );
    assert_eq!(code, 201);
    assert_eq!(later["state"], "scheduled");
    let later_id = later["id"].as_str().unwrap();
    let (_, listed) = api.call("GET", "/api/tasks?state=scheduled", None);
    assert_eq!(listed["tasks"][0]["id"], later_id);
    let (code, c) = api.call("POST", &format!("/api/tasks/{later_id}/cancel"), None);
    assert_eq!((code, c["outcome"].as_str()), (200, Some("cancelled")));
    let (_, c) = api.call("POST", &format!("/api/tasks/{id}/cancel"), None);
    assert_eq!(c["outcome"], "already_finished");

    // A name no live worker runs is refused with the names they do run; "force" sends it.
    let (code, e) = api.call(
        "POST",
        "/api/tasks",
        Some(json!({"task": "no.such.task", "queue": "nowhere"})),
    );
    assert_eq!(code, 404);
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("no live worker runs a task named \"no.such.task\"")
            && msg.contains(ADD)
            && msg.contains("\"force\": true"),
        "{msg}"
    );
    let (code, forced) = api.call(
        "POST",
        "/api/tasks",
        Some(json!({"task": "no.such.task", "queue": "nowhere", "force": true})),
    );
    assert_eq!(code, 201, "{forced}");
    assert_eq!(forced["state"], "pending");

    // Bad input: clear errors with the right status, nothing enqueued.
    for (body, status, code) in [
        (
            json!({"task": "no.such.task", "args": []}),
            404,
            "unknown_task",
        ),
        (json!({"task": ADD, "args": {"a": 1}}), 400, "bad_request"),
        (
            json!({"task": ADD, "args": [1, 2], "priority": "urgent"}),
            400,
            "bad_request",
        ),
        (
            json!({"task": ADD, "args": [1, 2], "delay": "soon"}),
            400,
            "bad_request",
        ),
        (
            json!({"task": ADD, "args": [1, 2], "queue": "bad queue"}),
            400,
            "bad_request",
        ),
        (json!({"task": ADD, "surprise": 1}), 400, "bad_request"),
    ] {
        let (got, err) = api.call("POST", "/api/tasks", Some(body.clone()));
        assert_eq!(
            (got, err["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {err}"
        );
    }
    let raw = request(
        "POST",
        &format!("{}/api/tasks", api.base),
        &[
            ("Authorization", &format!("Bearer {API_TOKEN}")),
            ("Content-Type", "application/json"),
        ],
        Some(b"{not json"),
    )
    .unwrap();
    assert_eq!(raw.status, 400);
    assert!(raw.text().contains("bad JSON body"));
    assert_eq!(api.call("GET", "/api/tasks/nope", None).0, 404);
    assert_eq!(api.call("GET", "/api/tasks?state=bogus", None).0, 400);
    assert_eq!(api.call("GET", "/api/nothing-here", None).0, 404);
    assert_eq!(api.call("DELETE", "/api/stats", None).0, 405);

    // Stats: queues, workers, counters.
    let (code, stats) = api.call("GET", "/api/stats", None);
    assert_eq!(code, 200);
    assert!(stats["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["queue"] == "default"));
    assert_eq!(stats["workers"].as_array().unwrap().len(), 1);
    assert!(stats["totals"]["succeeded"].as_u64().unwrap() >= 1);

    // Prometheus, from the server and from the worker process. A worker that died ten
    // minutes ago (its heartbeat entry lingers up to an hour) counts in neither the worker
    // count nor the utilization: its 1,000 held messages once made that read 0.98.
    let mut dead =
        kiq::broker::WorkerInfo::new("dead-worker".into(), 1000, vec!["default".into()], vec![]);
    dead.host = "gone".into();
    dead.pid = 1;
    dead.started_ms = 1;
    dead.heartbeat_ms = kiq::broker::envelope::now_ms() - 600_000;
    dead.in_flight = 1000;
    let mut conn = kiq::broker::connect_redis(&redis.url()).await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg("{kiq}:workers")
        .arg("dead-worker")
        .arg(kiq::broker::codec::encode(&dead).unwrap())
        .query_async(&mut conn)
        .await
        .unwrap();
    let m = request(
        "GET",
        &format!("{}/metrics", api.base),
        &[("Authorization", &format!("Bearer {API_TOKEN}"))],
        None,
    )
    .unwrap();
    assert_eq!(m.status, 200);
    let text = m.text();
    for needle in [
        "kiq_queue_waiting{queue=\"default\"}",
        "kiq_workers 1\n",
        "kiq_scheduler_leader 0",
        "kiq_tasks_finished_total{state=\"succeeded\"}",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    let utilization: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("kiq_workers_utilization "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(utilization < 0.5, "utilization {utilization}:\n{text}");
    // Messages naming tasks the worker does not link are counted under one label: random
    // names once each got their own, and 20,000 of them made the worker's /metrics 70 MB.
    let random: Vec<String> = (0..3).map(|i| format!("no_such::task_{i}_x7q")).collect();
    for name in &random {
        support::enqueue_by_name(&broker, name, &(1,)).await;
    }
    let scrape = || {
        request(
            "GET",
            &format!("http://127.0.0.1:{metrics_port}/metrics"),
            &[],
            None,
        )
        .map(|r| r.text())
        .unwrap_or_default()
    };
    assert!(wait_until(Duration::from_secs(20), || support::sample(
        &scrape(),
        "kiq_worker_tasks_received_total",
        &[("task", "unknown"), ("process", "0")]
    ) == Some(3.0)));
    let text = scrape();
    assert!(
        random.iter().all(|n| !text.contains(n.as_str())),
        "unknown task names became labels:\n{text}"
    );

    for (name, labels, value) in [
        (
            "kiq_worker_tasks_succeeded_total",
            &[("task", ADD)][..],
            2.0,
        ),
        (
            "kiq_worker_task_duration_seconds_count",
            &[("task", ADD)],
            2.0,
        ),
        (
            "kiq_worker_task_queue_wait_seconds_bucket",
            &[("task", ADD), ("le", "+Inf")],
            2.0,
        ),
        ("kiq_worker_utilization", &[], 0.0),
        ("kiq_worker_concurrency", &[("process", "0")], 16.0),
        ("kiq_worker_processes_up", &[], 1.0),
    ] {
        assert_eq!(
            support::sample(&text, name, labels),
            Some(value),
            "{name} {labels:?}:\n{text}"
        );
    }
    assert!(
        text.contains("process_cpu_seconds_total{process=\"0\"}"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_manages_schedules_and_dead_letters() {
    let (redis, _broker) = redis_and_broker().await;
    let api = ApiServer::start(&redis.url());

    let def = json!({"id": "nightly", "task": "kiq_examples::maintenance::health_check",
        "schedule": "30 0 * * *", "tz": "Asia/Kolkata"});
    let (code, s) = api.call("POST", "/api/schedules", Some(def.clone()));
    assert_eq!(code, 201, "{s}");
    assert!(s["next_fire_ms"].as_u64().is_some());
    assert_eq!(api.call("POST", "/api/schedules", Some(def)).0, 409);
    let (code, err) = api.call(
        "POST",
        "/api/schedules",
        Some(json!({"id": "bad", "task": "t", "schedule": "61 * * * *"})),
    );
    assert_eq!(code, 400, "{err}");
    // A task the server does not know (404, as for a dispatch), an expression that never
    // fires (400): both were saved once.
    let (code, err) = api.call(
        "POST",
        "/api/schedules",
        Some(
            json!({"id": "typo", "task": "kiq_examples::maintenance::health_chek",
            "schedule": "@daily"}),
        ),
    );
    assert_eq!(
        (code, err["error"]["code"].as_str()),
        (404, Some("unknown_task")),
        "{err}"
    );
    for never in ["0 0 31 2 *", "@at 2001-01-01T00:00:00Z"] {
        let (code, err) = api.call(
            "POST",
            "/api/schedules",
            Some(
                json!({"id": "never", "task": "kiq_examples::maintenance::health_check",
                "schedule": never}),
            ),
        );
        assert_eq!(code, 400, "{never}: {err}");
        assert!(err.to_string().contains("never fire"), "{err}");
    }
    let (_, s) = api.call("POST", "/api/schedules/nightly/pause", None);
    assert_eq!(s["schedule"]["enabled"], false);
    let (_, s) = api.call("POST", "/api/schedules/nightly/resume", None);
    assert_eq!(s["schedule"]["enabled"], true);
    let (code, t) = api.call("POST", "/api/schedules/nightly/trigger", None);
    assert_eq!(code, 200);
    assert!(t["task_id"]
        .as_str()
        .unwrap()
        .starts_with("s:nightly:manual:"));
    let (code, s) = api.call(
        "PUT",
        "/api/schedules/nightly",
        Some(json!({"id": "nightly",
        "task": "kiq_examples::maintenance::health_check", "schedule": "@every 1h"})),
    );
    assert_eq!(code, 200);
    assert_eq!(s["schedule"]["schedule"], "@every 1h");
    // The creation time is the store's: a client's is ignored (`1` once made an `@every 1s`
    // schedule owe every second since 1970).
    let created = s["schedule"]["created_at_ms"].as_u64().unwrap();
    let (code, s) = api.call(
        "PUT",
        "/api/schedules/nightly",
        Some(json!({"id": "nightly", "created_at_ms": 1,
        "task": "kiq_examples::maintenance::health_check", "schedule": "@every 1h"})),
    );
    assert_eq!(code, 200);
    assert_eq!(s["schedule"]["created_at_ms"].as_u64(), Some(created));
    assert_eq!(
        api.call(
            "PUT",
            "/api/schedules/other",
            Some(json!({"id": "nightly", "task": "t", "schedule": "@daily"}))
        )
        .0,
        400
    );
    let (_, all) = api.call("GET", "/api/schedules", None);
    assert_eq!(all["schedules"].as_array().unwrap().len(), 1);
    assert_eq!(api.call("DELETE", "/api/schedules/nightly", None).0, 204);
    assert_eq!(api.call("GET", "/api/schedules/nightly", None).0, 404);
    assert_eq!(
        api.call("POST", "/api/schedules/nightly/pause", None).0,
        404
    );

    // Arguments of the wrong type: dead-lettered by the worker; listed, replayed, purged.
    let (code, created) = api.call(
        "POST",
        "/api/tasks",
        Some(json!({"task": ADD, "args": ["x", "y"]})),
    );
    assert_eq!(code, 201);
    let id = created["id"].as_str().unwrap().to_string();
    let w = Workers::start(&redis.url(), 1, &["--queues", "default"]);
    wait_for(&api, &id, "dead");
    let (_, dead) = api.call("GET", "/api/dead?queue=default", None);
    let letter = dead["dead"][0].clone();
    assert_eq!(letter["task_id"], id.as_str());
    assert_eq!(letter["reason"], "bad_arguments");
    let lane = letter["lane"].as_str().unwrap();
    let dead_id = letter["id"].as_str().unwrap();
    let (code, r) = api.call("POST", &format!("/api/dead/{lane}/{dead_id}/replay"), None);
    assert_eq!((code, r["replayed"].as_u64()), (200, Some(1)));
    assert_eq!(
        api.call("POST", &format!("/api/dead/{lane}/{dead_id}/replay"), None)
            .0,
        404
    );
    // It fails again, of course, and comes back as a new dead letter.
    assert!(wait_until(Duration::from_secs(20), || {
        api.call("GET", "/api/dead", None).1["dead"]
            .as_array()
            .is_some_and(|d| d.len() == 1 && d[0]["id"] != dead_id)
    }));
    drop(w);
    let (_, dead) = api.call("GET", "/api/dead", None);
    let again = dead["dead"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        api.call("DELETE", &format!("/api/dead/{lane}/{again}"), None)
            .0,
        204
    );
    assert_eq!(
        api.call("GET", "/api/dead", None).1["dead"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        api.call("POST", "/api/dead/bad%20lane/1-1/replay", None).0,
        400
    );
}
