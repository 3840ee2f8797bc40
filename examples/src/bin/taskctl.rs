//! `taskctl` with the example tasks linked in.

kiq::link!(kiq_examples);

/// jemalloc rather than the system allocator: a worker allocates and frees on several threads
/// per task, where glibc's malloc spent a third of the worker's CPU (docs/performance.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    kiq_examples::provide_state();
    kiq::cli::main()
}
