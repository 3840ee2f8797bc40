//! What `#[task]` generates, checked without Redis.

use kiq::broker::codec;
use kiq::worker::Invocation;

/// A task in a private module with a custom name and queue.
mod tasks {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    pub struct Point {
        pub x: i32,
        pub y: i32,
    }

    #[kiq::task(
        name = "geo.shift",
        queue = "geo",
        timeout = "250ms",
        retries = 2,
        backoff = "linear",
        backoff_delay = "200ms",
        backoff_max = "1s",
        jitter = false
    )]
    pub async fn shift(p: Point, by: i32) -> Point {
        Point {
            x: p.x + by,
            y: p.y + by,
        }
    }

    #[kiq::task]
    pub(crate) async fn checked(n: u8) -> Result<u8, String> {
        n.checked_mul(2).ok_or_else(|| format!("{n} * 2 overflows"))
    }

    #[kiq::task]
    async fn no_output() {}

    pub fn touch() {
        let _ = no_output::SPEC;
    }
}

fn run(name: &str, args: Vec<u8>) -> Result<Vec<u8>, kiq::TaskFailure> {
    let registry = kiq::Registry::linked().unwrap();
    let def = registry.get(name).expect("registered");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on((def.handler)(Invocation {
        task_id: "t".into(),
        args,
        attempt: 0,
        labels: Default::default(),
        ..Default::default()
    }))
}

#[test]
fn spec_and_registration_follow_the_options() {
    tasks::touch();
    assert_eq!(tasks::shift::SPEC.name, "geo.shift");
    assert_eq!(tasks::shift::SPEC.queue, "geo");
    assert_eq!(tasks::checked::SPEC.name, "macro_expansion::tasks::checked");
    assert_eq!(tasks::checked::SPEC.queue, "default");
    let registry = kiq::Registry::linked().unwrap();
    let def = registry.get("geo.shift").unwrap();
    assert_eq!(def.timeout, Some(std::time::Duration::from_millis(250)));
    assert_eq!(def.retry.max_retries, 2);
    assert_eq!(def.retry.backoff, kiq::Backoff::Linear);
    assert_eq!(def.retry.delay(3), std::time::Duration::from_millis(600));
    assert_eq!(def.retry.delay(9), std::time::Duration::from_secs(1));
    assert_eq!(tasks::shift::SPEC.retry, def.retry);
    assert!(def.location.contains("macro_expansion.rs"));
    assert!(registry.get("macro_expansion::tasks::no_output").is_some());
}

#[test]
fn handlers_decode_call_and_encode() {
    let out = run(
        "geo.shift",
        codec::encode(&(tasks::Point { x: 1, y: 2 }, 10)).unwrap(),
    )
    .unwrap();
    let p: tasks::Point = codec::decode(&out).unwrap();
    assert_eq!(p, tasks::Point { x: 11, y: 12 });

    let ok: u8 = codec::decode(
        &run(
            "macro_expansion::tasks::checked",
            codec::encode(&(4u8,)).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(ok, 8);
    let err = run(
        "macro_expansion::tasks::checked",
        codec::encode(&(200u8,)).unwrap(),
    )
    .unwrap_err();
    assert_eq!(err.kind, kiq::FailureKind::Error);
    assert_eq!(err.message, "200 * 2 overflows");
    assert_eq!(err.error_type.as_deref(), Some("alloc::string::String"));

    let bad = run("geo.shift", codec::encode(&("nope",)).unwrap()).unwrap_err();
    assert_eq!(bad.kind, kiq::FailureKind::BadArguments);
}

#[tokio::test]
async fn the_function_is_still_a_function() {
    let p = tasks::shift(tasks::Point { x: 0, y: 0 }, 1).await;
    assert_eq!(p, tasks::Point { x: 1, y: 1 });
    assert_eq!(tasks::checked(3).await, Ok(6));
}

#[test]
fn a_task_declared_inside_a_function_registers_and_runs() {
    // An argument named like the function must not shadow it in the handler.
    #[kiq::task(name = "inner.twice")]
    async fn twice(twice: i64) -> i64 {
        twice * 2
    }

    #[kiq::task]
    async fn inner_default_name(s: String) -> usize {
        s.len()
    }

    let direct = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(twice(4));
    assert_eq!(direct, 8);
    assert_eq!(twice::SPEC.name, "inner.twice");
    let out = run("inner.twice", codec::encode(&(21i64,)).unwrap()).unwrap();
    assert_eq!(codec::decode::<i64>(&out).unwrap(), 42);

    let name = inner_default_name::SPEC.name;
    assert!(name.ends_with("inner_default_name"), "{name}");
    assert!(kiq::Registry::linked().unwrap().get(name).is_some());
}
