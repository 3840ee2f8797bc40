//! Property tests of what the scheduler reads from outside: schedule expressions and zones
//! (the CLI, the API, `#[task(schedule = ...)]`), stored schedule definitions (JSON in Redis,
//! written by any client), and Taskiq's stored schedules (pickles written by Python). Each
//! parses or gives a clear error, never a panic or an endless search. CI runs proptest's 256
//! cases per property; a longer run is
//! `PROPTEST_CASES=100000 cargo test --release -p kiq-scheduler --test fuzz`.

use chrono::{DateTime, Utc};
use kiq_broker::taskiq::pickle;
use kiq_scheduler::taskiq::TaskiqSchedules;
use kiq_scheduler::{ScheduleDef, ScheduleExpr};
use proptest::collection::vec;
use proptest::prelude::*;

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// One cron field: numbers (also out of range), ranges, steps, lists, names, specials.
fn cron_field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        Just("?".to_string()),
        (0u64..100_000).prop_map(|n| n.to_string()),
        (0u32..70, 0u32..70).prop_map(|(a, b)| format!("{a}-{b}")),
        (0u32..70, 0u64..100_000).prop_map(|(a, s)| format!("{a}/{s}")),
        (0u64..u64::MAX).prop_map(|s| format!("*/{s}")),
        vec(0u32..70, 1..6).prop_map(|v| v
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")),
        "(MON|TUE|SUN|JAN|FEB|DEC|L|W|LW|5L|3#2|15W|#|-|/|,)".prop_map(String::from),
        ".{0,6}",
    ]
}

proptest! {
    /// Any string as an expression, with any zone: parsed or refused, and a parsed one
    /// answers "next fire after t" (or none) for any t.
    #[test]
    fn arbitrary_expressions_parse_or_refuse(
        expr in ".{0,64}",
        tz in proptest::option::of(".{0,32}"),
        t in -62_000_000_000i64..253_000_000_000,
    ) {
        if let Ok(e) = ScheduleExpr::parse(&expr, tz.as_deref()) {
            let _ = e.next_after(at(t));
        }
    }

    /// Cron-shaped expressions of 5 to 7 fields with hostile values, in real zones.
    #[test]
    fn cron_shaped_expressions_never_panic_or_hang(
        fields in vec(cron_field(), 5..=7),
        tz in prop_oneof![Just(None), Just(Some("Europe/London")), Just(Some("Asia/Kolkata")), Just(Some("America/St_Johns"))],
        t in 0i64..4_102_444_800,
    ) {
        let expr = fields.join(" ");
        if let Ok(e) = ScheduleExpr::parse(&expr, tz) {
            if let Some(next) = e.next_after(at(t)) {
                prop_assert!(next > at(t), "{expr}: {next} is not after {}", at(t));
            }
        }
        let every = format!("@every {}", fields[0]);
        if let Ok(e) = ScheduleExpr::parse(&every, None) {
            let _ = e.next_after(at(t));
        }
    }

    /// A stored definition is any JSON a client wrote: it decodes or not, and a decoded one
    /// validates or is refused, and its arguments encode or are refused.
    #[test]
    fn stored_definitions_decode_validate_or_refuse(
        json in kiq_testkit::arb::object_with(&[
            "id", "task", "schedule", "tz", "args", "queue", "enabled", "misfire", "retries",
            "priority", "timeout_secs", "labels", "description", "created_at_ms",
        ]),
        bytes in vec(any::<u8>(), 0..512),
    ) {
        if let Ok(def) = serde_json::from_value::<ScheduleDef>(json) {
            let _ = def.validate();
            let _ = def.encoded_args(kiq_broker::ValueCodec::MsgPack);
        }
        let _ = serde_json::from_slice::<ScheduleDef>(&bytes);
    }

    /// Taskiq's stored schedules: arbitrary bytes, and pickles of hostile JSON-shaped dicts.
    #[test]
    fn taskiq_schedules_parse_or_refuse(
        bytes in vec(any::<u8>(), 0..1024),
        dict in kiq_testkit::arb::object_with(&[
            "task_name", "schedule_id", "cron", "cron_offset", "interval", "time", "args",
            "kwargs", "labels",
        ]),
    ) {
        let source = TaskiqSchedules::default();
        let _ = source.parse("id", &bytes);
        let _ = source.parse("id", &pickle::dumps(&dict));
    }
}
