//! kiq's cron next-fire times, checked on a generated, seeded corpus against two independent
//! statements of what they must be:
//!
//! - croniter (PyPI, pinned; run once, in the test venv, by `croniter_oracle.py`), adapted to
//!   Vixie cron's day rule and kiq's seconds-first 6-field form. Away from DST changes kiq and
//!   croniter must agree exactly.
//! - `Reference` below: an executable statement of kiq's documented semantics, DST policy
//!   included, that walks the zone's wall clock second by second and knows nothing of kiq's
//!   search. Every step must agree with it; near a DST change (where croniter's own DST
//!   handling is not kiq's policy) it is the only judge.
//!
//! The venv comes from `scripts/setup.sh` (`kiq_need_python_venv`, called by `scripts/test.sh`,
//! which exports `KIQ_PYTHON`). Without it this test fails and says how to make it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Offset, TimeZone};
use chrono_tz::Tz;
use kiq_scheduler::ScheduleExpr;

const CRONITER_VERSION: &str = "7.0.0";
const SEED: u64 = 0x6b69_715f_6372_6f6e;
/// Cases anchored on each DST change of each zone, 2026-2030.
const PER_TRANSITION: usize = 14;
/// Cases anchored on month ends, leap days, year ends and random instants.
const OTHER_CASES: usize = 1700;
/// Consecutive fires followed per case.
const STEPS: usize = 3;
const ZONES: [&str; 7] = [
    "UTC",
    "Asia/Kolkata",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/Santiago",
];
/// A step is "near a DST change" when one lies within this of its start or of either answer.
const DST_NEAR: i64 = 3 * 3600;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

// ---------------------------------------------------------------------------------------------
// A small deterministic PRNG (SplitMix64).

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    fn pct(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.next() as usize % xs.len()]
    }
}

// ---------------------------------------------------------------------------------------------
// The corpus.

/// How one field may be written.
struct Gen {
    lo: i64,
    hi: i64,
    names: &'static [&'static str],
    name_base: i64,
    /// Day of week: 7 is Sunday too.
    dow: bool,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Gen {
    fn value(&self, rng: &mut Rng, v: i64) -> String {
        if !self.names.is_empty() && rng.pct(45) && (v - self.name_base) < self.names.len() as i64 {
            let name = self.names[(v - self.name_base) as usize];
            return match rng.int(0, 2) {
                0 => name.to_string(),
                1 => name.to_ascii_lowercase(),
                _ => format!("{}{}", &name[..1], name[1..].to_ascii_lowercase()),
            };
        }
        v.to_string()
    }

    /// The last value (7 only for the day of week, where it is an alias).
    fn top(&self) -> i64 {
        if self.dow {
            7
        } else {
            self.hi
        }
    }

    /// One list item other than a bare `*`. Ranges always run low to high with distinct ends.
    fn item(&self, rng: &mut Rng) -> String {
        let step_max = (self.top() - self.lo).clamp(2, 12);
        match rng.int(0, 9) {
            0..=3 => {
                let v = rng.int(self.lo, self.top());
                self.value(rng, v)
            }
            4 | 5 => {
                let a = rng.int(self.lo, self.top() - 1);
                let b = rng.int(a + 1, self.top());
                format!("{}-{}", self.value(rng, a), self.value(rng, b))
            }
            6 => format!("*/{}", rng.int(2, step_max)),
            7 => {
                let a = rng.int(self.lo, self.top() - 1);
                let b = rng.int(a + 1, self.top());
                format!(
                    "{}-{}/{}",
                    self.value(rng, a),
                    self.value(rng, b),
                    rng.int(1, step_max)
                )
            }
            _ => {
                // a/n runs to the field's last value (6 for the day of week).
                let a = rng.int(self.lo, self.hi.min(self.top() - 1));
                format!("{}/{}", self.value(rng, a), rng.int(1, step_max))
            }
        }
    }

    /// A field: `*` with probability `star` percent, else one item or a list of two or three.
    fn field(&self, rng: &mut Rng, star: u64) -> String {
        if rng.pct(star) {
            return "*".into();
        }
        let n = if rng.pct(35) { rng.int(2, 3) } else { 1 };
        (0..n).map(|_| self.item(rng)).collect::<Vec<_>>().join(",")
    }
}

const G_SEC: Gen = Gen {
    lo: 0,
    hi: 59,
    names: &[],
    name_base: 0,
    dow: false,
};
const G_HOUR: Gen = Gen { hi: 23, ..G_SEC };
const G_DOM: Gen = Gen {
    lo: 1,
    hi: 31,
    ..G_SEC
};
const G_MONTH: Gen = Gen {
    lo: 1,
    hi: 12,
    names: &MONTHS,
    name_base: 1,
    dow: false,
};
const G_DOW: Gen = Gen {
    lo: 0,
    hi: 6,
    names: &DAYS,
    name_base: 0,
    dow: true,
};

fn expression(rng: &mut Rng) -> String {
    if rng.pct(6) {
        return rng
            .pick(&[
                "@hourly",
                "@daily",
                "@midnight",
                "@weekly",
                "@monthly",
                "@yearly",
                "@annually",
            ])
            .to_string();
    }
    let minute = G_SEC.field(rng, 15);
    let hour = G_HOUR.field(rng, 40);
    let both_days = rng.pct(20);
    let dom = if both_days {
        G_DOM.field(rng, 0)
    } else if rng.pct(4) {
        "?".into()
    } else {
        G_DOM.field(rng, 70)
    };
    let month = G_MONTH.field(rng, 70);
    let dow = if both_days {
        G_DOW.field(rng, 0)
    } else if rng.pct(4) && dom != "?" {
        "?".into()
    } else {
        G_DOW.field(rng, 60)
    };
    let five = format!("{minute} {hour} {dom} {month} {dow}");
    if rng.pct(30) {
        // Seconds first; rarely every second (the dearest case for the reference).
        let second = if rng.pct(15) {
            "0".into()
        } else {
            G_SEC.field(rng, 3)
        };
        format!("{second} {five}")
    } else {
        five
    }
}

fn offset(tz: Tz, u: i64) -> i64 {
    let n = DateTime::from_timestamp(u, 0)
        .expect("test instants are in range")
        .naive_utc();
    i64::from(tz.offset_from_utc_datetime(&n).fix().local_minus_utc())
}

/// Every instant in `[from, to)` at which `tz`'s UTC offset changes (its first second).
fn transitions(tz: Tz, from: i64, to: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut u = from;
    while u < to {
        let v = u + 6 * HOUR;
        if offset(tz, u) != offset(tz, v) {
            let (mut lo, mut hi) = (u, v);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if offset(tz, mid) == offset(tz, u) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            out.push(hi);
        }
        u = v;
    }
    out
}

fn unix(y: i32, m: u32, d: u32) -> i64 {
    NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("valid date")
        .and_utc()
        .timestamp()
}

/// A UTC instant whose wall clock in `tz` is near `local` (exact when that exists once).
fn from_local(tz: Tz, local: NaiveDateTime) -> i64 {
    let l = local.and_utc().timestamp();
    l - offset(tz, l - offset(tz, l))
}

struct Case {
    expr: String,
    zone: &'static str,
    start: i64,
    anchor: &'static str,
}

fn corpus() -> Vec<Case> {
    let mut rng = Rng(SEED);
    let mut cases = Vec::new();
    let jitters = [
        -3 * HOUR,
        -90 * 60,
        -61 * 60,
        -HOUR,
        -31 * 60,
        -30 * 60,
        -1,
        0,
        1,
        29 * 60,
        30 * 60,
        59 * 60,
        HOUR,
        90 * 60,
        3 * HOUR,
    ];
    for zone in ZONES {
        let tz: Tz = zone.parse().expect("known zone");
        for g in transitions(tz, unix(2026, 1, 1), unix(2031, 1, 1)) {
            for _ in 0..PER_TRANSITION {
                let mut start = g + rng.pick(&jitters);
                if rng.pct(40) {
                    start += rng.int(-1800, 1800);
                }
                cases.push(Case {
                    expr: expression(&mut rng),
                    zone,
                    start,
                    anchor: "dst",
                });
            }
        }
    }
    // The issue's own examples, and expressions that can never fire (kiq refuses them; croniter
    // must find no date either).
    for (expr, zone, start) in [
        ("54 * * * SUN,3-5", "UTC", "2030-02-18T06:50:37Z"),
        ("54 * * * 0,3-5", "UTC", "2030-02-18T06:50:37Z"),
        ("54 * * * MON,7", "UTC", "2030-02-19T00:00:00Z"),
        ("54 * * * tue,4,sat", "UTC", "2030-02-20T00:00:00Z"),
        ("54 * * * sun,6", "UTC", "2030-02-21T00:00:00Z"),
        ("0 54 * * * sat,0", "UTC", "2030-02-18T06:50:37Z"),
        ("54 * 28 * 1-fri", "UTC", "2030-02-18T06:50:37Z"),
        (
            "20,40 2 * * *",
            "Australia/Lord_Howe",
            "2026-10-03T15:00:00Z",
        ),
        ("*/20 * * * *", "America/New_York", "2026-11-01T05:50:00Z"),
        ("@hourly", "America/New_York", "2026-11-01T04:30:00Z"),
        ("0 0 30 2 *", "UTC", "2026-01-01T00:00:00Z"),
        ("0 0 31 2 *", "UTC", "2026-01-01T00:00:00Z"),
        ("0 0 31 4,6,9,11 *", "Europe/Berlin", "2026-01-01T00:00:00Z"),
        ("0 0 0 30,31 feb ?", "UTC", "2026-01-01T00:00:00Z"),
        ("0 0 31 2 1", "UTC", "2026-01-01T00:00:00Z"),
    ] {
        let start = DateTime::parse_from_rfc3339(start).expect("valid instant");
        cases.push(Case {
            expr: expr.into(),
            zone,
            start: start.timestamp(),
            anchor: "issue 19",
        });
    }
    for _ in 0..OTHER_CASES {
        let zone = *rng.pick(&ZONES);
        let tz: Tz = zone.parse().expect("known zone");
        let year = rng.int(2026, 2030) as i32;
        let (anchor, local) = match rng.int(0, 3) {
            0 => {
                // The last day of a month, late, or the first, early.
                let m = rng.int(1, 12) as u32;
                let first_next = if m == 12 {
                    NaiveDate::from_ymd_opt(year + 1, 1, 1)
                } else {
                    NaiveDate::from_ymd_opt(year, m + 1, 1)
                }
                .expect("valid date");
                let at = first_next.and_hms_opt(0, 0, 0).expect("midnight");
                (
                    "month end",
                    at + chrono::TimeDelta::seconds(rng.int(-2 * HOUR, HOUR)),
                )
            }
            1 => {
                // Around 29 February 2028, or 28 February / 1 March of other years.
                let y = if rng.pct(60) { 2028 } else { year };
                let at = NaiveDate::from_ymd_opt(y, 2, 28)
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .expect("valid date");
                (
                    "leap day",
                    at + chrono::TimeDelta::seconds(rng.int(-HOUR, 3 * DAY)),
                )
            }
            2 => {
                let at = NaiveDate::from_ymd_opt(year + 1, 1, 1)
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .expect("valid date");
                (
                    "year end",
                    at + chrono::TimeDelta::seconds(rng.int(-3 * HOUR, HOUR)),
                )
            }
            _ => {
                let at = NaiveDate::from_ymd_opt(year, 1, 1)
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .expect("valid date");
                (
                    "random",
                    at + chrono::TimeDelta::seconds(rng.int(0, 365 * DAY)),
                )
            }
        };
        cases.push(Case {
            expr: expression(&mut rng),
            zone,
            start: from_local(tz, local),
            anchor,
        });
    }
    cases
}

// ---------------------------------------------------------------------------------------------
// The reference: kiq's documented semantics, stated directly.

struct Reference {
    /// second, minute, hour, day of month, month, day of week (0-6, Sunday 0).
    sets: [Vec<bool>; 6],
    /// Both day fields must match (either starts with `*`, or is `?`); else either.
    both_days: bool,
    /// Fires in both passes of a repeated hour: a `*` or `/` in the second, minute or hour.
    follows_clock: bool,
}

impl Reference {
    fn new(expr: &str) -> Self {
        let expr = match expr {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            e => e,
        };
        let mut fields: Vec<&str> = expr.split_whitespace().collect();
        if fields.len() == 5 {
            fields.insert(0, "0");
        }
        assert_eq!(fields.len(), 6, "{expr}");
        // (first, last written, last of `*` and `a/n`, names)
        let specs: [(usize, usize, usize, &[&str]); 6] = [
            (0, 59, 59, &[]),
            (0, 59, 59, &[]),
            (0, 23, 23, &[]),
            (1, 31, 31, &[]),
            (1, 12, 12, &MONTHS),
            (0, 7, 6, &DAYS),
        ];
        let sets = std::array::from_fn(|i| {
            let (first, top, last, names) = specs[i];
            let base = if i == 4 { 1 } else { 0 };
            let value = |s: &str| -> usize {
                s.parse().unwrap_or_else(|_| {
                    base + names
                        .iter()
                        .position(|n| n.eq_ignore_ascii_case(s))
                        .unwrap_or_else(|| panic!("{expr}: {s}"))
                })
            };
            let mut set = vec![false; top + 1];
            let text = if fields[i] == "?" { "*" } else { fields[i] };
            for item in text.split(',') {
                let (range, step) = match item.split_once('/') {
                    Some((r, s)) => (r, s.parse().expect("numeric step")),
                    None => (item, 0),
                };
                let (a, b) = match range.split_once('-') {
                    _ if range == "*" => (first, last),
                    Some((a, b)) => (value(a), value(b)),
                    None if step > 0 => (value(range) % if i == 5 { 7 } else { 100 }, last),
                    None => (value(range), value(range)),
                };
                for v in (a..=b).step_by(step.max(1)) {
                    set[v] = true;
                }
            }
            if i == 5 {
                set[0] |= set[7];
                set.truncate(7);
            }
            set
        });
        let star = |f: &str| f.starts_with('*') || f == "?";
        let clock = |f: &str| f.contains('*') || f.contains('/');
        Self {
            sets,
            both_days: star(fields[3]) || star(fields[5]),
            follows_clock: fields[..3].iter().any(|f| clock(f)),
        }
    }

    fn date_matches(&self, d: NaiveDate) -> bool {
        let dom = self.sets[3][d.day() as usize];
        let dow = self.sets[5][d.weekday().num_days_from_sunday() as usize];
        self.sets[4][d.month() as usize]
            && if self.both_days {
                dom && dow
            } else {
                dom || dow
            }
    }

    /// The instants at which wall-clock time `l` (as Unix seconds) occurs in `tz`: those
    /// `l - o` whose offset is `o`, for the offsets in force within a day.
    fn occurrences(tz: Tz, l: i64) -> Vec<i64> {
        let mut out: Vec<i64> = [l - DAY, l, l + DAY]
            .into_iter()
            .map(|p| offset(tz, p))
            .map(|o| l - o)
            .filter(|&u| offset(tz, u) == l - u)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// When wall-clock time `l` fires: once if it occurs once; if a jump skipped it, as if the
    /// clock had not jumped (with the offset of the last wall-clock minute before the gap); if
    /// it occurs twice, at the first occurrence, or at both for a job that follows the clock.
    fn fires(&self, tz: Tz, l: i64) -> Vec<i64> {
        let occ = Self::occurrences(tz, l);
        match occ.as_slice() {
            [] => {
                let mut before = l - l.rem_euclid(60);
                loop {
                    before -= 60;
                    if let Some(&u) = Self::occurrences(tz, before).last() {
                        return vec![l - (before - u)];
                    }
                }
            }
            [one] => vec![*one],
            [first, ..] if !self.follows_clock => vec![*first],
            all => all.to_vec(),
        }
    }

    /// The first fire strictly after `t`: every wall-clock second from three hours before
    /// `t`'s, in order, until three hours past the best answer's (no DST change here moves
    /// the clock by more than an hour).
    fn next_after(&self, tz: Tz, t: i64) -> Option<i64> {
        let from = t + offset(tz, t) - 3 * HOUR;
        let mut best: Option<i64> = None;
        let mut stop = i64::MAX; // three hours past the best answer's wall clock
        let mut day = DateTime::from_timestamp(from - from.rem_euclid(DAY), 0)?.date_naive();
        let end_year = day.year() + 401;
        while day.year() <= end_year {
            let midnight = day.and_hms_opt(0, 0, 0)?.and_utc().timestamp();
            if midnight > stop {
                break;
            }
            if self.date_matches(day) {
                for h in (0..24).filter(|&h| self.sets[2][h]) {
                    for m in (0..60).filter(|&m| self.sets[1][m]) {
                        for s in (0..60).filter(|&s| self.sets[0][s]) {
                            let l = midnight + (h * 3600 + m * 60 + s) as i64;
                            if l < from {
                                continue;
                            }
                            if l > stop {
                                return best;
                            }
                            for u in self.fires(tz, l) {
                                if u > t && best.is_none_or(|b| u < b) {
                                    best = Some(u);
                                    stop = u + offset(tz, u) + 3 * HOUR;
                                }
                            }
                        }
                    }
                }
            }
            day = day.succ_opt()?;
        }
        best
    }
}

// ---------------------------------------------------------------------------------------------
// The venv's python.

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("KIQ_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    let venv = cache.map(|c| {
        c.join("kiq")
            .join(format!("venv-croniter-{CRONITER_VERSION}"))
            .join("bin")
            .join("python")
    });
    match venv {
        Some(p) if p.exists() => p,
        _ => panic!(
            "the croniter cross-check needs the test venv, which scripts/test.sh creates; \
             create it with `bash -c 'source scripts/setup.sh && kiq_need_python_venv'` \
             (from the repository root), or set KIQ_PYTHON to a python with \
             croniter=={CRONITER_VERSION}"
        ),
    }
}

/// Asks croniter for the next fire after each query's start, in one python process.
fn ask_croniter(queries: &[(String, &str, i64)]) -> Vec<Result<i64, String>> {
    let oracle = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/croniter_oracle.py");
    let input: String = queries
        .iter()
        .enumerate()
        .map(|(i, (e, z, s))| format!("{i}\t{e}\t{z}\t{s}\n"))
        .collect();
    let py = python();
    let mut child = Command::new(&py)
        .arg(&oracle)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", py.display()));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .expect("write the queries");
    let out = child.wait_with_output().expect("the oracle runs");
    assert!(
        out.status.success(),
        "{} {} failed: {}",
        py.display(),
        oracle.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8 answers");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(format!("croniter {CRONITER_VERSION}").as_str()),
        "the venv must hold croniter=={CRONITER_VERSION}"
    );
    let mut answers: Vec<Option<Result<i64, String>>> = vec![None; queries.len()];
    for line in lines {
        let (id, ans) = line.split_once('\t').expect("id TAB answer");
        let id: usize = id.parse().expect("numeric id");
        answers[id] = Some(match ans.strip_prefix("ERR ") {
            Some(err) => Err(err.to_string()),
            None => Ok(ans.parse().expect("Unix seconds")),
        });
    }
    answers
        .into_iter()
        .map(|a| a.expect("an answer per query"))
        .collect()
}

fn show(u: i64, tz: Tz) -> String {
    DateTime::from_timestamp(u, 0).map_or_else(
        || u.to_string(),
        |d| {
            format!(
                "{} ({})",
                d.format("%FT%TZ"),
                d.with_timezone(&tz).format("%F %T %:z")
            )
        },
    )
}

#[test]
fn next_fire_times_match_croniter_and_the_dst_policy() {
    let began = Instant::now();
    let cases = corpus();
    let mut refused = Vec::new();
    let mut parsed = Vec::new();
    for case in &cases {
        match ScheduleExpr::parse(&case.expr, Some(case.zone)) {
            Ok(e) => parsed.push((case, e)),
            Err(err) => refused.push((case, err)),
        }
    }
    // kiq's chains of next fires; croniter is asked about each step's start.
    let mut queries = Vec::new();
    let mut steps = Vec::new(); // (case, start, kiq's answer, query index)
    for (case, e) in &parsed {
        let mut t = case.start;
        for _ in 0..STEPS {
            let at = DateTime::from_timestamp(t, 0).expect("in range");
            let Some(n) = e.next_after(at) else { break };
            queries.push((case.expr.clone(), case.zone, t));
            steps.push((*case, t, n.timestamp(), queries.len() - 1));
            t = n.timestamp();
        }
    }
    // Refused expressions: only those that never fire, which croniter cannot fire either.
    for (case, err) in &refused {
        assert!(
            err.reason.contains("never fire"),
            "generated {:?} refused: {err}",
            case.expr
        );
        queries.push((case.expr.clone(), case.zone, case.start));
    }
    let answers = ask_croniter(&queries);
    for (i, (case, _)) in refused.iter().enumerate() {
        let a = &answers[steps.len() + i];
        assert!(
            a.is_err(),
            "kiq refuses {:?} as never firing; croniter fires it: {a:?}",
            case.expr
        );
    }

    let latest = steps
        .iter()
        .map(|s| s.2)
        .chain(answers.iter().filter_map(|a| a.as_ref().ok().copied()))
        .max()
        .unwrap_or(0);
    let mut zone_transitions = BTreeMap::new();
    for zone in ZONES {
        let tz: Tz = zone.parse().expect("known zone");
        zone_transitions.insert(zone, transitions(tz, unix(2025, 6, 1), latest + 2 * DAY));
    }
    let mut failures = Vec::new();
    let (mut vs_croniter, mut near_dst, mut croniter_differs_near_dst) = (0, 0, 0);
    let mut references = BTreeMap::new();
    for (case, t, kiq, q) in &steps {
        let tz: Tz = case.zone.parse().expect("known zone");
        let reference = references
            .entry(case.expr.as_str())
            .or_insert_with(|| Reference::new(&case.expr));
        let expected = reference.next_after(tz, *t);
        let croniter = &answers[*q];
        let near = zone_transitions[case.zone].iter().any(|g| {
            (g - t).abs() <= DST_NEAR
                || (g - kiq).abs() <= DST_NEAR
                || croniter.as_ref().is_ok_and(|c| (g - c).abs() <= DST_NEAR)
        });
        let what = format!(
            "{:?} in {} after {} [{}]: kiq {}",
            case.expr,
            case.zone,
            show(*t, tz),
            case.anchor,
            show(*kiq, tz)
        );
        if expected != Some(*kiq) {
            failures.push(format!(
                "{what}, policy reference {}",
                expected.map_or("none".into(), |e| show(e, tz))
            ));
        }
        if near {
            near_dst += 1;
            if croniter.as_ref().ok() != Some(kiq) {
                croniter_differs_near_dst += 1;
                if croniter_differs_near_dst <= 5 {
                    eprintln!(
                        "near a DST change, croniter differs (kiq follows its policy): {what}, \
                         croniter {}",
                        croniter
                            .as_ref()
                            .map_or_else(|e| e.clone(), |c| show(*c, tz))
                    );
                }
            }
        } else {
            vs_croniter += 1;
            match croniter {
                Ok(c) if c == kiq => {}
                Ok(c) => failures.push(format!("{what}, croniter {}", show(*c, tz))),
                Err(e) => failures.push(format!("{what}, croniter error {e}")),
            }
        }
    }
    let five = cases
        .iter()
        .filter(|c| c.expr.split_whitespace().count() == 5)
        .count();
    let six = cases
        .iter()
        .filter(|c| c.expr.split_whitespace().count() == 6)
        .count();
    eprintln!(
        "cron cross-check: {} cases ({five} 5-field, {six} 6-field, {} shorthands; {} refused \
         as never firing, croniter agreeing) in {} zones; {} steps: {vs_croniter} away from DST \
         changes compared with croniter {CRONITER_VERSION}, {near_dst} near one compared with \
         the policy reference only (croniter differs on {croniter_differs_near_dst}), all {} \
         compared with the policy reference; {} failures; {:.1}s",
        cases.len(),
        cases.len() - five - six,
        refused.len(),
        ZONES.len(),
        steps.len(),
        steps.len(),
        failures.len(),
        began.elapsed().as_secs_f64()
    );
    assert!(cases.len() >= 2000, "the corpus has {} cases", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} steps differ:\n{}",
        failures.len(),
        steps.len(),
        failures
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
