//! Example kiq tasks. The `taskctl` binary of this crate links them in, so the demo and the
//! CLI work out of the box: `taskctl tasks` lists them.

pub mod attendance;
pub mod bench;
pub mod faults;
pub mod interop;
pub mod maintenance;
pub mod math;
pub mod text;

/// Registers the state the example tasks take (`State<GreetingConfig>`): called once by the
/// `taskctl` binary at start-up, in every worker process.
pub fn provide_state() {
    kiq::provide(text::GreetingConfig {
        greeting: std::env::var("KIQ_EXAMPLE_GREETING").unwrap_or_else(|_| "Welcome".into()),
    });
}
