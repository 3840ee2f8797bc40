//! `taskctl` with the example tasks linked in.

fn main() -> std::process::ExitCode {
    kiq_examples::link();
    kiq::cli::main()
}
