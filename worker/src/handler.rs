//! Helpers the `#[task]` macro's generated handlers call: argument decoding, output encoding,
//! and turning a task's `Err` into a [`TaskFailure`].

use kiq_broker::{FailureKind, TaskFailure};
use serde::{de::DeserializeOwned, Serialize};

use crate::registry::Invocation;

/// Decodes a task's argument tuple; a mismatch is a [`FailureKind::BadArguments`] failure.
pub fn decode_args<A: DeserializeOwned>(task: &str, inv: &Invocation) -> Result<A, TaskFailure> {
    inv.codec.decode(&inv.args).map_err(|e| {
        TaskFailure::new(
            FailureKind::BadArguments,
            format!(
                "arguments do not match the signature of {task} ({}): {e}",
                std::any::type_name::<A>()
            ),
        )
    })
}

/// Checks the arguments of a task that takes none: nil (what `()` encodes to) or an empty
/// array (what JSON `[]` from a shell, a schedule or another language becomes).
pub fn expect_no_args(task: &str, inv: &Invocation) -> Result<(), TaskFailure> {
    if inv.codec.is_no_args(&inv.args) {
        Ok(())
    } else {
        Err(TaskFailure::new(
            FailureKind::BadArguments,
            format!("{task} takes no arguments, but some were given"),
        ))
    }
}

/// Encodes a task's output.
pub fn encode_output<T: Serialize>(inv: &Invocation, value: &T) -> Result<Vec<u8>, TaskFailure> {
    inv.codec
        .encode(value)
        .map_err(|e| TaskFailure::new(FailureKind::Error, format!("cannot encode the output: {e}")))
}

/// The failure for a task that returned `Err(error)`: its type and its `{:#}` message.
pub fn task_error<E: std::fmt::Display>(error: E) -> TaskFailure {
    TaskFailure {
        kind: FailureKind::Error,
        error_type: Some(std::any::type_name::<E>().to_string()),
        message: format!("{error:#}"),
    }
}

/// Implemented for every type a task may take or return (serde both ways, sendable).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a task argument or output: it must implement serde's `Serialize` and `DeserializeOwned`, and be `Send + 'static`",
    label = "not serde-serializable",
    note = "derive them with `#[derive(serde::Serialize, serde::Deserialize)]`"
)]
pub trait TaskValue: Serialize + DeserializeOwned + Send + 'static {}

impl<T: Serialize + DeserializeOwned + Send + 'static> TaskValue for T {}

/// Compile-time check the macro emits for each argument and the output.
pub const fn assert_task_value<T: TaskValue>() {}

/// Implemented for the error type of a task returning `Result<T, E>`.
#[diagnostic::on_unimplemented(
    message = "the error type `{Self}` of a task must implement `Display`",
    label = "no `Display`"
)]
pub trait TaskErrorValue: std::fmt::Display {}

impl<E: std::fmt::Display> TaskErrorValue for E {}

/// Turns what a task function returns into the handler's result: `T` is an output,
/// `Result<T, E>` is an output or a failure.
pub trait IntoOutcome {
    /// The output type callers receive.
    type Output: TaskValue;
    /// Splits into output or failure.
    fn into_outcome(self) -> Result<Self::Output, TaskFailure>;
}

/// Wraps a plain (non-`Result`) return value.
pub struct Plain<T>(pub T);

impl<T: TaskValue> IntoOutcome for Plain<T> {
    type Output = T;
    fn into_outcome(self) -> Result<T, TaskFailure> {
        Ok(self.0)
    }
}

impl<T: TaskValue, E: TaskErrorValue> IntoOutcome for Result<T, E> {
    type Output = T;
    fn into_outcome(self) -> Result<T, TaskFailure> {
        self.map_err(task_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_type_and_chain() {
        let f = task_error(std::io::Error::other("disk full"));
        assert_eq!(f.error_type.as_deref(), Some("std::io::error::Error"));
        assert_eq!(f.message, "disk full");
    }

    use kiq_broker::codec;

    fn inv(args: Vec<u8>) -> Invocation {
        Invocation {
            args,
            ..Invocation::default()
        }
    }

    #[test]
    fn no_arguments_may_be_nil_or_an_empty_array() {
        assert!(expect_no_args("t", &inv(codec::encode(&()).unwrap())).is_ok());
        assert!(expect_no_args("t", &inv(codec::encode(&Vec::<u8>::new()).unwrap())).is_ok());
        let err = expect_no_args("t", &inv(codec::encode(&(1,)).unwrap())).unwrap_err();
        assert_eq!(err.kind, FailureKind::BadArguments);
    }

    #[test]
    fn mismatched_arguments_are_reported() {
        let bytes = codec::encode(&("not a number",)).unwrap();
        let err = decode_args::<(i64,)>("t", &inv(bytes)).unwrap_err();
        assert_eq!(err.kind, FailureKind::BadArguments);
    }
}
