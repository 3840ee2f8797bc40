//! The web dashboard in headless Chromium: it signs in with the API token; shows queues,
//! workers, the scheduler, history charts (uPlot) over three ranges, a per-task table, tasks with
//! their detail beside the list, schedules and dead letters; finds a task by id; and its buttons
//! cancel tasks, pause, resume and purge queues, quiet workers, pause and resume schedules, and
//! replay and purge dead letters (one, or all that a filter matches).
//!
//! Screenshots of each view go to `target/screenshots/` (or `$KIQ_SCREENSHOTS`).

mod support;

use std::path::PathBuf;
use std::time::Duration;

use kiq_testkit::browser::Browser;
use serde_json::{json, Value};
use support::{redis_and_broker, wait_until, ApiServer, Workers, API_TOKEN};

const ADD: &str = "kiq_examples::math::add";
const WAIT: Duration = Duration::from_secs(30);

/// Where the screenshots go: `$KIQ_SCREENSHOTS`, else the workspace's `target/screenshots`.
fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("KIQ_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/screenshots"
            ))
        });
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

/// Runs `script` in the page until it returns true (bounded).
fn wait_js(b: &Browser, script: &str, what: &str) {
    assert!(
        wait_until(WAIT, || b.eval(script, json!([])).ok()
            == Some(Value::Bool(true))),
        "the page never got to: {what}"
    );
}

/// `window.confirm` answers yes, and the page keeps each question in `window.asked`.
fn confirm_yes(b: &Browser) {
    b.eval(
        "window.asked = []; window.confirm = (q) => { window.asked.push(q); return true; }; return true;",
        json!([]),
    )
    .unwrap();
}

/// The last question the page asked with `window.confirm`.
fn last_question(b: &Browser) -> String {
    b.eval("return (window.asked || []).at(-1) || '';", json!([]))
        .unwrap()
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn queue_stats(api: &ApiServer, queue: &str) -> Value {
    let (_, stats) = api.call("GET", "/api/stats", None);
    stats["queues"]
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["queue"] == queue))
        .cloned()
        .unwrap_or(Value::Null)
}

fn state_of(api: &ApiServer, id: &str) -> Value {
    api.call("GET", &format!("/api/tasks/{id}"), None).1["state"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_system_and_its_buttons_act() {
    let shots = screenshot_dir();
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
    let ok_id = ok["id"].as_str().unwrap().to_string();
    let bad_id = bad["id"].as_str().unwrap().to_string();
    assert!(wait_until(WAIT, || state_of(&api, &bad_id) == "dead"));
    assert!(wait_until(WAIT, || state_of(&api, &ok_id) == "succeeded"));

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
        queue_stats(&api, "hot")["partitions"]
            .as_array()
            .is_some_and(|p| p.len() == 2)
    }));
    // Another queue no worker reads, to purge: one task waiting, one delayed.
    let parked: Vec<String> = [json!({}), json!({"delay": "1h"})]
        .into_iter()
        .map(|extra| {
            let mut body = json!({"task": ADD, "args": [2, 2], "queue": "parked"});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let (code, t) = api.call("POST", "/api/tasks", Some(body));
            assert_eq!(code, 201, "{t}");
            t["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(wait_until(WAIT, || {
        let q = queue_stats(&api, "parked");
        q["waiting"] == 1 && q["delayed"] == 1
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

    // Overview: queues, workers, scheduler.
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

    // The history charts: uPlot canvases with legends naming the series, drawn from the
    // server's history, in which the tasks above finished.
    wait_js(
        &b,
        "const c = document.querySelector('#throughput .uplot canvas'); return !!c && c.width > 0 && c.height > 0;",
        "a throughput chart drawn",
    );
    wait_js(
        &b,
        "return !!document.querySelector('#latency .uplot canvas');",
        "a latency chart drawn",
    );
    for series in ["succeeded", "failed", "retried", "dead"] {
        b.wait_for_text("#throughput .u-legend", series, WAIT)
            .unwrap();
    }
    for series in ["mean run", "mean wait"] {
        b.wait_for_text("#latency .u-legend", series, WAIT).unwrap();
    }
    // The succeeded series counts the finished task (the page reloads the history every 10 s).
    let succeeded_in_chart = "const u = window.kiqDashboard.charts.tput; \
         return !!u && u.data[1].reduce((a, v) => a + (v || 0), 0) >= 1;";
    wait_js(&b, succeeded_in_chart, "the succeeded task in the chart");
    wait_js(
        &b,
        "const u = window.kiqDashboard.charts.lat; return !!u && u.data[1].some(v => v != null);",
        "a mean run time in the latency chart",
    );
    b.wait_for_text("#throughput-now", "/s", WAIT).unwrap();
    b.wait_for_text("#latency-now", "run", WAIT).unwrap();
    b.wait_for_text("#history-note", "one point per minute", WAIT)
        .unwrap();
    // The per-task table over the range.
    b.wait_for_text("#task-stats", ADD, WAIT).unwrap();
    b.screenshot(&shots.join("dashboard-overview.png")).unwrap();

    // Another range: 24 hours, a point per 10 minutes, the same task in it.
    b.click("#ranges button[data-range='24h']").unwrap();
    wait_js(
        &b,
        "return document.querySelector('#overview').dataset.historyRange === '24h';",
        "the 24 h history loaded",
    );
    b.wait_for_text("#history-note", "one point per 10 min", WAIT)
        .unwrap();
    b.wait_for_text("#task-stats-note", "24 h", WAIT).unwrap();
    wait_js(
        &b,
        succeeded_in_chart,
        "the succeeded task in the 24 h chart",
    );
    assert_eq!(
        b.eval(
            "return document.querySelector(\"#ranges button[data-range='24h']\").getAttribute('aria-pressed');",
            json!([])
        )
        .unwrap(),
        "true"
    );
    b.screenshot(&shots.join("dashboard-overview-24h.png"))
        .unwrap();
    b.click("#ranges button[data-range='7d']").unwrap();
    b.wait_for_text("#history-note", "one point per hour", WAIT)
        .unwrap();
    b.click("#ranges button[data-range='1h']").unwrap();
    b.wait_for_text("#history-note", "one point per minute", WAIT)
        .unwrap();

    // Queues: pause, then resume, with the buttons; the API says so each time.
    b.click("#queues tr[data-queue='default'] button[data-action=pause]")
        .unwrap();
    b.wait_for_text("#message", "paused queue default", WAIT)
        .unwrap();
    assert_eq!(queue_stats(&api, "default")["paused"], true);
    b.wait_for_text("#queues tr[data-queue='default'] .status", "paused", WAIT)
        .unwrap();
    b.screenshot(&shots.join("dashboard-queue-paused.png"))
        .unwrap();
    b.click("#queues tr[data-queue='default'] button[data-action=resume]")
        .unwrap();
    b.wait_for_text("#message", "resumed queue default", WAIT)
        .unwrap();
    assert_eq!(queue_stats(&api, "default")["paused"], false);
    b.wait_for_text("#queues tr[data-queue='default'] .status", "active", WAIT)
        .unwrap();

    // Purge: the page asks first, saying how many tasks go; they are then cancelled.
    b.wait_for_text("#queues", "parked", WAIT).unwrap();
    confirm_yes(&b);
    b.click("#queues tr[data-queue='parked'] button[data-action=purge]")
        .unwrap();
    b.wait_for_text("#message", "purged 2 tasks from parked", WAIT)
        .unwrap();
    let asked = last_question(&b);
    assert!(
        asked.contains("2 tasks") && asked.contains("1 waiting, 1 delayed"),
        "{asked}"
    );
    for id in &parked {
        assert_eq!(state_of(&api, id), "cancelled", "{id}");
    }
    let q = queue_stats(&api, "parked");
    assert!(
        q.is_null() || (q["waiting"] == 0 && q["delayed"] == 0),
        "{q}"
    );
    // Drain: the queue is empty now, and the page says so.
    b.click("#queues tr[data-queue='parked'] button[data-action=drain]")
        .unwrap();
    b.wait_for_text("#message", "parked is empty", WAIT)
        .unwrap();

    // Search: straight to a task by id, its detail beside the list, to the millisecond.
    b.type_into("#search", &ok_id).unwrap();
    b.click("#search-go").unwrap();
    b.wait_for_text("#task-detail", &ok_id, WAIT).unwrap();
    b.wait_for_text("#task-detail", "succeeded", WAIT).unwrap();
    b.wait_for_text("#detail-output", "42", WAIT).unwrap();
    // The arguments, kept in the record the worker wrote.
    b.wait_for_text("#detail-args", "22", WAIT).unwrap();

    assert_eq!(
        b.eval(
            "return document.querySelector('#tasks').classList.contains('active');",
            json!([])
        )
        .unwrap(),
        true
    );
    let stamps = b
        .eval(
            "return (document.querySelector('#detail-history').innerText \
                .match(/\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\.\\d{3}/g) || []).length;",
            json!([]),
        )
        .unwrap();
    let task = api.call("GET", &format!("/api/tasks/{ok_id}"), None).1;
    assert_eq!(
        stamps,
        json!(task["history"].as_array().unwrap().len()),
        "every state change with its time to the ms"
    );
    let enqueued = b
        .eval(
            "const d = [...document.querySelectorAll('#task-detail dt')].find(d => d.textContent === 'Enqueued'); \
             return d ? d.nextElementSibling.textContent : '';",
            json!([]),
        )
        .unwrap();
    assert!(
        enqueued
            .as_str()
            .is_some_and(|s| s.len() == 23 && s.as_bytes()[19] == b'.'),
        "{enqueued}"
    );
    // The trace id, when the task has a traceparent: its 32 hex digits.
    if let Some(tp) = task["trace"].as_str() {
        let trace_id = tp.split('-').nth(1).unwrap();
        b.wait_for_text("#detail-trace", trace_id, WAIT).unwrap();
    }
    // The detail sits beside the list, not under it.
    assert_eq!(
        b.eval(
            "const l = document.querySelector('#task-list').closest('.card').getBoundingClientRect(), \
                   d = document.querySelector('#task-detail').getBoundingClientRect(); \
             return d.left >= l.right && d.top < l.bottom;",
            json!([])
        )
        .unwrap(),
        true
    );
    b.screenshot(&shots.join("dashboard-task-detail.png"))
        .unwrap();
    // An id that is no task: a clear answer.
    b.eval("document.querySelector('#search').value = '';", json!([]))
        .unwrap();
    b.type_into("#search", "no-such-task-0000").unwrap();
    b.click("#search-go").unwrap();
    b.wait_for_text("#message", "No task with id no-such-task-0000", WAIT)
        .unwrap();
    b.wait_for_text("#task-detail", "Task not found", WAIT)
        .unwrap();

    // Tasks: the finished one in its list, its details, and cancelling the delayed one.
    b.wait_for_text("#task-list", &ok_id, WAIT).unwrap();
    b.click(&format!("#task-list tr[data-id='{ok_id}'] td"))
        .unwrap();
    b.wait_for_text("#task-detail", "42", WAIT).unwrap();
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
    assert_eq!(state_of(&api, &later_id), "cancelled");

    // Cancel matching: the waiting tasks of a queue no worker reads, counted, confirmed, gone.
    let waiting: Vec<String> = (0..3)
        .map(|i| {
            let (code, t) = api.call(
                "POST",
                "/api/tasks",
                Some(json!({"task": ADD, "args": [i, i], "queue": "later"})),
            );
            assert_eq!(code, 201, "{t}");
            t["id"].as_str().unwrap().to_string()
        })
        .collect();
    b.click("nav button[data-tab=tasks]").unwrap();
    b.eval(
        "document.querySelector('#queue-filter').value = 'later'; \
         const s = document.querySelector('#state-filter'); s.value = 'pending'; \
         s.dispatchEvent(new Event('change')); return true;",
        json!([]),
    )
    .unwrap();
    b.wait_for_text("#task-list", &waiting[2], WAIT).unwrap();
    b.click("#cancel-matching").unwrap();
    b.wait_for_text("#message", "cancelled 3 tasks in later", WAIT)
        .unwrap();
    assert!(
        last_question(&b).contains("Cancel 3 pending tasks"),
        "{}",
        last_question(&b)
    );
    for id in &waiting {
        assert_eq!(state_of(&api, id), "cancelled", "{id}");
    }

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
    b.screenshot(&shots.join("dashboard-schedules.png"))
        .unwrap();

    // Dead letters, by task id and name: retry one.
    b.click("nav button[data-tab=dead]").unwrap();
    b.wait_for_text("#dead-list", "bad_arguments", WAIT)
        .unwrap();
    b.wait_for_text("#dead-list", &bad_id, WAIT).unwrap();
    b.wait_for_text("#dead-list", ADD, WAIT).unwrap();
    b.screenshot(&shots.join("dashboard-dead-letters.png"))
        .unwrap();
    let dead_ids = |api: &ApiServer| -> Vec<String> {
        let (_, d) = api.call("GET", "/api/dead", None);
        d["dead"]
            .as_array()
            .map(|d| {
                d.iter()
                    .map(|e| e["id"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let first = dead_ids(&api);
    assert_eq!(first.len(), 1, "{first:?}");
    let dead_id = first[0].clone();
    b.click(&format!(
        "#dead-list tr[data-id='{dead_id}'] button[data-action=retry]"
    ))
    .unwrap();
    b.wait_for_text("#message", &format!("replayed {dead_id}"), WAIT)
        .unwrap();
    // The replayed task ran again (and, its arguments still wrong, died again: a new letter).
    assert!(wait_until(WAIT, || {
        let d = dead_ids(&api);
        d.len() == 1 && d[0] != dead_id
    }));

    // Bulk actions by filter: the page counts what matches and says so before acting.
    b.eval(
        "document.querySelector('#dead-task').value = arguments[0]; \
         const r = document.querySelector('#dead-reason'); r.value = 'bad_arguments'; \
         r.dispatchEvent(new Event('change')); return true;",
        json!([ADD]),
    )
    .unwrap();
    b.wait_for_text("#dead-count", "1 matching dead letter", WAIT)
        .unwrap();
    confirm_yes(&b);
    let second = dead_ids(&api)[0].clone();
    b.click("#dead-replay").unwrap();
    b.wait_for_text("#message", "replayed 1 dead letter", WAIT)
        .unwrap();
    let asked = last_question(&b);
    assert!(
        asked.contains("Replay 1 dead letter")
            && asked.contains(ADD)
            && asked.contains("bad_arguments"),
        "{asked}"
    );
    assert!(wait_until(WAIT, || {
        let d = dead_ids(&api);
        d.len() == 1 && d[0] != second
    }));
    b.click("#dead-purge").unwrap();
    b.wait_for_text("#message", "purged 1 dead letter", WAIT)
        .unwrap();
    assert!(last_question(&b).contains("Purge 1 dead letter"));
    assert!(dead_ids(&api).is_empty());
    b.wait_for_text("#dead-list", "No dead letter matches", WAIT)
        .unwrap();

    // Workers: quiet one with its button.
    b.click("nav button[data-tab=overview]").unwrap();
    let consumer = b
        .eval(
            "const tr = document.querySelector('#workers tr[data-consumer]'); return tr ? tr.dataset.consumer : null;",
            json!([]),
        )
        .unwrap();
    let consumer = consumer.as_str().expect("a worker row").to_string();
    confirm_yes(&b);
    b.click("#workers tr[data-consumer] button[data-action=quiet]")
        .unwrap();
    b.wait_for_text("#message", "quieted", WAIT).unwrap();
    assert!(last_question(&b).contains("Quiet worker"));
    assert!(wait_until(WAIT, || {
        let (_, stats) = api.call("GET", "/api/stats", None);
        stats["workers"]
            .as_array()
            .and_then(|ws| ws.iter().find(|w| w["consumer"] == consumer.as_str()))
            .is_some_and(|w| w["quiet"] == true)
    }));
    b.wait_for_text("#workers tr[data-consumer] .status", "quiet", WAIT)
        .unwrap();
    assert_eq!(
        b.eval(
            "return document.querySelector('#workers tr[data-consumer] button[data-action=quiet]').disabled;",
            json!([])
        )
        .unwrap(),
        true
    );
    b.screenshot(&shots.join("dashboard-workers-quiet.png"))
        .unwrap();

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
