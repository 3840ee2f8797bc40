//! The `#[task]` macro's compile errors point at the user's code with a clear message.

#[test]
fn compile_errors_are_clear() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
