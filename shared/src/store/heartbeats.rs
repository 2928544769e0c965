//! `participant_heartbeats`: each participant's latest client heartbeat. A heartbeat later than
//! a `heartbeat_timeout` estimate in `cycle_closures` proves it wrong, so recording one removes
//! such estimates.

use std::collections::BTreeSet;

use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::domain::heartbeat::Heartbeat;
use crate::domain::time::timestamp;

/// Records client heartbeats (keeping each participant's latest) and removes the
/// heartbeat-timeout estimates they prove wrong: the participant was still there. Returns the
/// participants, (room name, identity), that had such an estimate removed (the caller then
/// recomputes them). Two statements for any number of heartbeats. The rooms must be locked.
pub async fn record_heartbeats(
    conn: &mut PgConnection,
    heartbeats: &[&Heartbeat],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    if heartbeats.is_empty() {
        return Ok(Vec::new());
    }
    let rooms: Vec<&str> = heartbeats.iter().map(|h| h.room_name.as_str()).collect();
    let identities: Vec<&str> = heartbeats.iter().map(|h| h.identity.as_str()).collect();
    let times: Vec<OffsetDateTime> = heartbeats.iter().map(|h| timestamp(h.received_at_ms)).collect();
    // One row per participant: ON CONFLICT cannot update a row twice in one statement.
    const LATEST: &str = "SELECT room_name, identity, max(at) AS at
        FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS h (room_name, identity, at)
        GROUP BY room_name, identity";
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO participant_heartbeats (room_name, identity, last_heartbeat_at)
         SELECT room_name, identity, at FROM ({LATEST}) latest ORDER BY room_name, identity
         ON CONFLICT (room_name, identity) DO UPDATE
         SET last_heartbeat_at = greatest(participant_heartbeats.last_heartbeat_at, excluded.last_heartbeat_at)"
    )))
    .bind(&rooms)
    .bind(&identities)
    .bind(&times)
    .execute(&mut *conn)
    .await?;
    let refuted: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "DELETE FROM cycle_closures c USING ({LATEST}) latest
         WHERE c.room_name = latest.room_name AND c.identity = latest.identity
           AND c.closed_by = 'heartbeat_timeout' AND c.closed_at < latest.at
         RETURNING c.room_name, c.identity"
    )))
    .bind(&rooms)
    .bind(&identities)
    .bind(&times)
    .fetch_all(&mut *conn)
    .await?;
    let unique: BTreeSet<(String, String)> = refuted.into_iter().collect();
    Ok(unique.into_iter().collect())
}
