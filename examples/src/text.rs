//! Text tasks.

use std::collections::BTreeMap;

/// Greets someone.
#[kiq::task]
pub async fn greet(name: String) -> String {
    format!("Hello, {name}!")
}

/// Counts words (lower-cased).
#[kiq::task(queue = "text")]
pub async fn word_count(text: String) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for w in text.split_whitespace() {
        *counts.entry(w.to_lowercase()).or_insert(0) += 1;
    }
    counts
}

/// Configuration shared by every task of a worker process (see [`crate::provide_state`]).
#[derive(Debug, Clone)]
pub struct GreetingConfig {
    /// The greeting word.
    pub greeting: String,
}

/// Greets with the worker's configured greeting: `State` is injected, only `name` is sent.
#[kiq::task]
pub async fn greet_with(kiq::State(config): kiq::State<GreetingConfig>, name: String) -> String {
    format!("{}, {name}!", config.greeting)
}

/// Describes the running task from its context: its labels, plus `id`, `name` and `attempt`
/// (shows what `kiq::current_task()` gives a task).
#[kiq::task]
pub async fn describe_self() -> BTreeMap<String, String> {
    let Some(task) = kiq::current_task() else {
        return BTreeMap::new();
    };
    let mut out = task.labels.clone();
    out.insert("id".into(), task.id.clone());
    out.insert("name".into(), task.name.clone());
    out.insert("attempt".into(), task.attempt.to_string());
    out
}
