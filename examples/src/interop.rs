//! Tasks a Python Taskiq app calls by name: the Rust side of a migration one task at a time.
//! A `taskctl worker --taskiq taskiq` serves them to Python's `task.kiq()` (see
//! `docs/coming-from-taskiq.md`); their names are the ones the Python code already uses.

use serde::{Deserialize, Serialize};

/// `interop.add(a, b)`: positional or keyword arguments alike.
#[kiq::task(name = "interop.add", queue = "interop")]
pub async fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// `interop.greet(name, punctuation)`: strings both ways, non-ASCII included.
#[kiq::task(name = "interop.greet", queue = "interop")]
pub async fn greet(name: String, punctuation: String) -> String {
    format!("hello {name}{punctuation}")
}

/// `interop.fail(message)`: fails with `message`, which Python receives as the exception's.
#[kiq::task(name = "interop.fail", queue = "interop")]
pub async fn fail(message: String) -> Result<(), String> {
    Err(message)
}

/// `interop.flaky(n)`: fails on its first attempt, then returns `n`: succeeds only when the
/// message's `retry_on_error` label asks for a retry.
#[kiq::task(name = "interop.flaky", queue = "interop")]
pub async fn flaky(n: i64) -> Result<i64, String> {
    match kiq::current_task() {
        Some(t) if t.attempt == 0 => Err("first attempt fails".into()),
        _ => Ok(n),
    }
}

/// A structured result: Python receives a dict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// How many values.
    pub count: usize,
    /// Their sum.
    pub total: f64,
}

/// `interop.summarise(values)`: a list in, a dict out.
#[kiq::task(name = "interop.summarise", queue = "interop")]
pub async fn summarise(values: Vec<f64>) -> Summary {
    Summary {
        count: values.len(),
        total: values.iter().sum(),
    }
}
