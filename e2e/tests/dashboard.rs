//! The web dashboard in headless Chromium: it signs in with the API token, shows queues,
//! workers, the scheduler, charts, tasks, schedules and dead letters, and its buttons cancel
//! tasks, pause and resume schedules, and retry dead letters.

mod support;

use std::time::Duration;

use kiq_testkit::browser::Browser;
use serde_json::json;
use support::{redis_and_broker, wait_until, ApiServer, Workers, API_TOKEN};

const ADD: &str = "kiq_examples::math::add";
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_system_and_its_buttons_act() {
    let (redis, broker) = redis_and_broker().await;
    let _w = Workers::start(&redis.url(), 1, &["--queues", "default"]);
    let api = ApiServer::start(&redis.url());
    // Something to look at: a finished task, a dead letter, a delayed task, a schedule.
    let (_, ok) = api.call(
        "POST",
        "/api/tasks",
        Some(json!({"task": ADD, "args": [20, 22]})),
    );
    let (_, bad) = api.call(
        "POST",
        "/api/tasks",
        Some(json!({"task": ADD, "args": ["x", "y"]})),
    );
    let (_, later) = api.call(
        "POST",
        "/api/tasks",
        Some(json!({"task": ADD, "args": [1, 1], "delay": "1h"})),
    );
    let (code, _) = api.call("POST", "/api/schedules", Some(json!({"id": "nightly-report",
        "task": "kiq_examples::maintenance::health_check", "schedule": "0 2 * * *", "tz": "Europe/Paris"})));
    assert_eq!(code, 201);
    let bad_id = bad["id"].as_str().unwrap().to_string();
    assert!(wait_until(WAIT, || api
        .call("GET", &format!("/api/tasks/{bad_id}"), None)
        .1["state"]
        == "dead"));

    // A queue in two partitions, which no worker reads: its tasks wait in both (once the
    // server's producer has read the new count, within 2 s).
    broker.inspector().set_partitions("hot", 2).await.unwrap();
    assert!(wait_until(WAIT, || {
        let (code, _) = api.call(
            "POST",
            "/api/tasks",
            Some(json!({"task": ADD, "args": [1, 1], "queue": "hot"})),
        );
        assert_eq!(code, 201);
        let (_, stats) = api.call("GET", "/api/stats", None);
        stats["queues"]
            .as_array()
            .and_then(|qs| qs.iter().find(|q| q["queue"] == "hot"))
            .and_then(|q| q["partitions"].as_array())
            .is_some_and(|p| p.len() == 2)
    }));

    let b = Browser::start().expect("headless chromium");
    b.goto(&format!("{}/", api.base)).unwrap();

    // A wrong token is refused on the sign-in page.
    b.type_into("#token", "wrong-token-123").unwrap();
    b.click("#sign-in").unwrap();
    b.wait_for_text("#login-error", "refused", WAIT).unwrap();

    b.eval("document.querySelector('#token').value = '';", json!([]))
        .unwrap();
    b.type_into("#token", API_TOKEN).unwrap();
    b.click("#sign-in").unwrap();

    // Overview: queues, workers, scheduler, and the charts once two polls are in.
    b.wait_for_text("#queues", "default", WAIT).unwrap();
    // A partitioned queue is followed by its partitions.
    b.wait_for_text("#queues", "hot#1", WAIT).unwrap();
    b.wait_for_text("#workers", "127.0.0.1", WAIT)
        .or_else(|_| {
            // The host is the machine's name: any row with the worker's concurrency will do.
            b.wait_for_text("#workers", "16", WAIT)
        })
        .unwrap();
    b.wait_for_text("#scheduler", "No active scheduler", WAIT)
        .unwrap();
    b.wait_for_text("#throughput-now", "/s", WAIT).unwrap();
    b.wait_for_text("#latency-now", "ms run", WAIT).unwrap();
    let drawn = b
        .eval(
            "const c = document.querySelector('#throughput'); return c.width > 0 && c.height > 0;",
            json!([]),
        )
        .unwrap();
    assert_eq!(drawn, true);

    if let Ok(dir) = std::env::var("KIQ_SCREENSHOTS") {
        b.screenshot(&std::path::Path::new(&dir).join("dashboard-overview.png"))
            .unwrap();
    }

    // Tasks: the finished one, its details, and cancelling the delayed one.
    b.click("nav button[data-tab=tasks]").unwrap();
    let ok_id = ok["id"].as_str().unwrap();
    b.wait_for_text("#task-list", ok_id, WAIT).unwrap();
    b.click(&format!("#task-list tr[data-id='{ok_id}'] td"))
        .unwrap();
    b.wait_for_text("#task-detail", "result: 42", WAIT).unwrap();
    b.wait_for_text("#task-detail", "succeeded", WAIT).unwrap();
    b.eval(
        "const s = document.querySelector('#state-filter'); s.value = 'scheduled'; s.dispatchEvent(new Event('change'));",
        json!([]),
    )
    .unwrap();
    let later_id = later["id"].as_str().unwrap().to_string();
    b.wait_for_text("#task-list", &later_id, WAIT).unwrap();
    b.click(&format!(
        "#task-list tr[data-id='{later_id}'] button[data-action=cancel]"
    ))
    .unwrap();
    b.wait_for_text("#message", "cancel requested", WAIT)
        .unwrap();
    assert_eq!(
        api.call("GET", &format!("/api/tasks/{later_id}"), None).1["state"],
        "cancelled"
    );

    // Schedules: pause, then resume.
    b.click("nav button[data-tab=schedules]").unwrap();
    b.wait_for_text("#schedule-list", "nightly-report", WAIT)
        .unwrap();
    b.wait_for_text("#schedule-list", "Europe/Paris", WAIT)
        .unwrap();
    b.click("#schedule-list tr[data-id='nightly-report'] button[data-action=pause]")
        .unwrap();
    b.wait_for_text("#schedule-list", "paused", WAIT).unwrap();
    assert_eq!(
        api.call("GET", "/api/schedules/nightly-report", None).1["schedule"]["enabled"],
        false
    );
    b.click("#schedule-list tr[data-id='nightly-report'] button[data-action=resume]")
        .unwrap();
    b.wait_for_text("#message", "resumed nightly-report", WAIT)
        .unwrap();
    assert_eq!(
        api.call("GET", "/api/schedules/nightly-report", None).1["schedule"]["enabled"],
        true
    );

    if let Ok(dir) = std::env::var("KIQ_SCREENSHOTS") {
        b.screenshot(&std::path::Path::new(&dir).join("dashboard-schedules.png"))
            .unwrap();
    }

    // Dead letters: retry one.
    b.click("nav button[data-tab=dead]").unwrap();
    b.wait_for_text("#dead-list", "bad_arguments", WAIT)
        .unwrap();
    let (_, dead) = api.call("GET", "/api/dead", None);
    let dead_id = dead["dead"][0]["id"].as_str().unwrap().to_string();
    b.click(&format!(
        "#dead-list tr[data-id='{dead_id}'] button[data-action=retry]"
    ))
    .unwrap();
    b.wait_for_text("#message", &format!("replayed {dead_id}"), WAIT)
        .unwrap();
    // The replayed task ran again (and, its arguments still wrong, died again: a new letter).
    assert!(wait_until(WAIT, || {
        let (_, d) = api.call("GET", "/api/dead", None);
        d["dead"]
            .as_array()
            .is_some_and(|d| d.len() == 1 && d[0]["id"] != dead_id.as_str())
    }));

    // A sign-in link (what `taskctl serve` prints): the token in the fragment signs in, and
    // the page takes it out of the address bar.
    b.eval("sessionStorage.clear(); return true;", json!([]))
        .unwrap();
    b.goto(&format!("{}/?from=link#token={API_TOKEN}", api.base))
        .unwrap();
    b.wait_for_text("#queues", "default", WAIT).unwrap();
    assert_eq!(
        b.eval("return location.hash + '|' + location.search;", json!([]))
            .unwrap(),
        "|?from=link"
    );
}
