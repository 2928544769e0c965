//! The sweeper's estimates (`cycle_closures`): a cycle closed because its client's heartbeats
//! stopped, because it ran past the maximum duration, or because the LiveKit server stopped
//! listing it ([`super::reconciliation`]). They are facts for the rule like any
//! event, so a later participant_left replaces them; a later heartbeat removes a
//! heartbeat-timeout estimate ([`super::heartbeats`]).
//!
//! A cycle is stale when its participant's last heartbeat is older than the timeout and the
//! cycle began before that heartbeat (a cycle that never had a heartbeat is left alone, so
//! clients without heartbeats stay correct), or when it has been open longer than the maximum.
//! A cycle that `room_finished` closed is stale too when the heartbeats had stopped more than
//! the timeout before the room finished: the client was gone long before, and whether the
//! sweeper or the room_finished came first must not change the result (the rule keeps the
//! earliest estimate).

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use crate::domain::attendance::ClosedBy;
use crate::domain::time::{millis, timestamp, unix_ms};

/// When cycles count as stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staleness {
    pub now_ms: i64,
    pub heartbeat_timeout: Duration,
    pub max_duration: Duration,
}

impl Staleness {
    /// Heartbeats before this are stale.
    pub fn heartbeat_stale_before_ms(&self) -> i64 {
        self.now_ms - millis(self.heartbeat_timeout)
    }

    /// Cycles opened before this have run past the maximum.
    pub fn opened_too_long_before_ms(&self) -> i64 {
        self.now_ms - millis(self.max_duration)
    }
}

/// A stale cycle, with what the sweeper needs to decide how it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleCycle {
    pub identity: String,
    pub participant_sid: String,
    pub joined_at_ms: i64,
    pub last_heartbeat_ms: Option<i64>,
}

// $1: heartbeats stale before; $2: cycles opened too long before; $3: the timeout in milliseconds.
const STALE: &str = "(
        (c.left_at IS NULL OR c.closed_by = 'room_finished')
        AND h.last_heartbeat_at < least($1, c.left_at - $3 * interval '1 millisecond')
        AND c.joined_at <= h.last_heartbeat_at
    ) OR (c.left_at IS NULL AND c.joined_at < $2)";

/// Meetings with stale cycles (at most 1 000 a call, in room-sid order).
pub async fn meetings_with_stale_cycles(pool: &PgPool, staleness: &Staleness) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT c.room_sid FROM cycles c
         LEFT JOIN meeting_heartbeats h USING (room_sid, identity)
         WHERE ({STALE})
         ORDER BY c.room_sid LIMIT 1000"
    )))
    .bind(timestamp(staleness.heartbeat_stale_before_ms()))
    .bind(timestamp(staleness.opened_too_long_before_ms()))
    .bind(millis(staleness.heartbeat_timeout))
    .fetch_all(pool)
    .await
}

/// The stale cycles of a meeting. Call it under the meeting's lock, so that what it finds is
/// still true when the closures are written.
pub async fn stale_cycles(
    conn: &mut PgConnection,
    room_sid: &str,
    staleness: &Staleness,
) -> Result<Vec<StaleCycle>, sqlx::Error> {
    let rows: Vec<(String, String, Option<OffsetDateTime>, OffsetDateTime)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT c.identity, c.participant_sid, h.last_heartbeat_at, c.joined_at FROM cycles c
             LEFT JOIN meeting_heartbeats h USING (room_sid, identity)
             WHERE ({STALE}) AND c.room_sid = $4"
        )))
        .bind(timestamp(staleness.heartbeat_stale_before_ms()))
        .bind(timestamp(staleness.opened_too_long_before_ms()))
        .bind(millis(staleness.heartbeat_timeout))
        .bind(room_sid)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(identity, participant_sid, last_heartbeat, joined_at)| StaleCycle {
            identity,
            participant_sid,
            joined_at_ms: unix_ms(joined_at),
            last_heartbeat_ms: last_heartbeat.map(unix_ms),
        })
        .collect())
}

/// Records an estimated end of a cycle of a meeting; of two estimates of one kind, the earlier
/// stays.
pub async fn record_closure(
    conn: &mut PgConnection,
    room_sid: &str,
    identity: &str,
    participant_sid: &str,
    closed_by: ClosedBy,
    closed_at_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO cycle_closures (room_sid, identity, participant_sid, closed_by, closed_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_sid, identity, participant_sid, closed_by)
         DO UPDATE SET closed_at = least(cycle_closures.closed_at, excluded.closed_at)",
    )
    .bind(room_sid)
    .bind(identity)
    .bind(participant_sid)
    .bind(closed_by.as_str())
    .bind(timestamp(closed_at_ms))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Withdraws the estimates of one kind for these sessions of a meeting (what they said turned
/// out wrong); returns the identities whose estimates were withdrawn.
pub async fn withdraw(
    conn: &mut PgConnection,
    room_sid: &str,
    participant_sids: &[String],
    closed_by: ClosedBy,
) -> Result<Vec<String>, sqlx::Error> {
    if participant_sids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(
        "DELETE FROM cycle_closures
         WHERE room_sid = $1 AND participant_sid = ANY($2) AND closed_by = $3 RETURNING identity",
    )
    .bind(room_sid)
    .bind(participant_sids)
    .bind(closed_by.as_str())
    .fetch_all(&mut *conn)
    .await
}
