//! Arithmetic tasks: the smallest useful examples.

use serde::{Deserialize, Serialize};

/// Adds two numbers.
#[kiq::task]
pub async fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Why a division failed.
#[derive(Debug, thiserror::Error)]
pub enum MathError {
    /// The divisor was zero.
    #[error("cannot divide {0} by zero")]
    DivideByZero(f64),
}

/// Divides, failing on a zero divisor: the error reaches the caller.
#[kiq::task(queue = "default", timeout = "5s")]
pub async fn divide(a: f64, b: f64) -> Result<f64, MathError> {
    if b == 0.0 {
        return Err(MathError::DivideByZero(a));
    }
    Ok(a / b)
}

/// Summary statistics of a series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// How many values.
    pub count: usize,
    /// Their sum.
    pub sum: f64,
    /// Their mean, if there were any.
    pub mean: Option<f64>,
}

/// Computes statistics: structs in and out travel as MessagePack.
#[kiq::task(name = "math.stats")]
pub async fn stats(values: Vec<f64>) -> Stats {
    let sum: f64 = values.iter().sum();
    Stats {
        count: values.len(),
        sum,
        mean: (!values.is_empty()).then(|| sum / values.len() as f64),
    }
}

/// Doubles a number: a chain step (`add::call(1, 2).then(double::link())`).
#[kiq::task]
pub async fn double(x: i64) -> i64 {
    x * 2
}

/// Dispatches the chain `add(a, b)` → `double` from inside a task, with the worker's own
/// broker, and returns the chain's last task id: follow-up work, in this task's trace.
#[kiq::task]
pub async fn add_then_double(a: i64, b: i64) -> Result<String, String> {
    let task = kiq::current_task().ok_or("not run by a worker")?;
    let broker = task.broker().ok_or("not run by a worker")?;
    let last = add::call(a, b)
        .then(double::link())
        .kiq(broker)
        .await
        .map_err(|e| e.to_string())?;
    Ok(last.id().to_string())
}

/// Halves an even number; fails on an odd one (to show a chain stopping at a failed step).
#[kiq::task]
pub async fn halve_even(x: i64) -> Result<i64, String> {
    if x % 2 != 0 {
        return Err(format!("{x} is odd"));
    }
    Ok(x / 2)
}

/// Sums a group's outputs: a group callback
/// (`kiq::group(...).then(total::link())`).
#[kiq::task]
pub async fn total(values: Vec<i64>) -> i64 {
    values.iter().sum()
}
