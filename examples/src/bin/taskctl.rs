//! `taskctl` with the example tasks linked in.

fn main() -> std::process::ExitCode {
    kiq_examples::link();
    kiq_examples::provide_state();
    kiq::cli::main()
}
