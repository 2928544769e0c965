//! The read model, for display: participants' stored attendance and cycles, and their last
//! heartbeats. Reads only.

use std::collections::BTreeMap;

use sqlx::{PgConnection, Row as _};
use time::OffsetDateTime;

use crate::domain::attendance::{Attendance, ClosedBy, Cycle};
use crate::domain::time::unix_ms;

/// A participant's stored attendance, as the read side sees it.
pub async fn load_participant(
    conn: &mut PgConnection,
    room_name: &str,
    identity: &str,
) -> Result<Option<Attendance>, sqlx::Error> {
    Ok(load_attendance(conn, room_name, Some(identity)).await?.remove(identity))
}

/// Every participant's stored attendance in a room, by identity.
pub async fn load_room(conn: &mut PgConnection, room_name: &str) -> Result<BTreeMap<String, Attendance>, sqlx::Error> {
    load_attendance(conn, room_name, None).await
}

/// The stored attendance of a room (or of one participant in it). One statement, so that totals
/// and cycles come from one snapshot even while a worker commits, whatever the room's size.
async fn load_attendance(
    conn: &mut PgConnection,
    room_name: &str,
    identity: Option<&str>,
) -> Result<BTreeMap<String, Attendance>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT p.identity, p.name, p.metadata, p.kind, p.present, p.attended_ms, p.join_count, p.leave_count,
                p.first_joined_at, p.last_left_at, c.participant_sid, c.room_sid, c.joined_at, c.left_at, c.closed_by
         FROM participants p
         LEFT JOIN cycles c ON c.room_name = p.room_name AND c.identity = p.identity
         WHERE p.room_name = $1 AND ($2::text IS NULL OR p.identity = $2)
         ORDER BY p.identity, c.joined_at, c.participant_sid",
    )
    .bind(room_name)
    .bind(identity)
    .fetch_all(&mut *conn)
    .await?;
    let mut room: BTreeMap<String, Attendance> = BTreeMap::new();
    for row in rows {
        let identity: String = row.try_get("identity")?;
        let attendance = match room.entry(identity) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                let identity = entry.key().clone();
                entry.insert(Attendance {
                    cycles: Vec::new(),
                    identity,
                    name: row.try_get("name")?,
                    metadata: row.try_get("metadata")?,
                    kind: row.try_get("kind")?,
                    attended_ms: row.try_get("attended_ms")?,
                    join_count: i64::from(row.try_get::<i32, _>("join_count")?),
                    leave_count: i64::from(row.try_get::<i32, _>("leave_count")?),
                    first_joined_at_ms: row.try_get::<Option<OffsetDateTime>, _>("first_joined_at")?.map(unix_ms),
                    last_left_at_ms: row.try_get::<Option<OffsetDateTime>, _>("last_left_at")?.map(unix_ms),
                    present: row.try_get("present")?,
                })
            }
        };
        if let Some(participant_sid) = row.try_get::<Option<String>, _>("participant_sid")? {
            attendance.cycles.push(Cycle {
                participant_sid,
                room_sid: row.try_get("room_sid")?,
                joined_at_ms: unix_ms(row.try_get("joined_at")?),
                left_at_ms: row.try_get::<Option<OffsetDateTime>, _>("left_at")?.map(unix_ms),
                closed_by: row.try_get::<Option<String>, _>("closed_by")?.as_deref().and_then(ClosedBy::parse),
            });
        }
    }
    Ok(room)
}

/// The last heartbeat of each participant of a room (or of one) whose client sends them.
pub async fn last_heartbeats(
    conn: &mut PgConnection,
    room_name: &str,
    identity: Option<&str>,
) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, OffsetDateTime)> = sqlx::query_as(
        "SELECT identity, last_heartbeat_at FROM participant_heartbeats
         WHERE room_name = $1 AND ($2::text IS NULL OR identity = $2)",
    )
    .bind(room_name)
    .bind(identity)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(identity, at)| (identity, unix_ms(at))).collect())
}
