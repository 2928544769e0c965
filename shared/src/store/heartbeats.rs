//! `meeting_heartbeats`: each participant's latest client heartbeat in a meeting. A heartbeat
//! later than a `heartbeat_timeout` estimate of that meeting in `cycle_closures` proves it wrong,
//! so recording one removes such estimates.

use std::collections::BTreeSet;

use sqlx::PgConnection;
use time::OffsetDateTime;

use super::recompute::ParticipantKey;
use crate::domain::heartbeat::Heartbeat;
use crate::domain::time::timestamp;

/// Records client heartbeats, each in its meeting (room sid, heartbeat; the caller resolved the
/// meeting running at the heartbeat's time, [`super::meetings::meetings_at`]), keeping each
/// participant's latest, and removes the heartbeat-timeout estimates they prove wrong: the
/// participant was still there. A heartbeat later than its meeting's end is ignored: it can never
/// reopen or extend a cycle of a meeting that has ended. Returns the participants that had
/// such an estimate removed (the caller then recomputes them). One statement for any number of
/// heartbeats. The meetings must be locked.
pub async fn record_heartbeats(
    conn: &mut PgConnection,
    heartbeats: &[(&str, &Heartbeat)],
) -> Result<Vec<ParticipantKey>, sqlx::Error> {
    if heartbeats.is_empty() {
        return Ok(Vec::new());
    }
    let room_sids: Vec<&str> = heartbeats.iter().map(|(room_sid, _)| *room_sid).collect();
    let identities: Vec<&str> = heartbeats.iter().map(|(_, h)| h.identity.as_str()).collect();
    let times: Vec<OffsetDateTime> = heartbeats.iter().map(|(_, h)| timestamp(h.received_at_ms)).collect();
    // One row per participant (ON CONFLICT cannot update a row twice in one statement), and only
    // heartbeats within their meeting (a probe per heartbeat, never a scan of the meetings).
    // Recorded and checked against the estimates in one statement.
    let refuted: Vec<(String, String)> = sqlx::query_as(
        "WITH latest AS (
             SELECT h.room_sid, h.identity, max(h.at) AS at
             FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS h (room_sid, identity, at)
             WHERE (SELECT m.ended_at IS NULL OR h.at <= m.ended_at FROM meetings m WHERE m.room_sid = h.room_sid)
             GROUP BY h.room_sid, h.identity
         ),
         recorded AS (
             INSERT INTO meeting_heartbeats (room_sid, identity, last_heartbeat_at)
             SELECT room_sid, identity, at FROM latest ORDER BY room_sid, identity
             ON CONFLICT (room_sid, identity) DO UPDATE
             SET last_heartbeat_at = greatest(meeting_heartbeats.last_heartbeat_at, excluded.last_heartbeat_at)
         )
         DELETE FROM cycle_closures c USING latest
         WHERE c.room_sid = latest.room_sid AND c.identity = latest.identity
           AND c.closed_by = 'heartbeat_timeout' AND c.closed_at < latest.at
         RETURNING c.room_sid, c.identity",
    )
    .bind(&room_sids)
    .bind(&identities)
    .bind(&times)
    .fetch_all(&mut *conn)
    .await?;
    let unique: BTreeSet<ParticipantKey> =
        refuted.into_iter().map(|(room_sid, identity)| ParticipantKey { room_sid, identity }).collect();
    Ok(unique.into_iter().collect())
}
