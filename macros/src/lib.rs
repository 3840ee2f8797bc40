//! The `#[task]` attribute of kiq. Use it through the facade: `#[kiq::task]`.
//!
//! ```ignore
//! #[kiq::task(queue = "math", timeout = "5s")]
//! async fn add(a: i64, b: i64) -> i64 { a + b }
//!
//! add(2, 3).await;                       // still a plain function
//! let h = add::kiq(&broker, 2, 3).await?; // typed dispatch
//! let sum: i64 = h.wait_result(Duration::from_secs(5)).await?;
//! ```
//!
//! Beside the function, the macro emits a module of the same name (modules and functions
//! live in different namespaces) holding `kiq`, `kicker`, `SPEC`, `Args`, `Output`, and a
//! link-time registration of the handler.
//!
//! An argument typed `State<T>` is injected by the worker (see `kiq::provide`) and is not part of
//! the dispatched arguments.
//!
//! A task may be declared inside a function body too. The generated module reaches the argument
//! and return types through `use super::*`, so there they must be types the enclosing module
//! can name (not types declared or imported in the same function body). Its default name does
//! not include the function (a macro cannot see it): give it `name = "..."` so that two
//! functions declaring a task of the same name do not clash.

mod options;
mod task;

use proc_macro::TokenStream;

/// Declares an `async fn` as a kiq task. See the crate docs.
///
/// Options: `name = "..."` (default: module path and function name), `queue = "..."` (default
/// `default`), `timeout = "30s"`, `retries = N` (default 0), `backoff = "exponential" | "linear" |
/// "fixed"` (default exponential), `backoff_delay = "1s"`, `backoff_max = "5m"`, `jitter = true`,
/// `visibility_timeout = "10m"` (how long a dead worker's message of this task waits before it is
/// taken over; only ever longer than the worker's),
/// `schedule = "30 0 * * *"` with `schedule_tz = "Asia/Kolkata"` and `schedule_args = "[1, 2]"`
/// (a schedule run by `taskctl scheduler`, with fixed arguments), `crate = "path"` (where kiq is,
/// default `::kiq`).
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    task::expand(attr.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
