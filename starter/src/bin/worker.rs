//! The worker binary: every `taskctl` subcommand (`worker`, `status`, `dead`, `serve`, ...) with
//! this crate's tasks linked in.
//!
//! ```sh
//! KIQ_REDIS_URL=redis://127.0.0.1:6379 cargo run --bin starter-worker -- worker --workers 2
//! ```

// Tasks register at link time, and the linker leaves out a library the binary never names:
// without this line the worker would start with no tasks (and say so).
kiq::link!(kiq_starter);

fn main() -> std::process::ExitCode {
    kiq::cli::main()
}
