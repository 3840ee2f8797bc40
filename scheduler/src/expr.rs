//! Schedule expressions and their next fire time.
//!
//! Accepted forms:
//! - classic 5-field cron `min hour dom month dow` (Unix weekday numbers: 0 and 7 are Sunday);
//! - 6-field cron with seconds first, same weekday numbers;
//! - `@yearly` `@annually` `@monthly` `@weekly` `@daily` `@midnight` `@hourly`;
//! - `@every 15s|5m|1h` (ticks at whole multiples of the period since the Unix epoch, so every
//!   scheduler replica agrees on them);
//! - a one-shot time: `@at 2026-12-01T09:00:00Z` or a bare RFC 3339 timestamp.
//!
//! A cron schedule is in UTC unless it names an IANA zone (`tz`, or a `CRON_TZ=Zone ` prefix).
//! Across DST changes: a local time skipped by a jump fires as if the clock had not jumped
//! (02:30 on New York's spring-forward day fires at 03:30 EDT), and a local time that occurs
//! twice fires once, at its first occurrence. As in Unix cron, when both day-of-month and
//! day-of-week are restricted, a day matching either fires.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// Why a schedule expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schedule {expr:?}: {reason}")]
pub struct ScheduleError {
    /// The expression as given.
    pub expr: String,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(expr: &str, reason: impl Into<String>) -> ScheduleError {
    ScheduleError {
        expr: expr.to_string(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone)]
enum Kind {
    /// Alternatives whose earliest next match fires (Unix dom/dow OR semantics).
    Cron(Vec<cron::Schedule>),
    Every(Duration),
    Once(DateTime<Utc>),
}

/// A parsed, validated schedule.
#[derive(Debug, Clone)]
pub struct ScheduleExpr {
    kind: Kind,
    tz: Tz,
    source: String,
}

impl ScheduleExpr {
    /// Parses `expr`, in zone `tz` (an IANA name; default UTC).
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Self, ScheduleError> {
        let source = expr.trim().to_string();
        let (mut zone, body) = match source
            .strip_prefix("CRON_TZ=")
            .or_else(|| source.strip_prefix("TZ="))
        {
            Some(rest) => match rest.split_once(char::is_whitespace) {
                Some((z, body)) => (Some(z.to_string()), body.trim().to_string()),
                None => {
                    return Err(invalid(
                        expr,
                        "a time zone prefix needs an expression after it",
                    ))
                }
            },
            None => (None, source.clone()),
        };
        if let Some(t) = tz.filter(|t| !t.is_empty()) {
            zone = Some(t.to_string());
        }
        let tz = match zone.as_deref() {
            None | Some("UTC") | Some("utc") => Tz::UTC,
            Some(z) => Tz::from_str(z).map_err(|_| {
                invalid(
                    expr,
                    format!("unknown time zone {z:?} (use an IANA name such as \"Asia/Kolkata\")"),
                )
            })?,
        };
        let kind = parse_kind(expr, &body)?;
        Ok(Self { kind, tz, source })
    }

    /// The expression as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The schedule's time zone.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// Whether it fires at most once.
    pub fn is_one_shot(&self) -> bool {
        matches!(self.kind, Kind::Once(_))
    }

    /// The first fire time strictly after `t`, or `None` if it never fires again.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Once(at) => (*at > t).then_some(*at),
            Kind::Every(period) => {
                let p = period.as_millis().max(1) as i64;
                let ms = t.timestamp_millis();
                let next = (ms.div_euclid(p) + 1) * p;
                DateTime::from_timestamp_millis(next)
            }
            Kind::Cron(alternatives) => alternatives
                .iter()
                .filter_map(|s| cron_next(s, self.tz, t))
                .min(),
        }
    }
}

fn parse_kind(expr: &str, body: &str) -> Result<Kind, ScheduleError> {
    if body.is_empty() {
        return Err(invalid(expr, "empty schedule"));
    }
    if let Some(rest) = body.strip_prefix("@every") {
        let d = humantime::parse_duration(rest.trim()).map_err(|e| {
            invalid(
                expr,
                format!("@every needs a duration like 15s, 5m, 1h: {e}"),
            )
        })?;
        if d < Duration::from_secs(1) {
            return Err(invalid(expr, "@every must be at least 1s"));
        }
        return Ok(Kind::Every(d));
    }
    if let Some(rest) = body.strip_prefix("@at") {
        return parse_time(expr, rest.trim()).map(Kind::Once);
    }
    if body.len() >= 10 && body.as_bytes()[4] == b'-' && !body.contains(' ') {
        return parse_time(expr, body).map(Kind::Once);
    }
    let cron5 = match body {
        "@yearly" | "@annually" => Some("0 0 1 1 *"),
        "@monthly" => Some("0 0 1 * *"),
        "@weekly" => Some("0 0 * * 0"),
        "@daily" | "@midnight" => Some("0 0 * * *"),
        "@hourly" => Some("0 * * * *"),
        other if other.starts_with('@') => {
            return Err(invalid(
                expr,
                "unknown shorthand; use @yearly, @monthly, @weekly, @daily, @hourly, @every <duration> or @at <time>",
            ))
        }
        _ => None,
    };
    let fields: Vec<String> = cron5
        .unwrap_or(body)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let mut six = match fields.len() {
        5 => {
            let mut f = vec!["0".to_string()];
            f.extend(fields);
            f
        }
        6 => fields,
        n => {
            return Err(invalid(
                expr,
                format!("cron needs 5 fields (min hour day month weekday) or 6 (with seconds first), got {n}"),
            ))
        }
    };
    six[5] = unix_weekdays(expr, &six[5])?;
    let restricted = |f: &str| f != "*" && f != "?";
    let alternatives = if restricted(&six[3]) && restricted(&six[5]) {
        // Unix cron: either the day of the month or the day of the week.
        let mut by_dom = six.clone();
        by_dom[5] = "*".into();
        let mut by_dow = six.clone();
        by_dow[3] = "*".into();
        vec![by_dom, by_dow]
    } else {
        vec![six]
    };
    alternatives
        .into_iter()
        .map(|f| {
            cron::Schedule::from_str(&f.join(" ")).map_err(|e| {
                invalid(
                    expr,
                    format!("{e} (fields: sec min hour day month weekday)"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Kind::Cron)
}

fn parse_time(expr: &str, s: &str) -> Result<DateTime<Utc>, ScheduleError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            invalid(
                expr,
                format!("a one-shot time must be RFC 3339, e.g. 2026-12-01T09:00:00Z: {e}"),
            )
        })
}

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Rewrites a weekday field written with Unix numbers (0-7, 0 and 7 = Sunday) as names, which
/// the cron crate reads unambiguously (its own numbers are 1-7 with 1 = Sunday).
fn unix_weekdays(expr: &str, field: &str) -> Result<String, ScheduleError> {
    if field == "*" || field == "?" || field.chars().any(|c| c.is_ascii_alphabetic()) {
        return Ok(field.to_string());
    }
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<usize>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| invalid(expr, format!("bad weekday step in {item:?}")))?,
            ),
            None => (item, 1),
        };
        let num = |s: &str| -> Result<usize, ScheduleError> {
            s.parse::<usize>().ok().filter(|n| *n <= 7).ok_or_else(|| {
                invalid(
                    expr,
                    format!("weekday {s:?} is not 0-7 (0 and 7 are Sunday)"),
                )
            })
        };
        let (lo, hi) = match range {
            "*" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None if step > 1 => (num(r)?, 7),
                None => (num(r)?, num(r)?),
            },
        };
        if lo > hi {
            return Err(invalid(
                expr,
                format!("weekday range {range:?} runs backwards"),
            ));
        }
        for d in (lo..=hi).step_by(step) {
            days[d % 7] = true;
        }
    }
    let names: Vec<&str> = (0..7).filter(|d| days[*d]).map(|d| DAY_NAMES[d]).collect();
    Ok(names.join(","))
}

/// The next match of `s` after `t`, reading the schedule in `tz`'s wall-clock time.
fn cron_next(s: &cron::Schedule, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // cron iterates calendar matches; run it on wall-clock time (as if it were UTC) and map each
    // match into the zone ourselves, so DST gaps and overlaps are handled explicitly.
    let local = t.with_timezone(&tz).naive_local();
    // Around a DST change the wall clock can be behind `t`'s: start an hour earlier there.
    let shifted = tz
        .offset_from_utc_datetime(&(t - chrono::Duration::hours(2)).naive_utc())
        .fix()
        != tz.offset_from_utc_datetime(&t.naive_utc()).fix();
    let start = if shifted {
        local - chrono::Duration::hours(2)
    } else {
        local
    };
    for candidate in s.after(&Utc.from_utc_datetime(&start)).take(100_000) {
        let c = candidate.naive_utc();
        let instant = match tz.from_local_datetime(&c) {
            LocalResult::Single(dt) => dt.with_timezone(&Utc),
            LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
            LocalResult::None => skipped_local_time(tz, c),
        };
        if instant > t {
            return Some(instant);
        }
    }
    None
}

/// A wall-clock time skipped by a DST jump, read with the offset in force just before the jump.
fn skipped_local_time(tz: Tz, c: NaiveDateTime) -> DateTime<Utc> {
    let before = c - chrono::Duration::hours(3);
    let offset = match tz.offset_from_local_datetime(&before) {
        LocalResult::Single(o) | LocalResult::Ambiguous(o, _) => o.fix(),
        LocalResult::None => tz.offset_from_utc_datetime(&before).fix(),
    };
    Utc.from_utc_datetime(&(c - chrono::Duration::seconds(offset.local_minus_utc() as i64)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike};
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, tz: Option<&str>, after: &str) -> String {
        ScheduleExpr::parse(expr, tz)
            .unwrap()
            .next_after(utc(after))
            .unwrap()
            .to_rfc3339()
    }

    #[test]
    fn daily_half_past_midnight_in_kolkata() {
        // 00:30 IST is 19:00 UTC the day before.
        assert_eq!(
            next("30 0 * * *", Some("Asia/Kolkata"), "2026-11-23T12:00:00Z"),
            "2026-11-23T19:00:00+00:00"
        );
        assert_eq!(
            next(
                "CRON_TZ=Asia/Kolkata 30 0 * * *",
                None,
                "2026-11-23T19:00:00Z"
            ),
            "2026-11-24T19:00:00+00:00"
        );
    }

    #[test]
    fn new_york_spring_forward_gap_fires_once_as_if_the_clock_had_not_jumped() {
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist that day.
        let e = Some("America/New_York");
        assert_eq!(
            next("30 2 * * *", e, "2026-03-07T12:00:00Z"),
            "2026-03-08T07:30:00+00:00"
        );
        assert_eq!(
            next("30 2 * * *", e, "2026-03-08T07:30:00Z"),
            "2026-03-09T06:30:00+00:00"
        );
        assert_eq!(
            next("30 2 * * *", e, "2026-03-06T12:00:00Z"),
            "2026-03-07T07:30:00+00:00"
        );
    }

    #[test]
    fn new_york_fall_back_overlap_fires_once() {
        // 2026-11-01: 01:00-02:00 happens twice (EDT, then EST).
        let e = Some("America/New_York");
        assert_eq!(
            next("30 1 * * *", e, "2026-10-31T12:00:00Z"),
            "2026-11-01T05:30:00+00:00"
        );
        // Not again at 06:30 UTC (the second 01:30): next is the following day.
        assert_eq!(
            next("30 1 * * *", e, "2026-11-01T05:30:00Z"),
            "2026-11-02T06:30:00+00:00"
        );
    }

    #[test]
    fn unix_weekday_numbers() {
        // 2026-11-23 is a Monday.
        assert_eq!(
            next("0 9 * * 1", None, "2026-11-22T00:00:00Z"),
            "2026-11-23T09:00:00+00:00"
        );
        assert_eq!(
            next("0 9 * * 0", None, "2026-11-23T00:00:00Z"),
            "2026-11-29T09:00:00+00:00"
        );
        assert_eq!(
            next("0 9 * * 7", None, "2026-11-23T00:00:00Z"),
            "2026-11-29T09:00:00+00:00"
        );
        assert_eq!(
            next("0 9 * * 5-7", None, "2026-11-23T00:00:00Z"),
            "2026-11-27T09:00:00+00:00"
        );
        assert_eq!(
            next("0 9 * * MON-FRI", None, "2026-11-28T00:00:00Z"),
            "2026-11-30T09:00:00+00:00"
        );
    }

    #[test]
    fn shorthands_seconds_every_and_one_shot() {
        assert_eq!(
            next("@daily", None, "2026-11-23T10:00:00Z"),
            "2026-11-24T00:00:00+00:00"
        );
        assert_eq!(
            next("@weekly", None, "2026-11-23T10:00:00Z"),
            "2026-11-29T00:00:00+00:00"
        );
        assert_eq!(
            next("@yearly", None, "2026-11-23T10:00:00Z"),
            "2027-01-01T00:00:00+00:00"
        );
        assert_eq!(
            next("*/15 * * * * *", None, "2026-11-23T10:00:07Z"),
            "2026-11-23T10:00:15+00:00"
        );
        assert_eq!(
            next("@every 15s", None, "2026-11-23T10:00:07Z"),
            "2026-11-23T10:00:15+00:00"
        );
        assert_eq!(
            next("@every 1h", None, "2026-11-23T10:00:00Z"),
            "2026-11-23T11:00:00+00:00"
        );
        let once = ScheduleExpr::parse("@at 2026-12-01T09:00:00+05:30", None).unwrap();
        assert_eq!(
            once.next_after(utc("2026-11-23T00:00:00Z"))
                .unwrap()
                .to_rfc3339(),
            "2026-12-01T03:30:00+00:00"
        );
        assert_eq!(once.next_after(utc("2026-12-01T03:30:00Z")), None);
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // The 1st of the month, or any Monday.
        assert_eq!(
            next("0 0 1 * 1", None, "2026-11-24T00:00:00Z"),
            "2026-11-30T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 1 * 1", None, "2026-11-30T00:00:00Z"),
            "2026-12-01T00:00:00+00:00"
        );
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        for (expr, tz, needle) in [
            ("61 * * * *", None, "sec min hour"),
            ("* * *", None, "5 fields"),
            ("0 0 * * 8", None, "0-7"),
            ("@sometimes", None, "shorthand"),
            ("@every 0s", None, "at least 1s"),
            ("@at tomorrow", None, "RFC 3339"),
            ("0 0 * * *", Some("Mars/Olympus"), "IANA"),
        ] {
            let err = ScheduleExpr::parse(expr, tz).unwrap_err().to_string();
            assert!(err.contains(needle), "{expr}: {err}");
        }
    }

    proptest! {
        #[test]
        fn weekday_numbers_follow_unix(day in 0u32..=7, start in 1_700_000_000i64..1_900_000_000) {
            let e = ScheduleExpr::parse(&format!("0 12 * * {day}"), None).unwrap();
            let t = DateTime::from_timestamp(start, 0).unwrap();
            let n = e.next_after(t).unwrap();
            prop_assert!(n > t && n - t <= chrono::Duration::days(7));
            prop_assert_eq!(n.weekday().num_days_from_sunday(), day % 7);
            prop_assert_eq!((n.hour(), n.minute(), n.second()), (12, 0, 0));
        }

        #[test]
        fn the_31st_only_in_long_months(start in 1_700_000_000i64..1_900_000_000) {
            let e = ScheduleExpr::parse("0 0 31 * *", None).unwrap();
            let n = e.next_after(DateTime::from_timestamp(start, 0).unwrap()).unwrap();
            prop_assert_eq!(n.day(), 31);
            prop_assert!([1, 3, 5, 7, 8, 10, 12].contains(&n.month()));
        }

        #[test]
        fn february_29th_only_in_leap_years(start in 1_700_000_000i64..2_500_000_000) {
            let e = ScheduleExpr::parse("0 0 29 2 *", None).unwrap();
            let n = e.next_after(DateTime::from_timestamp(start, 0).unwrap()).unwrap();
            prop_assert_eq!((n.month(), n.day()), (2, 29));
            let y = n.year();
            prop_assert!(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0));
        }

        #[test]
        fn local_schedules_fire_once_a_day_across_dst(
            start in 1_700_000_000i64..1_900_000_000,
            hour in 0u32..24,
            zone in prop::sample::select(vec!["America/New_York", "Europe/London", "Asia/Kolkata", "Australia/Sydney"]),
        ) {
            let e = ScheduleExpr::parse(&format!("30 {hour} * * *"), Some(zone)).unwrap();
            let tz: Tz = zone.parse().unwrap();
            let mut t = DateTime::from_timestamp(start, 0).unwrap();
            let mut prev_day = None;
            for _ in 0..5 {
                let n = e.next_after(t).unwrap();
                prop_assert!(n > t);
                let local = n.with_timezone(&tz);
                // One fire per local day, on consecutive days (none skipped, none doubled).
                if let Some(d) = prev_day {
                    prop_assert_eq!(local.date_naive(), chrono::NaiveDate::succ_opt(&d).unwrap());
                }
                prev_day = Some(local.date_naive());
                // At the declared minute, or (in a DST gap) shifted by the jump.
                prop_assert_eq!(local.minute(), 30);
                t = n;
            }
        }
    }
}
