//! Closing stale cycles. A cycle is stale when its participant's last heartbeat is older than
//! the timeout and the cycle began before that heartbeat (a cycle that never had a heartbeat is
//! left alone, so clients without heartbeats stay correct), or when it has been open longer
//! than the maximum. The closure is recorded as an estimate (`cycle_closures`) and the
//! participant recomputed, so the rule decides, and a later participant_left replaces it.
//!
//! A cycle that `room_finished` closed is stale too when the heartbeats had stopped more than
//! the timeout before the room finished: the client was gone long before, and whether the
//! sweeper or the room_finished came first must not change the result (the rule keeps the
//! earliest estimate).

use std::collections::BTreeSet;
use std::time::Duration;

use shared::attendance::ClosedBy;
use shared::storage::{self, timestamp, unix_ms};
use sqlx::PgPool;
use time::OffsetDateTime;

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub heartbeat_timeouts: usize,
    pub max_durations: usize,
    /// Rooms another replica (or a worker) held: left for the next round.
    pub rooms_skipped: usize,
}

// $1: now - timeout; $2: now - maximum duration; $3: the timeout in milliseconds.
const STALE: &str = "(
        (c.left_at IS NULL OR c.closed_by = 'room_finished')
        AND h.last_heartbeat_at < least($1, c.left_at - $3 * interval '1 millisecond')
        AND c.joined_at <= h.last_heartbeat_at
    ) OR (c.left_at IS NULL AND c.joined_at < $2)";

/// Closes the stale cycles as of `now_ms`.
pub async fn sweep(
    pool: &PgPool,
    now_ms: i64,
    timeout: Duration,
    max_duration: Duration,
) -> Result<Swept, sqlx::Error> {
    let stale_before = timestamp(now_ms - millis(timeout));
    let opened_before = timestamp(now_ms - millis(max_duration));
    let rooms: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT c.room_name FROM cycles c
         LEFT JOIN participant_heartbeats h USING (room_name, identity)
         WHERE ({STALE})
         ORDER BY c.room_name LIMIT 1000"
    )))
    .bind(stale_before)
    .bind(opened_before)
    .bind(millis(timeout))
    .fetch_all(pool)
    .await?;

    let mut swept = Swept::default();
    for room in rooms {
        let mut tx = pool.begin().await?;
        let locked: Option<String> =
            sqlx::query_scalar("SELECT name FROM rooms WHERE name = $1 FOR UPDATE SKIP LOCKED")
                .bind(&room)
                .fetch_optional(&mut *tx)
                .await?;
        if locked.is_none() {
            swept.rooms_skipped += 1;
            continue;
        }
        // Checked again under the lock: a worker or another sweeper may have changed the room.
        let stale: Vec<(String, String, Option<OffsetDateTime>, OffsetDateTime)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT c.identity, c.participant_sid, h.last_heartbeat_at, c.joined_at FROM cycles c
                 LEFT JOIN participant_heartbeats h USING (room_name, identity)
                 WHERE ({STALE}) AND c.room_name = $4"
            )))
            .bind(stale_before)
            .bind(opened_before)
            .bind(millis(timeout))
            .bind(&room)
            .fetch_all(&mut *tx)
            .await?;
        let mut identities = BTreeSet::new();
        for (identity, participant_sid, last_heartbeat, joined_at) in stale {
            let heartbeat_stale = last_heartbeat.filter(|&hb| hb < stale_before && joined_at <= hb);
            let (closed_by, closed_at) = match heartbeat_stale {
                Some(hb) => (ClosedBy::HeartbeatTimeout, hb),
                None => (ClosedBy::MaxDuration, timestamp(unix_ms(joined_at) + millis(max_duration))),
            };
            sqlx::query(
                "INSERT INTO cycle_closures (room_name, identity, participant_sid, closed_by, closed_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_name, identity, participant_sid, closed_by)
                 DO UPDATE SET closed_at = least(cycle_closures.closed_at, excluded.closed_at)",
            )
            .bind(&room)
            .bind(&identity)
            .bind(&participant_sid)
            .bind(closed_by.as_str())
            .bind(closed_at)
            .execute(&mut *tx)
            .await?;
            match closed_by {
                ClosedBy::HeartbeatTimeout => swept.heartbeat_timeouts += 1,
                _ => swept.max_durations += 1,
            }
            tracing::info!(
                room,
                identity,
                participant_sid,
                closed_by = closed_by.as_str(),
                "cycle closed by the sweeper"
            );
            identities.insert(identity);
        }
        let participants = identities
            .into_iter()
            .map(|identity| ((room.clone(), identity), storage::Cause::named("sweeper")))
            .collect();
        storage::recompute_participants(&mut tx, &participants).await?;
        tx.commit().await?;
    }
    Ok(swept)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
