//! Taskiq's message: the JSON that `taskiq-redis` puts in a stream entry's `data` field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One Taskiq message, as taskiq-redis writes it:
/// `{"task_id", "task_name", "labels", "labels_types", "args", "kwargs"}`.
///
/// `task_id`, `task_name`, `labels`, `args` and `kwargs` are required (a Python worker drops a
/// message without `labels` or `kwargs`); `labels_types` is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskiqMessage {
    /// The task id (32 hex characters from Python; any id kiq accepts).
    pub task_id: String,
    /// The task name Python registered (`task_name=` or `module:function`).
    pub task_name: String,
    /// Labels: in Taskiq every value is sent as a string, typed by `labels_types`.
    pub labels: Map<String, Value>,
    /// The type of each label: 1 any, 2 int, 3 str, 4 float, 5 bool, 6 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels_types: Option<BTreeMap<String, u8>>,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
}

/// Why a Taskiq message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Taskiq message: {0}")]
pub struct MessageError(pub String);

/// Labels with a meaning to the worker, parsed from their string or native form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KnownLabels {
    /// `timeout`: seconds one attempt may run.
    pub timeout_s: Option<f64>,
    /// `retry_on_error`: whether a failure is retried.
    pub retry_on_error: Option<bool>,
    /// `max_retries`: how many times.
    pub max_retries: Option<u32>,
    /// `delay`: seconds before the task may start.
    pub delay_s: Option<f64>,
    /// `priority`: Taskiq's integer priority (higher first).
    pub priority: Option<i64>,
}

impl TaskiqMessage {
    /// Parses a stream entry's `data` field.
    pub fn parse(bytes: &[u8]) -> Result<Self, MessageError> {
        let m: TaskiqMessage =
            serde_json::from_slice(bytes).map_err(|e| MessageError(e.to_string()))?;
        if m.task_name.is_empty() {
            return Err(MessageError("task_name is empty".into()));
        }
        Ok(m)
    }

    /// The message as taskiq-redis writes it (compact JSON, which Python reads alike).
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of JSON values always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The labels typed as the Python worker sees them after parsing (`labels_types` applied:
    /// `"30"` of type int is `30`, `"False"` of type bool is `false`); the result carries these.
    pub fn typed_labels(&self) -> Map<String, Value> {
        let types = self.labels_types.as_ref();
        self.labels
            .iter()
            .map(|(k, v)| {
                let typed = match (types.and_then(|t| t.get(k)), v) {
                    (Some(2), Value::String(s)) => s
                        .trim()
                        .parse::<i64>()
                        .map(Value::from)
                        .unwrap_or_else(|_| v.clone()),
                    (Some(4), Value::String(s)) => s
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                        .unwrap_or_else(|| v.clone()),
                    (Some(5), Value::String(s)) => {
                        parse_bool(s).map(Value::Bool).unwrap_or_else(|| v.clone())
                    }
                    _ => v.clone(),
                };
                (k.clone(), typed)
            })
            .collect()
    }

    /// The labels the worker acts on. A value that does not parse is an error naming it (the
    /// message is dead-lettered rather than run with a setting it did not ask for).
    pub fn known_labels(&self) -> Result<KnownLabels, MessageError> {
        let get = |k: &str| self.labels.get(k).filter(|v| !v.is_null());
        let num = |k: &str| -> Result<Option<f64>, MessageError> {
            match get(k) {
                None => Ok(None),
                Some(v) => label_f64(v)
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(Some)
                    .ok_or_else(|| {
                        MessageError(format!("label {k} = {v} is not a number of seconds"))
                    }),
            }
        };
        let int = |k: &str| -> Result<Option<i64>, MessageError> {
            match get(k) {
                None => Ok(None),
                Some(v) => label_f64(v)
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                    .map(|f| Some(f as i64))
                    .ok_or_else(|| MessageError(format!("label {k} = {v} is not an integer"))),
            }
        };
        let retry_on_error = match get("retry_on_error") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) => Some(parse_bool(s).ok_or_else(|| {
                MessageError(format!("label retry_on_error = {s:?} is not a boolean"))
            })?),
            Some(v) => {
                return Err(MessageError(format!(
                    "label retry_on_error = {v} is not a boolean"
                )))
            }
        };
        let max_retries =
            match int("max_retries")? {
                None => None,
                Some(n) => Some(u32::try_from(n).map_err(|_| {
                    MessageError(format!("label max_retries = {n} is out of range"))
                })?),
            };
        Ok(KnownLabels {
            timeout_s: num("timeout")?,
            retry_on_error,
            max_retries,
            delay_s: num("delay")?,
            priority: int("priority")?,
        })
    }
}

fn label_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "True" | "true" | "1" => Some(true),
        "False" | "false" | "0" => Some(false),
        _ => None,
    }
}

/// Binds a message's positional and keyword arguments to a task's parameters, in order: the
/// positional ones first, then each remaining parameter by name. Errors name what is wrong
/// (too many, a keyword naming no parameter or one already given, one missing).
pub fn bind_args(
    params: &[&str],
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> Result<Vec<Value>, String> {
    if args.len() > params.len() {
        return Err(format!(
            "takes {} argument(s) ({}) but {} positional were given",
            params.len(),
            params.join(", "),
            args.len()
        ));
    }
    if let Some(k) = kwargs.keys().find(|k| !params.contains(&k.as_str())) {
        return Err(format!(
            "got an unexpected keyword argument {k:?} (parameters: {})",
            params.join(", ")
        ));
    }
    let mut bound = args.to_vec();
    for (i, p) in params.iter().enumerate() {
        let kw = kwargs.get(*p);
        if i < args.len() {
            if kw.is_some() {
                return Err(format!("got multiple values for argument {p:?}"));
            }
            continue;
        }
        match kw {
            Some(v) => bound.push(v.clone()),
            None => return Err(format!("missing required argument {p:?}")),
        }
    }
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OBSERVED: &str = r#"{"task_id": "6e7771d2265d46b79673ee3dbc46e761", "task_name": "interop.add", "labels": {"retry_on_error": "False", "max_retries": "0", "timeout": "30", "description": "a + b (served by kiq in Taskiq mode)"}, "labels_types": {"retry_on_error": 5, "max_retries": 2, "timeout": 2, "description": 3}, "args": [2, 3], "kwargs": {}}"#;

    #[test]
    fn reads_the_observed_message_and_types_its_labels() {
        let m = TaskiqMessage::parse(OBSERVED.as_bytes()).unwrap();
        assert_eq!(m.task_name, "interop.add");
        assert_eq!(m.args, vec![json!(2), json!(3)]);
        let typed = m.typed_labels();
        assert_eq!(typed["retry_on_error"], json!(false));
        assert_eq!(typed["timeout"], json!(30));
        assert_eq!(
            typed["description"],
            json!("a + b (served by kiq in Taskiq mode)")
        );
        let known = m.known_labels().unwrap();
        assert_eq!(known.timeout_s, Some(30.0));
        assert_eq!(known.retry_on_error, Some(false));
        assert_eq!(known.max_retries, Some(0));
    }

    #[test]
    fn required_fields_are_required() {
        for bad in [
            r#"{"task_id": "a", "task_name": "t", "args": [], "kwargs": {}}"#,
            r#"{"task_id": "a", "task_name": "t", "labels": {}, "args": []}"#,
            r#"{"task_id": "a", "task_name": "", "labels": {}, "args": [], "kwargs": {}}"#,
            "not json",
        ] {
            assert!(TaskiqMessage::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        let native = r#"{"task_id":"a","task_name":"t","labels":{"timeout":2.5,"retry_on_error":true,"max_retries":"3"},"labels_types":null,"args":[],"kwargs":{}}"#;
        let known = TaskiqMessage::parse(native.as_bytes())
            .unwrap()
            .known_labels()
            .unwrap();
        assert_eq!(known.timeout_s, Some(2.5));
        assert_eq!(known.retry_on_error, Some(true));
        assert_eq!(known.max_retries, Some(3));
        let huge =
            r#"{"task_id":"a","task_name":"t","labels":{"delay":"1e400"},"args":[],"kwargs":{}}"#;
        assert!(TaskiqMessage::parse(huge.as_bytes())
            .unwrap()
            .known_labels()
            .is_err());
    }

    #[test]
    fn binds_keywords_by_name() {
        let p = ["a", "b"];
        let kw = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            bind_args(&p, &[json!(5)], &kw(json!({"b": 6}))).unwrap(),
            vec![json!(5), json!(6)]
        );
        assert_eq!(
            bind_args(&p, &[], &kw(json!({"b": 2, "a": 1}))).unwrap(),
            vec![json!(1), json!(2)]
        );
        assert!(bind_args(&p, &[], &kw(json!({"a": 1})))
            .unwrap_err()
            .contains("missing"));
        assert!(bind_args(&p, &[], &kw(json!({"a": 1, "b": 2, "c": 3})))
            .unwrap_err()
            .contains("unexpected keyword"));
        assert!(bind_args(&p, &[json!(1)], &kw(json!({"a": 1, "b": 2})))
            .unwrap_err()
            .contains("multiple"));
        assert!(bind_args(&p, &[json!(1), json!(2), json!(3)], &Map::new()).is_err());
    }
}
