//! Shared state for tasks, injected like axum's `State`: register a value once per worker process
//! with [`provide`], and any task taking a `State<T>` argument receives a clone of it.
//!
//! ```ignore
//! #[derive(Clone)]
//! struct Db(sqlx::PgPool);
//!
//! #[kiq::task]
//! async fn archive(State(db): State<Db>, order_id: u64) -> Result<(), String> { /* ... */ }
//!
//! fn main() -> std::process::ExitCode {
//!     kiq::provide(Db(make_pool()));
//!     kiq::cli::main()
//! }
//! ```
//!
//! The state argument is not sent: `archive::kiq(&broker, order_id)` takes only the others.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use kiq_broker::{FailureKind, TaskFailure};

/// A value provided to tasks by the worker (see [`provide`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct State<T>(pub T);

type Values = RwLock<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>;

fn values() -> &'static Values {
    static VALUES: OnceLock<Values> = OnceLock::new();
    VALUES.get_or_init(Default::default)
}

/// Registers `value` for every task of this process that takes a `State<T>`. Providing a type
/// again replaces it.
pub fn provide<T: Clone + Send + Sync + 'static>(value: T) {
    if let Ok(mut v) = values().write() {
        v.insert(TypeId::of::<T>(), Arc::new(value));
    }
}

/// The provided `T` for `task`, or a failure saying it was never provided.
pub fn injected<T: Clone + Send + Sync + 'static>(task: &str) -> Result<State<T>, TaskFailure> {
    values()
        .read()
        .ok()
        .and_then(|v| v.get(&TypeId::of::<T>()).cloned())
        .and_then(|a| a.downcast_ref::<T>().cloned())
        .map(State)
        .ok_or_else(|| {
            TaskFailure::new(
                FailureKind::Error,
                format!(
                    "{task} needs State<{}>, but this worker never provided one (call kiq::provide at start-up)",
                    std::any::type_name::<T>()
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Config(u32);

    #[test]
    fn provided_values_are_injected_and_missing_ones_say_so() {
        assert!(injected::<Config>("t")
            .unwrap_err()
            .message
            .contains("State<"));
        provide(Config(7));
        assert_eq!(injected::<Config>("t").unwrap(), State(Config(7)));
    }
}
