//! Seed 000: a daily job at 00:30 Asia/Kolkata that creates a default attendance row for every
//! member, idempotently, and updates the monthly summaries.
//!
//! The "database" here is Redis hashes (at `KIQ_REDIS_URL`), so the example runs anywhere:
//! `demo:members` (a set), `demo:attendance:<date>` (member → status) and
//! `demo:summary:<YYYY-MM>` (member → days present). Both steps are idempotent: rows are
//! created only if missing (`HSETNX`), and summaries are recomputed from the rows (set, not
//! increment), so a retry or a duplicate run changes nothing.

use chrono::{Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::faults::side_effect_redis;

/// What one run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyReport {
    /// The date processed (Asia/Kolkata).
    pub date: String,
    /// Rows created by this run (0 when it already ran).
    pub created: u64,
    /// Members whose monthly summary was recomputed.
    pub summaries: u64,
}

/// Runs at 00:30 in Kolkata every day, for that day.
#[kiq::task(
    schedule = "30 0 * * *",
    schedule_tz = "Asia/Kolkata",
    retries = 3,
    timeout = "5m"
)]
pub async fn daily_attendance() -> Result<DailyReport, String> {
    let today = Utc::now()
        .with_timezone(&chrono_tz::Asia::Kolkata)
        .date_naive();
    attendance_for(today.to_string()).await
}

/// The same job for an explicit date (`YYYY-MM-DD`): backfills and tests.
#[kiq::task(retries = 3, timeout = "5m")]
pub async fn attendance_for(date: String) -> Result<DailyReport, String> {
    let day = NaiveDate::parse_from_str(&date, "%Y-%m-%d")
        .map_err(|e| format!("bad date {date:?}: {e}"))?;
    let mut db = side_effect_redis().await?;
    let members: Vec<String> =
        redis_cmd(&mut db, redis::cmd("SMEMBERS").arg("demo:members")).await?;
    let rows = format!("demo:attendance:{day}");
    let mut created = 0;
    for m in &members {
        let fresh: bool = redis_cmd(
            &mut db,
            redis::cmd("HSETNX").arg(&rows).arg(m).arg("absent"),
        )
        .await?;
        created += fresh as u64;
    }
    // Recompute this month's summaries from the rows: idempotent.
    let month = format!("{:04}-{:02}", day.year(), day.month());
    let mut present: std::collections::BTreeMap<String, u64> =
        members.iter().map(|m| (m.clone(), 0)).collect();
    let mut d = NaiveDate::from_ymd_opt(day.year(), day.month(), 1).ok_or("bad month")?;
    while d.month() == day.month() && d <= day {
        let statuses: std::collections::HashMap<String, String> = redis_cmd(
            &mut db,
            redis::cmd("HGETALL").arg(format!("demo:attendance:{d}")),
        )
        .await?;
        for (m, s) in statuses {
            if s == "present" {
                *present.entry(m).or_default() += 1;
            }
        }
        d = d.succ_opt().ok_or("date overflow")?;
    }
    let summary = format!("demo:summary:{month}");
    for (m, n) in &present {
        redis_cmd::<()>(&mut db, redis::cmd("HSET").arg(&summary).arg(m).arg(*n)).await?;
    }
    Ok(DailyReport {
        date: day.to_string(),
        created,
        summaries: present.len() as u64,
    })
}

async fn redis_cmd<T: redis::FromRedisValue>(
    conn: &mut kiq::broker::RedisConnection,
    cmd: &redis::Cmd,
) -> Result<T, String> {
    cmd.query_async(conn).await.map_err(|e| e.to_string())
}
