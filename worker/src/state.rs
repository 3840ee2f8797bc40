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

use crate::registry::Invocation;

/// A value provided to tasks by the worker (see [`provide`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct State<T>(pub T);

/// The values a worker provides to its tasks, by type: owned by the worker (see
/// `Worker::builder(..).provide(..)`). A type it has none of is looked up among what
/// [`provide`] registered for the whole process.
#[derive(Default, Clone)]
pub struct Provided {
    values: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for Provided {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provided")
            .field("values", &self.values.len())
            .finish()
    }
}

impl Provided {
    /// Provides `value` to tasks taking a `State<T>` (replacing an earlier `T`).
    pub fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        self.values.insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The provided `T`, if any.
    pub fn get<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|a| a.downcast_ref::<T>().cloned())
    }
}

fn process() -> &'static RwLock<Provided> {
    static PROCESS: OnceLock<RwLock<Provided>> = OnceLock::new();
    PROCESS.get_or_init(Default::default)
}

/// Registers `value` for every task of this process that takes a `State<T>`. Providing a type
/// again replaces it. A convenience over `Worker::builder(..).provide(value)`, whose values
/// come first.
pub fn provide<T: Clone + Send + Sync + 'static>(value: T) {
    if let Ok(mut p) = process().write() {
        p.insert(value);
    }
}

/// The provided `T` for `task`, or a failure saying it was never provided.
pub fn injected<T: Clone + Send + Sync + 'static>(
    task: &str,
    inv: &Invocation,
) -> Result<State<T>, TaskFailure> {
    inv.state
        .get::<T>()
        .or_else(|| process().read().ok().and_then(|p| p.get::<T>()))
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
        let inv = Invocation::default();
        assert!(injected::<Config>("t", &inv)
            .unwrap_err()
            .message
            .contains("State<"));
        provide(Config(7));
        assert_eq!(injected::<Config>("t", &inv).unwrap(), State(Config(7)));
    }

    #[test]
    fn a_workers_own_values_come_first() {
        #[derive(Clone, Debug, PartialEq)]
        struct Own(u32);
        let mut p = Provided::default();
        p.insert(Own(1));
        let inv = Invocation {
            state: Arc::new(p),
            ..Invocation::default()
        };
        assert_eq!(injected::<Own>("t", &inv).unwrap(), State(Own(1)));
    }
}
