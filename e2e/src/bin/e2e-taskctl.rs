//! The end-to-end tests' `taskctl`: the example tasks linked in, as `kiq-examples`' `taskctl`
//! (a test can only run a binary of its own package: `CARGO_BIN_EXE_e2e-taskctl`).

kiq::link!(kiq_examples);

fn main() -> std::process::ExitCode {
    kiq_examples::provide_state();
    kiq::cli::main()
}
