//! Taskiq's schedules, served by kiq's leased scheduler: the schedules a Python
//! `ListRedisScheduleSource` keeps in Redis (cron with its zone, interval, one-shot time) fire
//! exactly once per tick under kiq's lease, as Taskiq messages sent the way `taskiq scheduler`
//! sends them (with the `schedule_id` label). Read only: the Python side keeps owning them.

use std::collections::HashMap;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use kiq_broker::taskiq::{pickle, TaskiqMessage, TaskiqStream};
use kiq_broker::Control;
use serde_json::{Map, Value};

use crate::def::ScheduleDef;

/// Where the Python side keeps its schedules and where their messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskiqSchedules {
    /// `ListRedisScheduleSource`'s `prefix` (default `schedule`).
    pub prefix: String,
    /// The stream fired messages go to (a schedule's `queue_name` label overrides it, as in
    /// Taskiq).
    pub stream: TaskiqStream,
}

impl Default for TaskiqSchedules {
    fn default() -> Self {
        Self {
            prefix: "schedule".into(),
            stream: TaskiqStream::default(),
        }
    }
}

/// One Python schedule as kiq runs it.
#[derive(Debug, Clone)]
pub struct TaskiqSchedule {
    /// As a kiq schedule (id `taskiq.<schedule id>`), for its expression, zone and misfire rule.
    pub def: ScheduleDef,
    /// The message each tick sends (its task id is set per tick).
    pub message: TaskiqMessage,
    /// Where it goes.
    pub stream: TaskiqStream,
}

/// The kiq id of Python schedule `id`: `taskiq.<id>`, or, when `id` holds characters kiq ids
/// do not (they become `_`) or is too long, the cleaned id cut short and a hash of the original,
/// so two Python ids never share one kiq id (and its last tick and fire ids).
pub fn kiq_id(id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == id && id.len() <= 56 {
        return format!("taskiq.{id}");
    }
    // FNV-1a: a fixed hash, the same on every replica and release.
    let hash = id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let short: String = clean.chars().take(47).collect();
    format!("taskiq.{short}-{hash:08x}")
}

impl TaskiqSchedules {
    /// The minute buckets of one-shot schedules that may be due from `from` to `to` (UTC).
    fn buckets(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<String> {
        let mut out = Vec::new();
        let mut t = from;
        while t <= to && out.len() < 24 * 60 {
            out.push(t.format("%Y-%m-%dT%H:%M").to_string());
            t += ChronoDuration::minutes(1);
        }
        out
    }

    /// Reads the Python schedules: every cron and interval schedule, and the one-shot ones due
    /// within `catch_up` before now (or in the next minute). One that kiq cannot read is
    /// logged and left out. A cron or interval schedule starts when a kiq scheduler first saw
    /// it (kept in Redis, so a replica taking over agrees), so it does not replay the ticks of
    /// the catch-up window from before.
    pub async fn load(
        &self,
        control: &Control,
        catch_up: std::time::Duration,
    ) -> Vec<TaskiqSchedule> {
        let now = Utc::now();
        let window = ChronoDuration::from_std(catch_up).unwrap_or(ChronoDuration::hours(1));
        let buckets = Self::buckets(now - window, now + ChronoDuration::minutes(1));
        let stored = match control.taskiq_schedules(&self.prefix, &buckets).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read Taskiq schedules");
                return Vec::new();
            }
        };
        let now_ms = now.timestamp_millis().max(0) as u64;
        let mut out: Vec<TaskiqSchedule> = Vec::new();
        for (id, data) in stored {
            let Some(data) = data else { continue };
            match self.parse(&id, &data) {
                Ok(s) => out.push(s),
                Err(e) => {
                    tracing::warn!(schedule = %id, error = %e, "a Taskiq schedule kiq cannot serve is ignored")
                }
            }
        }
        // A one-shot time fires within the catch-up window, as Taskiq fires a past time at
        // start; cron and interval schedules start where a kiq scheduler first saw them.
        let recurring: Vec<String> = out
            .iter()
            .filter(|s| !s.def.schedule.starts_with("@at "))
            .map(|s| s.def.id.clone())
            .collect();
        let seen = control
            .taskiq_first_seen(&recurring, now_ms)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read when Taskiq schedules were first seen");
                vec![now_ms; recurring.len()]
            });
        let seen: HashMap<&str, u64> = recurring.iter().map(String::as_str).zip(seen).collect();
        for s in &mut out {
            s.def.created_at_ms = seen.get(s.def.id.as_str()).copied().unwrap_or(0);
        }
        out
    }

    /// One stored schedule (`ScheduledTask.model_dump(mode="json")`, pickled).
    pub fn parse(&self, id: &str, data: &[u8]) -> Result<TaskiqSchedule, String> {
        let v = pickle::loads(data).map_err(|e| e.to_string())?;
        let str_of = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let task_name = str_of("task_name").ok_or("no task_name")?;
        let schedule_id = str_of("schedule_id").unwrap_or_else(|| id.to_string());
        let (expr, tz) = if let Some(cron) = str_of("cron") {
            (
                cron,
                str_of("cron_offset").map(|o| zone_of(&o)).transpose()?,
            )
        } else if let Some(n) = v.get("interval").filter(|i| !i.is_null()) {
            let secs = n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 1.0).map(|f| f as u64))
                .or_else(|| n.as_str().and_then(iso_seconds))
                .filter(|s| *s >= 1)
                .ok_or_else(|| format!("interval {n} is not a whole number of seconds"))?;
            (format!("@every {secs}s"), None)
        } else if let Some(t) = str_of("time") {
            (format!("@at {t}"), None)
        } else {
            return Err("neither cron, interval nor time".into());
        };
        let mut def = ScheduleDef::new(kiq_id(&schedule_id), task_name.clone(), expr);
        def.tz = tz;
        def.description = Some(format!("Taskiq schedule {schedule_id:?} (read only)"));
        def.validate().map_err(|e| e.to_string())?;
        let mut labels: Map<String, Value> = v
            .get("labels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        labels.insert("schedule_id".into(), Value::String(schedule_id));
        // As `taskiq scheduler` sends them: every stored label as a string of type STR.
        let labels: Map<String, Value> = labels
            .into_iter()
            .map(|(k, v)| (k, Value::String(python_str(&v))))
            .collect();
        let labels_types = labels.keys().map(|k| (k.clone(), 3u8)).collect();
        let stream = match labels.get("queue_name").and_then(Value::as_str) {
            Some(q) if !q.is_empty() => {
                let mut s = self.stream.clone();
                s.stream = q.to_string();
                s
            }
            _ => self.stream.clone(),
        };
        let args = match v.get("args") {
            Some(Value::Array(a)) => a.clone(),
            _ => Vec::new(),
        };
        let kwargs = match v.get("kwargs") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        Ok(TaskiqSchedule {
            def,
            message: TaskiqMessage {
                task_id: String::new(),
                task_name,
                labels,
                labels_types: Some(labels_types),
                args,
                kwargs,
            },
            stream,
        })
    }
}

/// A label value as Python's `str()` shows it, which is how Taskiq sends labels: `True`,
/// `None`, `30`. (Lists and dicts, which Python shows as their repr, are sent as JSON.)
fn python_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

/// Whole seconds of an ISO 8601 duration of hours, minutes and seconds (`PT1H30M`, `PT2S`:
/// pydantic's form of a `timedelta`); `None` for anything else.
fn iso_seconds(s: &str) -> Option<u64> {
    let mut rest = s.strip_prefix("PT")?;
    let mut total = 0u64;
    while !rest.is_empty() {
        let end = rest.find(|c: char| c.is_ascii_alphabetic())?;
        let n: f64 = rest[..end].parse().ok()?;
        let unit = match &rest[end..end + 1] {
            "H" => 3600.0,
            "M" => 60.0,
            "S" => 1.0,
            _ => return None,
        };
        total = total.checked_add((n * unit) as u64)?;
        rest = &rest[end + 1..];
    }
    Some(total)
}

/// A `cron_offset` as an IANA zone: a zone name as it is, a whole-hour offset (`PT2H`,
/// `-PT5H`, pydantic's form of a `timedelta`) as `Etc/GMT∓N`.
fn zone_of(offset: &str) -> Result<String, String> {
    let (neg, rest) = match offset.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, offset),
    };
    let Some(d) = rest.strip_prefix("PT") else {
        return Ok(offset.to_string());
    };
    let hours: i64 = d
        .strip_suffix('H')
        .and_then(|h| h.parse().ok())
        .filter(|h: &i64| (0..=14).contains(h))
        .ok_or_else(|| format!("cron_offset {offset:?}: only whole hours are supported"))?;
    let east = if neg { -hours } else { hours };
    Ok(match east {
        0 => "UTC".into(),
        // Etc/GMT signs are inverted: Etc/GMT-2 is two hours east of Greenwich.
        h if h > 0 => format!("Etc/GMT-{h}"),
        h => format!("Etc/GMT+{}", -h),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(v: Value) -> Vec<u8> {
        pickle::dumps(&v)
    }

    #[test]
    fn reads_the_three_kinds_python_stores() {
        let src = TaskiqSchedules::default();
        let cron = src
            .parse(
                "cron-berlin",
                &stored(serde_json::json!({
                    "task_name": "interop.tick", "labels": {"retry_on_error": "False", "origin": "dynamic"},
                    "args": [3, 4], "kwargs": {}, "task_id": null, "schedule_id": "cron-berlin",
                    "cron": "0 2 * * *", "cron_offset": "Europe/Berlin", "time": null, "interval": null})),
            )
            .unwrap();
        assert_eq!(cron.def.id, "taskiq.cron-berlin");
        assert_eq!(cron.def.schedule, "0 2 * * *");
        assert_eq!(cron.def.tz.as_deref(), Some("Europe/Berlin"));
        assert_eq!(cron.message.labels["schedule_id"], "cron-berlin");
        assert_eq!(cron.message.labels_types.as_ref().unwrap()["origin"], 3);
        let every = src
            .parse("i", &stored(serde_json::json!({"task_name": "t", "labels": {}, "args": [], "kwargs": {"a": 1},
                "schedule_id": "i", "cron": null, "interval": 3600, "time": null})))
            .unwrap();
        assert_eq!(every.def.schedule, "@every 3600s");
        let once = src
            .parse("o", &stored(serde_json::json!({"task_name": "t", "labels": {"queue_name": "other"}, "args": [],
                "kwargs": {}, "schedule_id": "o", "time": "2030-01-02T03:04:05Z"})))
            .unwrap();
        assert_eq!(once.def.schedule, "@at 2030-01-02T03:04:05Z");
        assert_eq!(once.stream.stream, "other");
        assert!(src.parse("x", b"not a pickle").is_err());
        assert!(src
            .parse(
                "x",
                &stored(serde_json::json!({"task_name": "t", "cron": "61 * * * *"}))
            )
            .is_err());
    }

    #[test]
    fn whole_hour_offsets_become_zones() {
        assert_eq!(zone_of("Europe/Berlin").unwrap(), "Europe/Berlin");
        assert_eq!(zone_of("PT2H").unwrap(), "Etc/GMT-2");
        assert_eq!(zone_of("-PT5H").unwrap(), "Etc/GMT+5");
        assert!(zone_of("PT1H30M").is_err());
        assert_eq!(kiq_id("cron-berlin"), "taskiq.cron-berlin");
        // Ids kiq would have to change never collide.
        let changed = [
            kiq_id("a b"),
            kiq_id("a/b"),
            kiq_id("a_b"),
            kiq_id(&"x".repeat(80)),
        ];
        assert!(changed[0].starts_with("taskiq.a_b-") && changed[0] != changed[1]);
        assert_eq!(changed[2], "taskiq.a_b");
        assert!(changed.iter().all(|c| c.len() <= 64));
        assert_eq!(iso_seconds("PT2S"), Some(2));
        assert_eq!(iso_seconds("PT1H30M"), Some(5400));
        assert_eq!(iso_seconds("P1D"), None);
    }
}
