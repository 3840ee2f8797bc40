//! The task registry: every `#[task]` in the linked program, collected at link time.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use kiq_broker::TaskFailure;

/// What a handler is given to run one task.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// The task id.
    pub task_id: String,
    /// The encoded argument tuple.
    pub args: Vec<u8>,
    /// Attempts made before this one (0 on the first).
    pub attempt: u32,
    /// The labels the producer attached.
    pub labels: BTreeMap<String, String>,
    /// The codec of the arguments and the output.
    pub codec: kiq_broker::ValueCodec,
    /// The values this worker provides to tasks taking a `State<T>`.
    pub state: std::sync::Arc<crate::state::Provided>,
}

/// The future a handler returns: the encoded output, or the failure.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, TaskFailure>> + Send>>;

/// Decodes the arguments, calls the task function and encodes its output.
pub type Handler = fn(Invocation) -> HandlerFuture;

/// One registered task, as `#[task]` submits it.
#[derive(Debug)]
pub struct TaskDef {
    /// The task name messages carry.
    pub name: &'static str,
    /// The default queue.
    pub queue: &'static str,
    /// The longest one attempt may run, if limited.
    pub timeout: Option<Duration>,
    /// How failures are retried.
    pub retry: kiq_broker::RetryPolicy,
    /// A visibility timeout longer than the worker's, for this task's messages (how long a
    /// dead worker's message waits before another worker takes it).
    pub visibility_timeout: Option<Duration>,
    /// A schedule declared on the task (`#[task(schedule = "...")]`), run by `taskctl scheduler`.
    pub schedule: Option<DeclaredSchedule>,
    /// Runs it.
    pub handler: Handler,
    /// The names of the parameters sent as arguments, in order (injected `State`s excluded):
    /// how keyword arguments (a Taskiq message's `kwargs`) are bound.
    pub params: &'static [&'static str],
    /// Where it is declared, for messages (`file:line`).
    pub location: &'static str,
}

/// A schedule declared in code on a task.
#[derive(Debug, Clone, Copy)]
pub struct DeclaredSchedule {
    /// The schedule expression.
    pub expr: &'static str,
    /// Its IANA time zone, if not UTC.
    pub tz: Option<&'static str>,
    /// The fixed arguments, a JSON array.
    pub args_json: &'static str,
}

inventory::collect!(TaskDef);

/// Why the linked tasks cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Two tasks claim the same name.
    #[error("duplicate task name {name:?}: declared at {first} and at {second}")]
    Duplicate {
        /// The name.
        name: &'static str,
        /// One declaration.
        first: &'static str,
        /// The other.
        second: &'static str,
    },
    /// No task is linked into the program.
    #[error(
        "no tasks are registered: the crate that declares them is not linked into this binary. \
         Tasks register at link time, and the linker leaves out a library the binary never \
         names: add `kiq::link!(your_library);` to the binary (beside `fn main`)"
    )]
    Empty,
}

/// The tasks a worker can run, by name.
#[derive(Debug, Default)]
pub struct Registry {
    tasks: foldhash::HashMap<&'static str, &'static TaskDef>,
}

impl Registry {
    /// Every task linked into this program; refuses duplicate names.
    pub fn linked() -> Result<Self, RegistryError> {
        Self::from_defs(inventory::iter::<TaskDef>)
    }

    /// A registry of `defs`; refuses duplicate names.
    pub fn from_defs(
        defs: impl IntoIterator<Item = &'static TaskDef>,
    ) -> Result<Self, RegistryError> {
        let mut tasks = foldhash::HashMap::default();
        for def in defs {
            if let Some(prev) = tasks.insert(def.name, def) {
                return Err(RegistryError::Duplicate {
                    name: def.name,
                    first: prev.location,
                    second: def.location,
                });
            }
        }
        Ok(Self { tasks })
    }

    /// Like [`Registry::linked`], but also refuses an empty registry (a worker with nothing to run).
    pub fn linked_non_empty() -> Result<Self, RegistryError> {
        let r = Self::linked()?;
        if r.is_empty() {
            return Err(RegistryError::Empty);
        }
        Ok(r)
    }

    /// The task named `name`.
    pub fn get(&self, name: &str) -> Option<&'static TaskDef> {
        self.tasks.get(name).copied()
    }

    /// Every task, sorted by name.
    pub fn tasks(&self) -> Vec<&'static TaskDef> {
        let mut v: Vec<_> = self.tasks.values().copied().collect();
        v.sort_by_key(|d| d.name);
        v
    }

    /// How many tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Whether any task declares its own visibility timeout.
    pub fn has_custom_visibility(&self) -> bool {
        self.tasks.values().any(|d| d.visibility_timeout.is_some())
    }

    /// The distinct default queues of the registered tasks, sorted.
    pub fn queues(&self) -> Vec<String> {
        let mut q: Vec<String> = self.tasks.values().map(|d| d.queue.to_string()).collect();
        q.sort();
        q.dedup();
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nop(_: Invocation) -> HandlerFuture {
        Box::pin(async { Ok(Vec::new()) })
    }

    static A: TaskDef = TaskDef {
        name: "a",
        queue: "q1",
        timeout: None,
        retry: kiq_broker::RetryPolicy::NONE,
        visibility_timeout: None,
        schedule: None,
        handler: nop,
        params: &[],
        location: "x.rs:1",
    };
    static A2: TaskDef = TaskDef {
        name: "a",
        queue: "q2",
        timeout: None,
        retry: kiq_broker::RetryPolicy::NONE,
        visibility_timeout: None,
        schedule: None,
        handler: nop,
        params: &[],
        location: "y.rs:2",
    };

    #[test]
    fn duplicates_are_refused_with_both_locations() {
        let err = Registry::from_defs([&A, &A2]).unwrap_err().to_string();
        assert!(err.contains("x.rs:1") && err.contains("y.rs:2"), "{err}");
        let ok = Registry::from_defs([&A]).unwrap();
        assert_eq!(ok.queues(), vec!["q1".to_string()]);
    }
}
