//! Schedule expressions and their next fire time.
//!
//! Accepted forms:
//! - classic 5-field cron `minute hour day-of-month month day-of-week`;
//! - 6-field cron with seconds first: `second minute hour day-of-month month day-of-week`;
//! - `@yearly` (`@annually`) `@monthly` `@weekly` `@daily` (`@midnight`) `@hourly`, which are
//!   `0 0 1 1 *`, `0 0 1 * *`, `0 0 * * 0`, `0 0 * * *` and `0 * * * *`;
//! - `@every 15s|5m|1h` (ticks at whole multiples of the period since the Unix epoch, so every
//!   scheduler replica agrees on them);
//! - a one-shot time: `@at 2026-12-01T09:00:00Z` or a bare RFC 3339 timestamp.
//!
//! # Cron fields
//! Each field is a comma-separated list; each item is read on its own and is one of `*`, a
//! value `a`, a range `a-b` (low to high, ends included), or a step `*/n`, `a-b/n` or `a/n`
//! (`a/n` is `a-last/n`, where last is the field's last value: 59, 23, 31, 12, and 6 for the
//! day of the week). Ranges: second and minute 0-59, hour 0-23, day of month 1-31, month 1-12
//! or `JAN`-`DEC`, day of week 0-7 or `SUN`-`SAT`, where 0 and 7 are both Sunday. Names are
//! three letters, any case, and mix freely with numbers (`MON,3` is Monday and Wednesday,
//! `1-fri` is Monday to Friday). A step is 1 up to the field's largest value. `?` is accepted as
//! a whole day-of-month or day-of-week field and means `*`.
//!
//! As in Vixie cron, when both day fields are restricted, a day matching either fires
//! (`0 0 1 * MON`: the 1st and every Monday); when either day field starts with `*`, a day
//! must match both (`0 0 */2 * MON`: odd-numbered days that are Mondays).
//!
//! Refused, with the field, the value and what is allowed: values out of range, backward
//! ranges (`22-2`, `FRI-MON`), steps of 0 or beyond the field, unknown names and full names
//! (`MONDAY`), Quartz's `L`, `W` and `#`, Jenkins' `H`, a year field, and a schedule that can
//! never fire (`0 0 30 2 *`: there is no 30 February; with a restricted day of week it
//! fires on those weekdays, so `0 0 30 2 MON` is accepted).
//!
//! # Time zones and DST
//! A cron schedule is read in UTC unless it names an IANA zone: the `tz` argument, or a
//! `CRON_TZ=Zone ` (or `TZ=Zone `) prefix; when both are given they must name the same zone.
//! Matching is done on the zone's wall clock; each matching wall-clock time fires:
//! - once, at its instant, if it occurs once;
//! - if a DST jump skips it, as if the clock had not jumped: at the instant it would have had
//!   with the offset in force before the jump (02:30 on New York's spring-forward day fires
//!   at 03:30 EDT). This never hides a later real time: `20,40 2 * * *` in Lord Howe, whose
//!   clock jumps from 02:00 to 02:30, fires 02:40 and then 02:50 (the skipped 02:20);
//! - if it occurs twice (the clock fell back): a fixed-time job fires once, at the first
//!   occurrence; a job that follows the clock fires at both. A job follows the clock when its
//!   second (6-field), minute or hour field holds a `*` or a step `/` (`*/20 * * * *`,
//!   `@hourly`, `0 */2 * * *`, `*/10 1 * * *`); a job whose time fields are all values,
//!   lists and ranges (`30 1 * * *`, `@daily`) is fixed-time. This is ISC cron's rule (which
//!   looks for a leading `*` in the minute or hour field), extended to steps and seconds.

use std::str::FromStr;
use std::time::Duration;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike, Utc,
};
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
    Cron(CronSpec),
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
        let (prefix_zone, body) = match source
            .strip_prefix("CRON_TZ=")
            .or_else(|| source.strip_prefix("TZ="))
        {
            Some(rest) => match rest.split_once(char::is_whitespace) {
                Some((z, body)) if !z.is_empty() => (Some(z), body.trim()),
                _ => {
                    return Err(invalid(
                        expr,
                        "a time zone prefix needs a zone and then an expression, e.g. CRON_TZ=Europe/Berlin 0 3 * * *",
                    ))
                }
            },
            None => (None, source.as_str()),
        };
        let arg_zone = tz.filter(|t| !t.is_empty());
        let zone = match (prefix_zone, arg_zone) {
            (Some(p), Some(a)) if parse_zone(expr, p)? != parse_zone(expr, a)? => {
                return Err(invalid(
                    expr,
                    format!("the expression's prefix names zone {p} but the schedule's zone is {a}; give one zone"),
                ))
            }
            (p, a) => p.or(a),
        };
        let tz = match zone {
            None => Tz::UTC,
            Some(z) => parse_zone(expr, z)?,
        };
        let kind = parse_kind(expr, body)?;
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
            Kind::Cron(spec) => spec
                .next_after(self.tz, t.timestamp())
                .and_then(|s| DateTime::from_timestamp(s, 0)),
        }
    }
}

fn parse_zone(expr: &str, z: &str) -> Result<Tz, ScheduleError> {
    if z.eq_ignore_ascii_case("UTC") {
        return Ok(Tz::UTC);
    }
    Tz::from_str(z).map_err(|_| {
        invalid(
            expr,
            format!("unknown time zone {z:?} (use an IANA name such as \"Asia/Kolkata\")"),
        )
    })
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
    let fields = match body {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        other if other.starts_with('@') => {
            return Err(invalid(
                expr,
                "unknown shorthand; use @yearly, @monthly, @weekly, @daily, @hourly, @every <duration> or @at <time>",
            ))
        }
        other => other,
    };
    CronSpec::parse(expr, fields).map(Kind::Cron)
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

// ---------------------------------------------------------------------------------------------
// Cron fields.
//
// Hand-written rather than the `cron` crate (which kiq used before): that crate numbers
// weekdays 1-7 from Sunday, so any weekday field holding a name was read with shifted
// numbers, its error texts name the wrong limits, and it has no notion of Vixie cron's
// day-of-month/day-of-week OR rule or of wall-clock DST handling. What kiq needs is small: six
// bitsets and a forward search, with the semantics and messages documented above.

/// One cron field's rules.
struct Field {
    /// As named in error messages.
    label: &'static str,
    min: u32,
    /// The largest value written (7 for the day of the week, an alias of 0).
    max: u32,
    /// The last value a `*` or `a/n` runs to.
    last: u32,
    /// Three-letter names, for values `name_base..`.
    names: &'static [&'static str],
    name_base: u32,
    /// `?` is allowed (as `*`).
    question: bool,
}

const SECOND: Field = Field {
    label: "second",
    min: 0,
    max: 59,
    last: 59,
    names: &[],
    name_base: 0,
    question: false,
};
const MINUTE: Field = Field {
    label: "minute",
    ..SECOND
};
const HOUR: Field = Field {
    label: "hour",
    max: 23,
    last: 23,
    ..SECOND
};
const DAY_OF_MONTH: Field = Field {
    label: "day of month",
    min: 1,
    max: 31,
    last: 31,
    names: &[],
    name_base: 0,
    question: true,
};
const MONTH: Field = Field {
    label: "month",
    min: 1,
    max: 12,
    last: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
    name_base: 1,
    question: false,
};
const DAY_OF_WEEK: Field = Field {
    label: "day of week",
    min: 0,
    max: 7,
    last: 6,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    name_base: 0,
    question: true,
};

impl Field {
    fn range_text(&self) -> String {
        let mut s = format!("{}-{}", self.min, self.max);
        if let (Some(first), Some(last)) = (self.names.first(), self.names.last()) {
            s.push_str(&format!(" or {first}-{last}"));
        }
        if self.max == 7 {
            s.push_str(", 0 and 7 are Sunday");
        }
        s
    }

    /// Parses a whole field into a bitset (bit v set when value v matches; day-of-week 7 is
    /// stored as 0).
    fn parse(&self, expr: &str, text: &str) -> Result<u64, ScheduleError> {
        let bad = |reason: String| invalid(expr, reason);
        if text == "?" {
            if !self.question {
                return Err(bad(format!(
                    "{} field is \"?\": \"?\" is only allowed as a whole day-of-month or day-of-week field",
                    self.label
                )));
            }
            return Ok(self.span(self.min, self.last, 1));
        }
        let mut bits = 0u64;
        for item in text.split(',') {
            if item.is_empty() {
                return Err(bad(format!(
                    "{} field {text:?} has an empty list item",
                    self.label
                )));
            }
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => (r, Some(self.step(expr, item, s)?)),
                None => (item, None),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.last)
            } else if let Some((a, b)) = range.split_once('-') {
                let (lo, hi) = (self.value(expr, a)?, self.value(expr, b)?);
                if lo > hi {
                    let example = match self.names.len() {
                        0 => "22-23,0-2",
                        7 => "FRI-SAT,SUN-MON",
                        _ => "NOV-DEC,JAN-FEB",
                    };
                    return Err(bad(format!(
                        "{} range {range:?} runs backwards: a range goes from low to high \
                         (list both parts instead, e.g. {example})",
                        self.label
                    )));
                }
                (lo, hi)
            } else {
                let v = self.value(expr, range)?;
                match step {
                    // `a/n` runs to the field's last value; day-of-week 7 starts on Sunday.
                    Some(_) if self.max == 7 && v == 7 => (0, self.last),
                    Some(_) => (v, self.last),
                    None => (v, v),
                }
            };
            bits |= self.span(lo, hi, step.unwrap_or(1));
        }
        Ok(bits)
    }

    fn span(&self, lo: u32, hi: u32, step: u32) -> u64 {
        let mut bits = 0u64;
        let mut v = lo;
        while v <= hi {
            bits |= 1 << (if self.max == 7 { v % 7 } else { v });
            v += step;
        }
        bits
    }

    fn step(&self, expr: &str, item: &str, s: &str) -> Result<u32, ScheduleError> {
        match s.parse::<u32>() {
            Ok(n) if (1..=self.max).contains(&n) && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => Err(invalid(
                expr,
                format!(
                    "{} step {s} in {item:?} is out of range 1-{}",
                    self.label, self.max
                ),
            )),
            _ => Err(invalid(
                expr,
                format!("{} step {s:?} in {item:?} is not a number", self.label),
            )),
        }
    }

    fn value(&self, expr: &str, token: &str) -> Result<u32, ScheduleError> {
        let bad = |reason: String| Err(invalid(expr, reason));
        if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
            return match token.parse::<u32>() {
                Ok(v) if (self.min..=self.max).contains(&v) => Ok(v),
                _ => bad(format!(
                    "{} {token} is out of range {}",
                    self.label,
                    self.range_text()
                )),
            };
        }
        if let Some(i) = self
            .names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(token))
        {
            return Ok(self.name_base + i as u32);
        }
        let upper = token.to_ascii_uppercase();
        let day_field = self.question;
        if token.is_empty() {
            bad(format!("{} field has a missing value", self.label))
        } else if token == "*" {
            bad(format!("{} \"*\" cannot be one end of a range", self.label))
        } else if token == "?" {
            bad(format!(
                "{} \"?\" is only allowed as a whole day-of-month or day-of-week field",
                self.label
            ))
        } else if day_field && upper.contains('#') {
            bad(format!(
                "{} {token:?}: '#' (nth weekday of the month) is not supported",
                self.label
            ))
        } else if day_field && (upper == "L" || upper.ends_with('L') || upper.starts_with('L')) {
            bad(format!(
                "{} {token:?}: 'L' (last day) is not supported",
                self.label
            ))
        } else if day_field && upper.contains('W') && upper.bytes().any(|b| b.is_ascii_digit()) {
            bad(format!(
                "{} {token:?}: 'W' (nearest weekday) is not supported",
                self.label
            ))
        } else if upper == "H" || upper.starts_with("H(") {
            bad(format!(
                "{} {token:?}: 'H' (hashed values) is not supported",
                self.label
            ))
        } else if self.names.is_empty() {
            bad(format!(
                "{} {token:?} is not a number (allowed: {})",
                self.label,
                self.range_text()
            ))
        } else {
            bad(format!(
                "{} {token:?} is neither a number nor a three-letter name ({}); allowed: {}",
                self.label,
                self.names.join(" "),
                self.range_text()
            ))
        }
    }
}

/// How the two day fields combine (Vixie cron: either, when both are restricted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DayRule {
    Either,
    Both,
}

/// A parsed cron expression: one bitset per field.
#[derive(Debug, Clone)]
struct CronSpec {
    seconds: u64,
    minutes: u64,
    hours: u64,
    /// Bits 1..=31.
    days: u64,
    /// Bits 1..=12.
    months: u64,
    /// Bits 0..=6, 0 = Sunday.
    weekdays: u64,
    day_rule: DayRule,
    /// Fires in both passes of a repeated hour (see the module docs).
    follows_clock: bool,
}

/// Days in each month, February counted as 29 (it has a 29th in leap years).
const MAX_MONTH_DAYS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
/// Every accepted expression fires within a 400-year Gregorian cycle.
const SEARCH_YEARS: i32 = 401;
const DAY_SECS: i64 = 86_400;

impl CronSpec {
    fn parse(expr: &str, body: &str) -> Result<Self, ScheduleError> {
        let fields: Vec<&str> = body.split_whitespace().collect();
        let (sec, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(invalid(
                    expr,
                    format!(
                        "cron needs 5 fields (minute hour day-of-month month day-of-week) or 6 (with seconds first), got {n}{}",
                        if n == 7 { "; a year field is not supported" } else { "" }
                    ),
                ))
            }
        };
        let [min, hour, dom, month, dow] = [rest[0], rest[1], rest[2], rest[3], rest[4]];
        let star = |f: &str| f.starts_with('*') || f == "?";
        let clock = |f: &str| f.contains('*') || f.contains('/');
        let spec = CronSpec {
            seconds: SECOND.parse(expr, sec)?,
            minutes: MINUTE.parse(expr, min)?,
            hours: HOUR.parse(expr, hour)?,
            days: DAY_OF_MONTH.parse(expr, dom)?,
            months: MONTH.parse(expr, month)?,
            weekdays: DAY_OF_WEEK.parse(expr, dow)?,
            day_rule: if star(dom) || star(dow) {
                DayRule::Both
            } else {
                DayRule::Either
            },
            follows_clock: clock(sec) || clock(min) || clock(hour),
        };
        // Under "both", a day of month that no month given has leaves nothing to fire on. (A
        // restricted day of week with a `*`-led day of month is fine: `*/n` includes the 1st,
        // and every date falls on every weekday within 400 years.)
        if spec.day_rule == DayRule::Both {
            let possible = (1..=12u32).any(|m| {
                spec.months & (1 << m) != 0
                    && (1..=MAX_MONTH_DAYS[m as usize - 1]).any(|d| spec.days & (1 << d) != 0)
            });
            if !possible {
                let months: Vec<&str> = (1..=12u32)
                    .filter(|m| spec.months & (1 << m) != 0)
                    .map(|m| MONTH_NAMES[m as usize - 1])
                    .collect();
                return Err(invalid(
                    expr,
                    format!(
                        "day of month {dom} never occurs in {}, so this schedule would never fire",
                        join_or(&months)
                    ),
                ));
            }
        }
        Ok(spec)
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().num_days_from_sunday()) != 0;
        match self.day_rule {
            DayRule::Either => dom || dow,
            DayRule::Both => dom && dow,
        }
    }

    /// The first time of day at or after `h:m:s` that matches the time fields.
    fn time_from(&self, (h0, m0, s0): (u32, u32, u32)) -> Option<(u32, u32, u32)> {
        let mut h = next_bit(self.hours, h0)?;
        loop {
            let mut m = next_bit(self.minutes, if h == h0 { m0 } else { 0 });
            while let Some(min) = m {
                let from = if h == h0 && min == m0 { s0 } else { 0 };
                if let Some(s) = next_bit(self.seconds, from) {
                    return Some((h, min, s));
                }
                m = next_bit(self.minutes, min + 1);
            }
            h = next_bit(self.hours, h + 1)?;
        }
    }

    /// The first matching wall-clock time at or after `from`.
    fn next_match(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut date = from.date();
        let mut start = (from.hour(), from.minute(), from.second());
        let last_year = date.year() + SEARCH_YEARS;
        while date.year() <= last_year {
            if self.months & (1 << date.month()) == 0 {
                date = first_of_next_month(date)?;
                start = (0, 0, 0);
                continue;
            }
            if self.day_matches(date) {
                if let Some((h, m, s)) = self.time_from(start) {
                    return date.and_hms_opt(h, m, s);
                }
            }
            date = date.succ_opt()?;
            start = (0, 0, 0);
        }
        None
    }

    /// The instants at which the wall-clock time `local` fires in `tz` (see the module docs):
    /// one, or two for a job that follows the clock through a repeated hour.
    fn instants(&self, tz: Tz, local: NaiveDateTime) -> [Option<i64>; 2] {
        let l = local.and_utc().timestamp();
        match tz.offset_from_local_datetime(&local) {
            LocalResult::Single(o) => [Some(l - offset_secs(o)), None],
            LocalResult::Ambiguous(a, b) => {
                let (x, y) = (l - offset_secs(a), l - offset_secs(b));
                [Some(x.min(y)), self.follows_clock.then_some(x.max(y))]
            }
            LocalResult::None => {
                // Skipped by a jump: as if the clock had not jumped, i.e. read with the offset
                // in force just before the gap (the smaller one, if chrono-tz cannot say).
                let before = chrono_tz::GapInfo::new(&local, &tz)
                    .and_then(|g| g.begin)
                    .map(|(_, o)| offset_secs(o))
                    .unwrap_or_else(|| offsets_near(tz, l).0);
                [Some(l - before), None]
            }
        }
    }

    /// The first fire instant (Unix seconds) strictly after `t` (Unix seconds, rounded down).
    ///
    /// Wall-clock matches are walked in order and mapped to instants. The mapping is monotonic
    /// except across a DST change, where it moves by at most the change, so: a match can only
    /// fire at or after `after` if its wall-clock time is at least `after` plus the smallest
    /// offset near `after`, and once an instant `best` is found, no match whose wall-clock time
    /// is at least `best` plus the largest offset near `best` can fire before it. ("Near" is
    /// within a day, which holds every DST change in the tz database.)
    fn next_after(&self, tz: Tz, t: i64) -> Option<i64> {
        let after = t.checked_add(1)?;
        let mut from = naive(after.checked_add(offsets_near(tz, after).0)?)?;
        let mut best: Option<(i64, i64)> = None; // (instant, wall-clock stop as Unix seconds)
        while let Some(local) = self.next_match(from) {
            if best.is_some_and(|(_, stop)| local.and_utc().timestamp() >= stop) {
                break;
            }
            for u in self.instants(tz, local).into_iter().flatten() {
                if u >= after && best.is_none_or(|(b, _)| u < b) {
                    best = Some((u, u.saturating_add(offsets_near(tz, u).1)));
                }
            }
            from = local.checked_add_signed(chrono::TimeDelta::seconds(1))?;
        }
        best.map(|(b, _)| b)
    }
}

fn join_or(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn next_bit(mask: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let m = mask >> from;
    (m != 0).then(|| from + m.trailing_zeros())
}

fn first_of_next_month(d: NaiveDate) -> Option<NaiveDate> {
    if d.month() == 12 {
        NaiveDate::from_ymd_opt(d.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(d.year(), d.month() + 1, 1)
    }
}

fn offset_secs(o: impl Offset) -> i64 {
    i64::from(o.fix().local_minus_utc())
}

fn naive(unix: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp(unix, 0).map(|d| d.naive_utc())
}

/// The smallest and largest UTC offsets (seconds) in force within a day of instant `u`.
fn offsets_near(tz: Tz, u: i64) -> (i64, i64) {
    [u - DAY_SECS, u, u + DAY_SECS]
        .into_iter()
        .filter_map(naive)
        .map(|n| offset_secs(tz.offset_from_utc_datetime(&n)))
        .fold(None, |acc: Option<(i64, i64)>, o| {
            Some(acc.map_or((o, o), |(lo, hi)| (lo.min(o), hi.max(o))))
        })
        .unwrap_or((0, 0))
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
            ("61 * * * *", None, "minute 61 is out of range 0-59"),
            ("* * *", None, "5 fields"),
            ("0 0 * * 8", None, "day of week 8 is out of range 0-7"),
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
