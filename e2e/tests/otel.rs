//! OpenTelemetry export across processes: a small OTLP/HTTP receiver collects what `taskctl
//! serve` and `taskctl worker` export, and one trace must join the caller's HTTP request →
//! the server's request span → the dispatch (producer) → the execution (consumer) → a chain
//! dispatched from inside it → the chain's steps, each step a child of the one before.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use support::*;

/// A span as received, with its service's name.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    kind: i32,
    trace: String,
    id: String,
    parent: String,
    attrs: HashMap<String, String>,
    error: bool,
}

type Spans = Arc<Mutex<Vec<Got>>>;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// `POST /v1/traces`: OTLP/HTTP with a protobuf body.
async fn receive(State(spans): State<Spans>, body: Bytes) -> Vec<u8> {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return Vec::new();
    };
    let mut got = spans.lock().unwrap();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(&kv.value))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                got.push(Got {
                    service: service.clone(),
                    name: s.name.clone(),
                    kind: s.kind,
                    trace: hex(&s.trace_id),
                    id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    attrs: s
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(&kv.value)))
                        .collect(),
                    error: s.status.as_ref().is_some_and(|st| st.code == 2),
                });
            }
        }
    }
    // An empty ExportTraceServiceResponse.
    Vec::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_joins_request_dispatch_execution_and_chain_across_processes() {
    let spans: Spans = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(spans.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let redis = RedisServer::start().expect("start redis-server");
    let otel = |service: &'static str| {
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            ("OTEL_SERVICE_NAME", service.to_string()),
            // Export within 100 ms of a span's end, not the default 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
        ]
    };
    let worker_env = otel("kiq-worker");
    let worker_env: Vec<(&str, &str)> = worker_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _workers = Workers::start_env(&redis.url(), 2, &[], &worker_env);
    let server_env = otel("kiq-server");
    let server_env: Vec<(&str, &str)> = server_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = ApiServer::start_env(&redis.url(), &server_env);

    // The caller's own trace: its span is the parent of everything below.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace}-{caller}-01");
    let auth = format!("Bearer {API_TOKEN}");
    let body = serde_json::json!({"task": "kiq_examples::math::add_then_double", "args": [2, 3]});
    let r = kiq_testkit::http::request(
        "POST",
        &format!("{}/api/tasks", server.base),
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
            ("traceparent", traceparent.as_str()),
        ],
        Some(body.to_string().as_bytes()),
    )
    .expect("POST /api/tasks");
    assert!(
        r.status < 300,
        "{} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    let created: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let first_id = created["id"].as_str().expect("task id").to_string();

    // Three executions (add_then_double, add, double), each exported by a worker, and the
    // server's request and dispatch, each exported by its own process when its batch is due.
    let count = |spans: &Spans, kind: SpanKind| {
        spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.kind == kind as i32)
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(30), || count(
            &spans,
            SpanKind::Consumer
        ) >= 3
            && count(&spans, SpanKind::Server) >= 1
            && count(&spans, SpanKind::Producer) >= 2),
        "spans received: {:#?}",
        spans.lock().unwrap()
    );
    let got = spans.lock().unwrap().clone();
    let in_trace: Vec<&Got> = got.iter().filter(|s| s.trace == trace).collect();
    let one = |what: &str, f: &dyn Fn(&Got) -> bool| -> Got {
        let found: Vec<&&Got> = in_trace.iter().filter(|s| f(s)).collect();
        assert_eq!(found.len(), 1, "{what}: {found:#?}\nall spans: {got:#?}");
        (*found[0]).clone()
    };

    // The server's request span continues the caller's.
    let request = one("the request span", &|s| {
        s.kind == SpanKind::Server as i32 && s.parent == caller
    });
    assert_eq!(request.service, "kiq-server");
    assert_eq!(request.name, "POST /api/tasks");
    assert_eq!(request.attrs["http.response.status_code"], "201");

    // The dispatch is its child; the execution is the dispatch's child, in the worker.
    let send = one("the dispatch", &|s| {
        s.kind == SpanKind::Producer as i32 && s.parent == request.id
    });
    assert_eq!(send.service, "kiq-server");
    assert_eq!(send.name, "send default");
    assert_eq!(send.attrs["messaging.system"], "kiq");
    assert_eq!(send.attrs["messaging.message.id"], first_id);
    assert_eq!(
        send.attrs["kiq.task.name"],
        "kiq_examples::math::add_then_double"
    );
    let run = one("the execution", &|s| {
        s.kind == SpanKind::Consumer as i32 && s.parent == send.id
    });
    assert_eq!(run.service, "kiq-worker");
    assert_eq!(run.name, "process default");
    assert_eq!(run.attrs["messaging.operation.type"], "process");
    assert_eq!(run.attrs["messaging.destination.name"], "default");
    assert_eq!(run.attrs["messaging.message.id"], first_id);
    assert_eq!(run.attrs["kiq.task.attempt"], "0");
    assert_eq!(run.attrs["kiq.task.outcome"], "succeeded");
    assert!(!run.error);

    // The chain it dispatched: a producer span inside the execution, the first step a
    // consumer under it, and the next step under the first step's execution.
    let chain_send = one("the chain's dispatch", &|s| {
        s.kind == SpanKind::Producer as i32 && s.parent == run.id
    });
    assert_eq!(chain_send.service, "kiq-worker");
    assert_eq!(chain_send.attrs["kiq.task.name"], "kiq_examples::math::add");
    let add = one("the chain's first step", &|s| {
        s.kind == SpanKind::Consumer as i32 && s.parent == chain_send.id
    });
    assert_eq!(add.attrs["kiq.task.name"], "kiq_examples::math::add");
    let double = one("the chain's second step", &|s| {
        s.kind == SpanKind::Consumer as i32 && s.parent == add.id
    });
    assert_eq!(double.attrs["kiq.task.name"], "kiq_examples::math::double");
    assert_eq!(double.attrs["kiq.task.outcome"], "succeeded");

    // The ids the record keeps are the exported span's.
    let (status, record) = server.call("GET", &format!("/api/tasks/{first_id}"), None);
    assert_eq!(status, 200, "{record}");
    assert_eq!(
        record["trace"].as_str(),
        Some(format!("00-{trace}-{}-01", run.id).as_str()),
        "{record}"
    );
}
