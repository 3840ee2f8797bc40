//! The scheduler's primitives: the lease, the stored schedules, and deciding a tick.

use std::time::Duration;

use crate::control::{LeaseInfo, ScheduleState, Tick, TickOutcome};
use crate::error::BrokerError;

use super::scripts::{self, LEASE_ACQUIRE, LEASE_RELEASE, SCHEDULE_DECIDE, SCHEDULE_SKIP};
use super::RedisBackend;

/// `last_tick_ms`, `last_fire_ms`, `next_fire_ms` of a schedule's state hash.
type StateFields = (Option<u64>, Option<u64>, Option<u64>);

impl RedisBackend {
    pub(crate) async fn acquire_lease(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, BrokerError> {
        let mut inv = LEASE_ACQUIRE.with_keys(&scripts::lease_acquire_keys(&self.keys));
        inv.arg(holder).arg(ttl.as_millis() as u64);
        let token: i64 = self.pool().invoke(&inv).await?;
        Ok((token >= 0).then_some(token as u64))
    }

    pub(crate) async fn release_lease(&self, holder: &str, token: u64) -> Result<(), BrokerError> {
        let mut inv = LEASE_RELEASE.with_keys(&scripts::lease_release_keys(&self.keys));
        inv.arg(format!("{holder} {token}"));
        let _: i64 = self.pool().invoke(&inv).await?;
        Ok(())
    }

    pub(crate) async fn lease(&self) -> Result<Option<LeaseInfo>, BrokerError> {
        let mut pipe = redis::pipe();
        pipe.cmd("GET")
            .arg(self.keys.lease())
            .cmd("PTTL")
            .arg(self.keys.lease());
        let (value, ttl_ms): (Option<String>, i64) = self.pool().query(&pipe).await?;
        Ok(value.and_then(|v| {
            let (holder, token) = v.split_once(' ')?;
            Some(LeaseInfo {
                holder: holder.to_string(),
                token: token.parse().ok()?,
                ttl_ms,
            })
        }))
    }

    pub(crate) async fn put_schedule(&self, id: &str, json: &str) -> Result<(), BrokerError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(self.keys.schedules())
            .arg(id)
            .arg(json)
            .ignore();
        pipe.cmd("INCR").arg(self.keys.schedules_version()).ignore();
        self.pool().query::<(), _>(&pipe).await
    }

    pub(crate) async fn schedule(&self, id: &str) -> Result<Option<String>, BrokerError> {
        self.pool()
            .query(redis::cmd("HGET").arg(self.keys.schedules()).arg(id))
            .await
    }

    pub(crate) async fn schedules(&self) -> Result<Vec<(String, String)>, BrokerError> {
        self.pool()
            .query(redis::cmd("HGETALL").arg(self.keys.schedules()))
            .await
    }

    pub(crate) async fn remove_schedule(&self, id: &str) -> Result<bool, BrokerError> {
        let k = &self.keys;
        let mut pipe = redis::pipe();
        pipe.cmd("HDEL").arg(k.schedules()).arg(id);
        pipe.cmd("DEL")
            .arg(k.schedule_state(id))
            .arg(k.schedule_fires(id))
            .ignore();
        pipe.cmd("INCR").arg(k.schedules_version()).ignore();
        let (n,): (u64,) = self.pool().query(&pipe).await?;
        Ok(n == 1)
    }

    pub(crate) async fn schedules_version(&self) -> Result<i64, BrokerError> {
        let v: Option<i64> = self
            .pool()
            .query(redis::cmd("GET").arg(self.keys.schedules_version()))
            .await?;
        Ok(v.unwrap_or(0))
    }

    pub(crate) async fn schedule_state(&self, id: &str) -> Result<ScheduleState, BrokerError> {
        let k = &self.keys;
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(k.schedule_state(id))
            .arg("last_tick_ms")
            .arg("last_fire_ms")
            .arg("next_fire_ms");
        pipe.cmd("LRANGE").arg(k.schedule_fires(id)).arg(0).arg(19);
        let ((last_tick, last_fire, next_fire), recent): (StateFields, Vec<String>) =
            self.pool().query(&pipe).await?;
        Ok(ScheduleState {
            last_tick_ms: last_tick,
            last_fire_ms: last_fire,
            next_fire_ms: next_fire,
            recent_fires: recent,
        })
    }

    pub(crate) async fn last_tick(&self, id: &str) -> Result<Option<u64>, BrokerError> {
        self.pool()
            .query(
                redis::cmd("HGET")
                    .arg(self.keys.schedule_state(id))
                    .arg("last_tick_ms"),
            )
            .await
    }

    pub(crate) async fn set_last_tick(&self, id: &str, tick_ms: u64) -> Result<(), BrokerError> {
        self.pool()
            .query::<(), _>(
                redis::cmd("HSET")
                    .arg(self.keys.schedule_state(id))
                    .arg("last_tick_ms")
                    .arg(tick_ms),
            )
            .await
    }

    pub(crate) async fn note_fire(&self, id: &str, task_id: &str) -> Result<(), BrokerError> {
        let k = self.keys.schedule_fires(id);
        let mut pipe = redis::pipe();
        pipe.cmd("LPUSH").arg(&k).arg(task_id).ignore();
        pipe.cmd("LTRIM").arg(&k).arg(0).arg(19).ignore();
        self.pool().query::<(), _>(&pipe).await
    }

    pub(crate) async fn decide(
        &self,
        tick: &Tick<'_>,
        parked: &[u8],
    ) -> Result<TickOutcome, BrokerError> {
        let keys = scripts::schedule_decide_keys(&self.keys, tick.schedule, tick.fire_id);
        let mut inv = SCHEDULE_DECIDE.with_keys(&keys);
        inv.arg(tick.lease)
            .arg(tick.retention.as_millis().max(1) as u64)
            .arg(tick.tick_ms)
            .arg(tick.fire_id)
            .arg(crate::model::envelope::now_ms())
            .arg(tick.next_ms.unwrap_or(0))
            .arg(parked);
        let r: i64 = self.pool().invoke(&inv).await?;
        Ok(match r {
            -1 => TickOutcome::Deposed,
            1 => TickOutcome::Decided,
            _ => TickOutcome::AlreadyDecided,
        })
    }

    pub(crate) async fn skip(&self, tick: &Tick<'_>) -> Result<TickOutcome, BrokerError> {
        let mut inv =
            SCHEDULE_SKIP.with_keys(&scripts::schedule_skip_keys(&self.keys, tick.schedule));
        inv.arg(tick.lease)
            .arg(tick.tick_ms)
            .arg(tick.next_ms.unwrap_or(0));
        let r: i64 = self.pool().invoke(&inv).await?;
        Ok(if r == -1 {
            TickOutcome::Deposed
        } else {
            TickOutcome::Decided
        })
    }

    pub(crate) async fn outbox(&self) -> Result<Vec<(String, Vec<u8>)>, BrokerError> {
        self.pool()
            .query(redis::cmd("HGETALL").arg(self.keys.outbox()))
            .await
    }

    pub(crate) async fn clear_outbox(&self, fire_id: &str) -> Result<(), BrokerError> {
        self.pool()
            .query::<(), _>(redis::cmd("HDEL").arg(self.keys.outbox()).arg(fire_id))
            .await
    }
}
