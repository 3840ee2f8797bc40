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
