//! Cron semantics, one regression test per finding of issue 19, built from its examples.

use chrono::{DateTime, Utc};
use kiq_scheduler::ScheduleExpr;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test instants are valid RFC 3339")
        .with_timezone(&Utc)
}

fn parse(expr: &str, tz: Option<&str>) -> ScheduleExpr {
    ScheduleExpr::parse(expr, tz).unwrap_or_else(|e| panic!("{expr}: {e}"))
}

/// The next `n` fire times after `after`, as RFC 3339 in UTC.
fn fires(expr: &str, tz: Option<&str>, after: &str, n: usize) -> Vec<String> {
    let e = parse(expr, tz);
    let mut t = utc(after);
    let mut out = Vec::new();
    for _ in 0..n {
        let next = e
            .next_after(t)
            .unwrap_or_else(|| panic!("{expr} stopped firing after {t}"));
        assert!(next > t, "{expr}: {next} is not after {t}");
        out.push(next.format("%Y-%m-%dT%H:%M:%SZ").to_string());
        t = next;
    }
    out
}

fn next(expr: &str, tz: Option<&str>, after: &str) -> String {
    fires(expr, tz, after, 1).remove(0)
}

fn refused(expr: &str, tz: Option<&str>) -> String {
    match ScheduleExpr::parse(expr, tz) {
        Ok(_) => panic!("{expr:?} was accepted"),
        Err(e) => {
            assert!(!e.reason.trim().is_empty(), "{expr:?}: empty reason");
            e.to_string()
        }
    }
}

// 1. A weekday field mixing names and numbers reads every item the Unix way.

#[test]
fn weekday_names_mixed_with_numbers_keep_unix_numbers() {
    // Monday 2030-02-18T06:50:37Z: both spellings wait for Wednesday.
    let monday = "2030-02-18T06:50:37Z";
    for expr in [
        "54 * * * SUN,3-5",
        "54 * * * 0,3-5",
        "0 54 * * * SUN,3-5",
        "54 * * * sun,wed-5",
    ] {
        assert_eq!(next(expr, None, monday), "2030-02-20T00:54:00Z", "{expr}");
    }
    // With a restricted day of month too (the 15th or those weekdays).
    assert_eq!(
        next("54 * 15 * SUN,3-5", None, monday),
        "2030-02-20T00:54:00Z"
    );
    // MON,7 is Monday and Sunday (not Saturday): from Tuesday, Sunday.
    assert_eq!(
        next("54 * * * MON,7", None, "2030-02-19T00:00:00Z"),
        "2030-02-24T00:54:00Z"
    );
    assert_eq!(
        next("0 54 * * * MON,7", None, "2030-02-19T00:00:00Z"),
        "2030-02-24T00:54:00Z"
    );
    // tue,4,sat is Tuesday, Thursday, Saturday: from Wednesday, Thursday.
    assert_eq!(
        next("54 * * * tue,4,sat", None, "2030-02-20T00:00:00Z"),
        "2030-02-21T00:54:00Z"
    );
    assert_eq!(
        next("54 * 28 * tue,4,sat", None, "2030-02-20T00:00:00Z"),
        "2030-02-21T00:54:00Z"
    );
    // sun,6 is Sunday and Saturday: from Thursday, Saturday.
    assert_eq!(
        next("54 * * * sun,6", None, "2030-02-21T00:00:00Z"),
        "2030-02-23T00:54:00Z"
    );
}

#[test]
fn sunday_as_zero_and_number_name_ranges_are_accepted() {
    // sat,0 is Saturday and Sunday.
    assert_eq!(
        fires("54 0 * * sat,0", None, "2030-02-18T00:00:00Z", 3),
        [
            "2030-02-23T00:54:00Z",
            "2030-02-24T00:54:00Z",
            "2030-03-02T00:54:00Z"
        ]
    );
    // 1-fri is Monday to Friday.
    assert_eq!(
        fires("54 0 * * 1-fri", None, "2030-02-22T01:00:00Z", 2),
        ["2030-02-25T00:54:00Z", "2030-02-26T00:54:00Z"]
    );
    // 5-7 and FRI-7 are Friday to Sunday.
    for expr in ["0 9 * * 5-7", "0 9 * * FRI-7", "0 9 * * fri,sat,0"] {
        assert_eq!(
            fires(expr, None, "2030-02-18T00:00:00Z", 3),
            [
                "2030-02-22T09:00:00Z",
                "2030-02-23T09:00:00Z",
                "2030-02-24T09:00:00Z"
            ],
            "{expr}"
        );
    }
}

// 2. A 30-minute DST jump loses no tick.

#[test]
fn lord_howe_half_hour_gap_fires_the_skipped_and_the_real_time() {
    // 2026-10-04: Lord Howe's clock jumps from 02:00 (+10:30) to 02:30 (+11:00). 02:20 is
    // skipped and fires as if the clock had not jumped (02:20 +10:30 = 02:50 +11:00); 02:40
    // exists and fires at 02:40 +11:00, before it.
    assert_eq!(
        fires(
            "20,40 2 * * *",
            Some("Australia/Lord_Howe"),
            "2026-10-02T12:00:00Z",
            5
        ),
        [
            "2026-10-02T15:50:00Z", // 10-03 02:20 +10:30
            "2026-10-02T16:10:00Z", // 10-03 02:40 +10:30
            "2026-10-03T15:40:00Z", // 10-04 02:40 +11:00
            "2026-10-03T15:50:00Z", // 10-04 02:20, skipped: 02:50 +11:00
            "2026-10-04T15:20:00Z", // 10-05 02:20 +11:00
        ]
    );
    // Asked from between the two, the skipped one is still due.
    assert_eq!(
        next(
            "20,40 2 * * *",
            Some("Australia/Lord_Howe"),
            "2026-10-03T15:40:00Z"
        ),
        "2026-10-03T15:50:00Z"
    );
}

#[test]
fn a_skipped_midnight_fires_as_if_the_clock_had_not_jumped() {
    // 2026-09-06: Santiago's clock jumps from 24:00 (-04) to 01:00 (-03); midnight is skipped
    // and fires at 00:00 -04 = 01:00 -03, once.
    assert_eq!(
        fires(
            "0 0 * * *",
            Some("America/Santiago"),
            "2026-09-05T00:00:00Z",
            3
        ),
        [
            "2026-09-05T04:00:00Z",
            "2026-09-06T04:00:00Z",
            "2026-09-07T03:00:00Z"
        ]
    );
}

// 3. In a repeated hour, fixed times fire once; wildcard and step hours follow the clock.

#[test]
fn wildcard_hours_follow_the_clock_through_a_repeated_hour() {
    // 2026-11-01: New York's 01:00-02:00 happens twice (EDT from 05:00Z, EST from 06:00Z).
    let ny = Some("America/New_York");
    assert_eq!(
        fires("*/20 * * * *", ny, "2026-11-01T04:50:00Z", 7),
        [
            "2026-11-01T05:00:00Z",
            "2026-11-01T05:20:00Z",
            "2026-11-01T05:40:00Z",
            "2026-11-01T06:00:00Z",
            "2026-11-01T06:20:00Z",
            "2026-11-01T06:40:00Z",
            "2026-11-01T07:00:00Z"
        ]
    );
    assert_eq!(
        fires("@hourly", ny, "2026-11-01T03:30:00Z", 4),
        [
            "2026-11-01T04:00:00Z",
            "2026-11-01T05:00:00Z",
            "2026-11-01T06:00:00Z",
            "2026-11-01T07:00:00Z"
        ]
    );
    // A step in the hour field, or a wildcard minute, follows the clock too.
    assert_eq!(
        fires("0 1-3/2 * * *", ny, "2026-11-01T04:00:00Z", 3),
        [
            "2026-11-01T05:00:00Z",
            "2026-11-01T06:00:00Z",
            "2026-11-01T08:00:00Z"
        ]
    );
    assert_eq!(
        fires("*/30 1 * * *", ny, "2026-11-01T04:00:00Z", 5),
        [
            "2026-11-01T05:00:00Z",
            "2026-11-01T05:30:00Z",
            "2026-11-01T06:00:00Z",
            "2026-11-01T06:30:00Z",
            "2026-11-02T06:00:00Z"
        ]
    );
}

#[test]
fn fixed_times_fire_once_in_a_repeated_hour() {
    let ny = Some("America/New_York");
    assert_eq!(
        fires("30 1 * * *", ny, "2026-10-31T12:00:00Z", 2),
        ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
    );
    // Asked from inside the second pass, the repeated time is not due again.
    assert_eq!(
        next("30 1 * * *", ny, "2026-11-01T06:10:00Z"),
        "2026-11-02T06:30:00Z"
    );
    assert_eq!(
        fires("0,30 1-2 * * *", ny, "2026-11-01T04:00:00Z", 4),
        [
            "2026-11-01T05:00:00Z",
            "2026-11-01T05:30:00Z",
            "2026-11-01T07:00:00Z",
            "2026-11-01T07:30:00Z"
        ]
    );
    // Lord Howe falls back half an hour on 2026-04-05 (02:00 +11:00 to 01:30 +10:30).
    assert_eq!(
        fires(
            "45 1 * * *",
            Some("Australia/Lord_Howe"),
            "2026-04-04T12:00:00Z",
            2
        ),
        ["2026-04-04T14:45:00Z", "2026-04-05T15:15:00Z"]
    );
    assert_eq!(
        fires(
            "*/20 * * * *",
            Some("Australia/Lord_Howe"),
            "2026-04-04T14:10:00Z",
            4
        ),
        [
            "2026-04-04T14:20:00Z", // 01:20 +11:00
            "2026-04-04T14:40:00Z", // 01:40 +11:00
            "2026-04-04T15:10:00Z", // 01:40 +10:30, the clock's second pass
            "2026-04-04T15:30:00Z", // 02:00 +10:30
        ]
    );
    // Chatham falls back from 03:45 (+13:45) to 02:45 (+12:45) on 2026-04-05.
    let chatham = Some("Pacific/Chatham");
    assert_eq!(
        fires("0 3 * * *", chatham, "2026-04-04T12:00:00Z", 2),
        ["2026-04-04T13:15:00Z", "2026-04-05T14:15:00Z"]
    );
    assert_eq!(
        fires("0 * * * *", chatham, "2026-04-04T12:00:00Z", 4),
        [
            "2026-04-04T12:15:00Z",
            "2026-04-04T13:15:00Z",
            "2026-04-04T14:15:00Z",
            "2026-04-04T15:15:00Z"
        ]
    );
}

// 4. Expressions that can never fire are refused.

#[test]
fn never_firing_expressions_are_refused() {
    for (expr, months) in [
        ("0 0 30 2 *", "February"),
        ("0 0 31 2 *", "February"),
        ("0 0 31 4,6,9,11 *", "April, June, September or November"),
        ("0 0 30,31 feb ?", "February"),
        ("0 0 30 2 */2", "February"),
        ("0 0 0 31 2 *", "February"),
    ] {
        let err = refused(expr, None);
        assert!(
            err.contains("never fire") && err.contains(months),
            "{expr}: {err}"
        );
    }
    // Also where schedules are defined (schedule add, the API and declared schedules all
    // validate through ScheduleDef::validate).
    let def = kiq_scheduler::ScheduleDef::new("feb30", "app::t", "0 0 30 2 *");
    let err = def.validate().expect_err("30 February is refused");
    assert!(err.reason.contains("never fire"), "{err}");
}

#[test]
fn rare_but_possible_days_are_accepted() {
    // Restricted day of week: the 31st or any Monday, in February, so Mondays.
    assert_eq!(
        next("0 0 31 2 1", None, "2030-01-01T00:00:00Z"),
        "2030-02-04T00:00:00Z"
    );
    assert_eq!(
        next("0 0 29 2 *", None, "2029-01-01T00:00:00Z"),
        "2032-02-29T00:00:00Z"
    );
    assert_eq!(
        next("0 0 30,31 2,4 *", None, "2030-01-01T00:00:00Z"),
        "2030-04-30T00:00:00Z"
    );
    // 29 February on a Sunday (*/7 is Sunday; a `*`-led day field means both must match):
    // 2088, then not until 2128.
    assert_eq!(
        next("0 0 29 2 */7", None, "2089-01-01T00:00:00Z"),
        "2128-02-29T00:00:00Z"
    );
}

// 5. Error messages name the field, the value and the allowed range; non-standard syntax is
// either a documented extension or refused.

#[test]
fn errors_name_the_field_the_value_and_the_range() {
    for (expr, needle) in [
        ("60 * * * *", "minute 60 is out of range 0-59"),
        ("0 24 * * *", "hour 24 is out of range 0-23"),
        ("0 0 0 * *", "day of month 0 is out of range 1-31"),
        ("0 0 32 * *", "day of month 32 is out of range 1-31"),
        ("0 0 * 13 *", "month 13 is out of range 1-12 or JAN-DEC"),
        ("0 0 * * 8", "day of week 8 is out of range 0-7 or SUN-SAT"),
        ("60 0 * * * *", "second 60 is out of range 0-59"),
        ("0 0 5L * *", "'L' (last day) is not supported"),
        ("0 0 L * *", "'L' (last day) is not supported"),
        ("0 0 * * 5L", "'L' (last day) is not supported"),
        ("0 0 15W * *", "'W' (nearest weekday) is not supported"),
        (
            "0 0 * * 2#3",
            "'#' (nth weekday of the month) is not supported",
        ),
        ("H * * * *", "'H' (hashed values) is not supported"),
        (
            "? * * * *",
            "only allowed as a whole day-of-month or day-of-week field",
        ),
        (
            "0 0 1,? * *",
            "only allowed as a whole day-of-month or day-of-week field",
        ),
        ("0 0 * * MONDAY", "three-letter name"),
        ("0 0 * JANUARY *", "three-letter name"),
        ("0 MON * * *", "hour \"MON\" is not a number"),
        (
            "*/0 * * * *",
            "minute step 0 in \"*/0\" is out of range 1-59",
        ),
        (
            "*/60 * * * *",
            "minute step 60 in \"*/60\" is out of range 1-59",
        ),
        ("0 0 * * */8", "day of week step 8"),
        (
            "*/x * * * *",
            "minute step \"x\" in \"*/x\" is not a number",
        ),
        ("0 22-2 * * *", "hour range \"22-2\" runs backwards"),
        (
            "0 0 * * MON-SUN",
            "day of week range \"MON-SUN\" runs backwards",
        ),
        ("1,,2 * * * *", "empty list item"),
        ("* * *", "got 3"),
        ("0 0 0 1 1 * 2030", "a year field is not supported"),
        ("0 0 * * 1-*", "cannot be one end of a range"),
    ] {
        let err = refused(expr, None);
        assert!(err.contains(needle), "{expr}: {err}");
    }
}

#[test]
fn start_slash_step_is_start_to_last_in_every_field() {
    // a/n is a-last/n. In the day-of-week field last is 6 (Saturday), so 1/2 is Monday,
    // Wednesday, Friday and never Sunday; 5/2 is Friday; 5/1 is Friday and Saturday.
    let days = |dow: &str| {
        fires(&format!("0 0 * * {dow}"), None, "2030-02-16T12:00:00Z", 4) // a Saturday
    };
    assert_eq!(
        days("1/2"),
        [
            "2030-02-18T00:00:00Z",
            "2030-02-20T00:00:00Z",
            "2030-02-22T00:00:00Z",
            "2030-02-25T00:00:00Z"
        ]
    );
    assert_eq!(days("1/2"), days("1-5/2"));
    assert_eq!(days("5/2"), days("5"));
    assert_eq!(days("5/1"), days("5-6"));
    assert_eq!(days("MON/2"), days("1/2"));
    assert_eq!(days("0/3"), days("*/3"));
    assert_eq!(days("7/3"), days("0,3,6"));
    // Elsewhere the same rule: minute 5/15 is 5,20,35,50; month 11/2 is November.
    assert_eq!(
        fires("5/15 * * * *", None, "2030-02-16T12:00:00Z", 5),
        [
            "2030-02-16T12:05:00Z",
            "2030-02-16T12:20:00Z",
            "2030-02-16T12:35:00Z",
            "2030-02-16T12:50:00Z",
            "2030-02-16T13:05:00Z"
        ]
    );
    assert_eq!(
        next("0 0 1 11/2 *", None, "2030-02-16T12:00:00Z"),
        "2030-11-01T00:00:00Z"
    );
}

#[test]
fn question_mark_is_a_day_field_wildcard() {
    assert_eq!(
        next("0 0 12 ? * MON", None, "2030-02-16T12:00:00Z"),
        "2030-02-18T12:00:00Z"
    );
    assert_eq!(
        next("0 0 15 * ?", None, "2030-02-16T12:00:00Z"),
        "2030-03-15T00:00:00Z"
    );
}

#[test]
fn a_star_led_day_field_means_both_days_must_match() {
    // Vixie cron: */2 in the day of month counts as `*` for the OR rule, so odd days that are
    // Mondays; 1-31/2 does not, so odd days or Mondays.
    assert_eq!(
        next("0 0 */2 * MON", None, "2026-11-01T00:00:00Z"),
        "2026-11-09T00:00:00Z"
    );
    assert_eq!(
        fires("0 0 1-31/2 * MON", None, "2026-11-01T00:00:00Z", 2),
        ["2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z"]
    );
}

#[test]
fn zone_prefix_and_zone_argument_must_agree() {
    let e = parse("CRON_TZ=Asia/Kolkata 30 0 * * *", Some("Asia/Kolkata"));
    assert_eq!(e.tz(), chrono_tz::Tz::Asia__Kolkata);
    let e = parse("TZ=Asia/Kolkata 30 0 * * *", None);
    assert_eq!(e.tz(), chrono_tz::Tz::Asia__Kolkata);
    let err = refused("CRON_TZ=Asia/Kolkata 30 0 * * *", Some("Europe/Berlin"));
    assert!(err.contains("give one zone"), "{err}");
    let err = refused("CRON_TZ=Mars/Olympus 30 0 * * *", None);
    assert!(err.contains("IANA"), "{err}");
    let err = refused("CRON_TZ=Asia/Kolkata", None);
    assert!(err.contains("time zone prefix"), "{err}");
}
