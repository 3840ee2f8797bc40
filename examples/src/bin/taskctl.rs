//! `taskctl` with the example tasks linked in.

kiq::link!(kiq_examples);

fn main() -> std::process::ExitCode {
    kiq_examples::provide_state();
    kiq::cli::main()
}
