//! A one-line progress bar on stderr for long operations (bulk replay, waiting on many tasks).
//! Drawn only on a terminal and for 20 items or more, so scripts see clean output.

use std::io::{IsTerminal, Write};

/// Redraws the bar: `what [#####     ] done/total`.
pub(crate) fn show(what: &str, done: usize, total: usize) {
    if total < 20 || !std::io::stderr().is_terminal() {
        return;
    }
    let width = 30;
    let filled = done.min(total) * width / total.max(1);
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\r{what} [{}{}] {done}/{total}",
        "#".repeat(filled),
        " ".repeat(width - filled)
    );
    if done >= total {
        let _ = writeln!(err);
    }
    let _ = err.flush();
}
