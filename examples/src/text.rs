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
