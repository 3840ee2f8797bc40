//! Helpers the `#[task]` macro's generated handlers call: argument decoding, output encoding,
//! and turning a task's `Err` into a [`TaskFailure`].

use kiq_broker::{FailureKind, TaskFailure};
use serde::{de::DeserializeOwned, Serialize};

use crate::registry::Invocation;

/// Decodes a task's argument tuple; a mismatch is a [`FailureKind::BadArguments`] failure.
pub fn decode_args<A: DeserializeOwned>(task: &str, inv: &Invocation) -> Result<A, TaskFailure> {
    inv.codec.decode(&inv.args).map_err(|e| {
        let rust = std::any::type_name::<A>();
        TaskFailure::new(
            FailureKind::BadArguments,
            format!(
                "arguments do not match the parameters of {task}, {} (in Rust {}): {e}",
                json_terms(rust),
                short_paths(rust)
            ),
        )
    })
}

/// A Rust type name as the JSON a caller must send, e.g. `(i64, alloc::string::String)` as
/// `[integer, string]`, `core::option::Option<f64>` as `number or null`; another type by its
/// name (`Stats`), whose serde form says what it takes.
pub fn json_terms(ty: &str) -> String {
    let ty = ty.trim();
    if ty == "()" {
        return "null".into();
    }
    if let Some(inner) = ty.strip_prefix('(').and_then(|t| t.strip_suffix(')')) {
        let parts: Vec<String> = split_top(inner)
            .into_iter()
            .filter(|p| !p.trim().is_empty())
            .map(json_terms)
            .collect();
        return format!("[{}]", parts.join(", "));
    }
    if let Some(inner) = ty.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        let elem = split_top(inner)
            .first()
            .copied()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("");
        return format!("array of {}", json_terms(elem));
    }
    let (path, args) = match ty.find('<') {
        Some(i) if ty.ends_with('>') => (&ty[..i], split_top(&ty[i + 1..ty.len() - 1])),
        _ => (ty, Vec::new()),
    };
    let name = path
        .trim_start_matches('&')
        .rsplit("::")
        .next()
        .unwrap_or(path);
    match (name, args.as_slice()) {
        ("i8" | "i16" | "i32" | "i64" | "i128" | "isize", _) => "integer".into(),
        ("u8" | "u16" | "u32" | "u64" | "u128" | "usize", _) => "integer".into(),
        ("f32" | "f64", _) => "number".into(),
        ("bool", _) => "boolean".into(),
        ("String" | "str" | "char", _) => "string".into(),
        ("Value", _) => "any JSON".into(),
        ("Option", [t]) => format!("{} or null", json_terms(t)),
        ("Box" | "Arc" | "Rc", [t]) => json_terms(t),
        ("Vec" | "VecDeque" | "HashSet" | "BTreeSet", [t, ..]) => {
            format!("array of {}", json_terms(t))
        }
        ("HashMap" | "BTreeMap", _) => "object".into(),
        // A struct is an object, a newtype or an enum may be a string: its serde form says.
        (other, _) => other.to_string(),
    }
}

/// Splits `s` at the commas outside `<>`, `()` and `[]`.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(s[start..].trim());
    out
}

/// A type name without module paths: `(i64, alloc::string::String)` as `(i64, String)`.
fn short_paths(ty: &str) -> String {
    let mut out = String::with_capacity(ty.len());
    let mut word = String::new();
    for c in ty.chars().chain(std::iter::once(' ')) {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            out.push_str(word.rsplit("::").next().unwrap_or(&word));
            word.clear();
            out.push(c);
        }
    }
    out.pop();
    out
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
    TaskFailure::typed(
        FailureKind::Error,
        Some(std::any::type_name::<E>().to_string()),
        format!("{error:#}"),
    )
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
    fn mismatched_arguments_are_reported_in_json_terms() {
        let bytes = codec::encode(&("not a number",)).unwrap();
        let err = decode_args::<(i64,)>("t", &inv(bytes)).unwrap_err();
        assert_eq!(err.kind, FailureKind::BadArguments);
        assert_eq!(
            err.message,
            "arguments do not match the parameters of t, [integer] (in Rust (i64,)): \
             cannot decode: found a string where another type was expected"
        );
    }

    #[test]
    fn rust_types_read_as_json() {
        assert_eq!(
            json_terms("(i64, alloc::string::String)"),
            "[integer, string]"
        );
        assert_eq!(
            json_terms("(alloc::vec::Vec<f64>, core::option::Option<bool>)"),
            "[array of number, boolean or null]"
        );
        assert_eq!(
            json_terms(
                "(std::collections::hash::map::HashMap<alloc::string::String, u8>, app::Stats)"
            ),
            "[object, Stats]"
        );
        assert_eq!(json_terms("()"), "null");
        assert_eq!(
            short_paths("(alloc::vec::Vec<app::x::Y>, i64)"),
            "(Vec<Y>, i64)"
        );
    }
}
