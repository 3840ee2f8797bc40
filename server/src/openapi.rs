//! The OpenAPI 3.0 document of the API, served at `/api/openapi.json`.

use axum::Json;
use serde_json::{json, Value};

fn op(summary: &str, tag: &str, responses: &[(&str, &str)]) -> Value {
    let mut r = serde_json::Map::new();
    for (code, desc) in responses {
        let body = if code.starts_with('2') {
            json!({ "description": desc, "content": { "application/json": { "schema": { "type": "object" } } } })
        } else {
            json!({ "description": desc, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
        };
        r.insert((*code).to_string(), body);
    }
    r.insert("401".into(), json!({ "description": "missing or wrong bearer token", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }));
    json!({ "summary": summary, "tags": [tag], "responses": r })
}

fn with_body(mut v: Value, schema: Value) -> Value {
    v["requestBody"] =
        json!({ "required": true, "content": { "application/json": { "schema": schema } } });
    v
}

fn with_params(mut v: Value, params: &[(&str, &str, bool, &str)]) -> Value {
    v["parameters"] = params
        .iter()
        .map(|(name, place, required, desc)| {
            json!({ "name": name, "in": place, "required": required, "description": desc, "schema": { "type": "string" } })
        })
        .collect();
    v
}

/// The document.
pub(crate) fn spec() -> Value {
    let id = ("id", "path", true, "the task id");
    let sid = ("id", "path", true, "the schedule id");
    let sched = json!({ "$ref": "#/components/schemas/Schedule" });
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "kiq",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Operate kiq: tasks, queues, workers, schedules and dead letters. Every route needs `Authorization: Bearer <token>`. Errors are `{\"error\": {\"code\", \"message\"}}`."
        },
        "security": [{ "bearer": [] }],
        "paths": {
            "/api/tasks": {
                "post": with_body(op("Create a task by name", "tasks", &[("201", "enqueued: {id, task, queue, priority, state}"), ("400", "bad arguments, queue, priority, delay"), ("404", "unknown task"), ("413", "payload too large"), ("503", "Redis unavailable")]),
                    json!({ "$ref": "#/components/schemas/NewTask" })),
                "get": with_params(op("List tasks in a state", "tasks", &[("200", "{state, tasks: [Task]}"), ("400", "unknown state")]),
                    &[("state", "query", true, "pending, scheduled, running, retrying, succeeded, failed, cancelled or dead"), ("queue", "query", false, "only this queue"), ("limit", "query", false, "at most this many (default 50)")]),
            },
            "/api/tasks/{id}": {
                "get": with_params(op("Get a task: state, history, attempts, error, result, progress", "tasks", &[("200", "Task"), ("404", "unknown or expired")]), &[id]),
            },
            "/api/tasks/{id}/cancel": {
                "post": with_params(op("Cancel a task", "tasks", &[("200", "{id, outcome: cancelled | already_finished}"), ("404", "unknown or expired")]), &[id]),
            },
            "/api/stats": {
                "get": op("Queues, workers, the active scheduler and cumulative counters", "stats", &[("200", "{now_ms, queues, workers, scheduler, totals}")]),
            },
            "/api/schedules": {
                "get": op("List schedules with their status", "schedules", &[("200", "{schedules: [{schedule, status, next_fire_ms}]}")]),
                "post": with_body(op("Create a schedule", "schedules", &[("201", "{schedule, status, next_fire_ms}"), ("400", "invalid schedule"), ("409", "exists")]), sched.clone()),
            },
            "/api/schedules/{id}": {
                "get": with_params(op("Get a schedule", "schedules", &[("200", "{schedule, status, next_fire_ms}"), ("404", "no such schedule")]), &[sid]),
                "put": with_params(with_body(op("Create or replace a schedule", "schedules", &[("200", "{schedule, status, next_fire_ms}"), ("400", "invalid schedule")]), sched), &[sid]),
                "delete": with_params(op("Delete a schedule", "schedules", &[("204", "deleted"), ("404", "no such schedule")]), &[sid]),
            },
            "/api/schedules/{id}/pause": { "post": with_params(op("Pause a schedule", "schedules", &[("200", "the schedule"), ("404", "no such schedule")]), &[sid]) },
            "/api/schedules/{id}/resume": { "post": with_params(op("Resume a schedule (missed ticks are not fired)", "schedules", &[("200", "the schedule"), ("404", "no such schedule")]), &[sid]) },
            "/api/schedules/{id}/trigger": { "post": with_params(op("Fire a schedule's task now", "schedules", &[("200", "{schedule, task_id}"), ("404", "no such schedule")]), &[sid]) },
            "/api/dead": {
                "get": with_params(op("List dead letters", "dead letters", &[("200", "{dead: [DeadLetter]}")]),
                    &[("queue", "query", false, "only this queue"), ("reason", "query", false, "only this reason"), ("task", "query", false, "only this task"), ("limit", "query", false, "at most this many (default 100)")]),
            },
            "/api/dead/replay": {
                "post": op("Replay every dead letter matching a filter (body: {queue, reason, task}, all optional)", "dead letters", &[("200", "{replayed}")]),
            },
            "/api/dead/{queue}/{id}/replay": {
                "post": with_params(op("Replay one dead letter (its attempts reset)", "dead letters", &[("200", "{replayed: 1}"), ("404", "no such dead letter")]),
                    &[("queue", "path", true, "the lane it is in (`lane` in listings)"), ("id", "path", true, "the dead letter's id")]),
            },
            "/api/dead/{queue}/{id}": {
                "delete": with_params(op("Purge one dead letter", "dead letters", &[("204", "purged"), ("404", "no such dead letter")]),
                    &[("queue", "path", true, "the lane it is in"), ("id", "path", true, "the dead letter's id")]),
            },
            "/metrics": { "get": { "summary": "Prometheus metrics", "tags": ["metrics"], "responses": { "200": { "description": "text exposition format" } } } },
            "/healthz": { "get": { "summary": "Liveness: the server answers (no token)", "tags": ["health"], "security": [], "responses": { "200": { "description": "{\"status\": \"ok\"}" } } } },
            "/readyz": { "get": { "summary": "Readiness: Redis answers (no token)", "tags": ["health"], "security": [], "responses": { "200": { "description": "{\"status\": \"ready\"}" }, "503": { "description": "{\"status\": \"not_ready\", \"reason\"}" } } } },
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": { "type": "object", "properties": { "error": { "type": "object", "properties": { "code": { "type": "string" }, "message": { "type": "string" } } } } },
                "NewTask": {
                    "type": "object", "required": ["task"],
                    "properties": {
                        "task": { "type": "string", "description": "the registered task name" },
                        "args": { "type": "array", "description": "the arguments, in order", "items": {} },
                        "queue": { "type": "string" },
                        "priority": { "type": "string", "enum": ["critical", "high", "normal", "low"] },
                        "delay": { "description": "seconds, or a duration like \"30s\"", "oneOf": [{ "type": "number" }, { "type": "string" }] },
                        "timeout": { "description": "per-attempt timeout, like delay", "oneOf": [{ "type": "number" }, { "type": "string" }] },
                        "task_id": { "type": "string" },
                        "retries": { "type": "integer" },
                        "labels": { "type": "object", "additionalProperties": { "type": "string" } },
                        "force": { "type": "boolean", "description": "send even when no live worker advertises the name (default false)" }
                    }
                },
                "Schedule": {
                    "type": "object", "required": ["id", "task", "schedule"],
                    "properties": {
                        "id": { "type": "string" }, "task": { "type": "string" },
                        "schedule": { "type": "string", "description": "cron (5 or 6 fields), @daily..., @every 10s, @at <RFC 3339>" },
                        "tz": { "type": "string", "description": "IANA zone; UTC if absent" },
                        "args": { "type": "array", "items": {} }, "queue": { "type": "string" },
                        "enabled": { "type": "boolean" }, "misfire": { "type": "string", "enum": ["catch_up", "skip"] },
                        "retries": { "type": "integer" }, "priority": { "type": "string" },
                        "timeout_secs": { "type": "integer" }, "labels": { "type": "object" },
                        "description": { "type": "string" }
                    }
                }
            }
        }
    })
}

pub(crate) async fn document() -> Json<Value> {
    Json(spec())
}
