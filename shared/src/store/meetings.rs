//! The `meetings` table: one row per meeting (room sid), with its room name and span. Its row
//! lock serializes every change to the meeting's attendance (workers, sweepers, recompute):
//! [`lock_meetings`] is the one way to take it.
//!
//! Invariant: a transaction waits for meetings only in room-sid order, and only before it skips
//! any, so no cycle of waits (deadlock) can form between replicas.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use crate::domain::meeting::MeetingSpan;
use crate::domain::time::timestamp;

/// Creates the rows of meetings not seen before, room sid → room name, in a statement of its
/// own (not inside the caller's transaction), so that locking them later never waits on another
/// transaction's uncommitted insert of the same meeting.
pub async fn create_meetings(pool: &PgPool, meetings: &BTreeMap<String, String>) -> Result<(), sqlx::Error> {
    if meetings.is_empty() {
        return Ok(());
    }
    let room_sids: Vec<&str> = meetings.keys().map(String::as_str).collect();
    let room_names: Vec<&str> = meetings.values().map(String::as_str).collect();
    sqlx::query(
        "INSERT INTO meetings (room_sid, room_name)
         SELECT * FROM unnest($1::text[], $2::text[]) ORDER BY 1 ON CONFLICT (room_sid) DO NOTHING",
    )
    .bind(&room_sids)
    .bind(&room_names)
    .execute(pool)
    .await?;
    Ok(())
}

/// Locks the meetings of `wait_for`, waiting for them in room-sid order, then those of
/// `if_free` that no other transaction holds, without waiting. Returns every meeting locked. The
/// rows must exist ([`create_meetings`]). A transaction only ever waits before it skips, and
/// waits in order, so no cycle of waits can form.
pub async fn lock_meetings(
    conn: &mut PgConnection,
    wait_for: &BTreeSet<String>,
    if_free: &BTreeSet<String>,
) -> Result<BTreeSet<String>, sqlx::Error> {
    let mut locked = BTreeSet::new();
    if !wait_for.is_empty() {
        let room_sids: Vec<&str> = wait_for.iter().map(String::as_str).collect();
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT room_sid FROM meetings WHERE room_sid = ANY($1) ORDER BY room_sid FOR UPDATE")
                .bind(&room_sids)
                .fetch_all(&mut *conn)
                .await?;
        locked.extend(rows);
    }
    let room_sids: Vec<&str> = if_free.difference(wait_for).map(String::as_str).collect();
    if !room_sids.is_empty() {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT room_sid FROM meetings WHERE room_sid = ANY($1) ORDER BY room_sid FOR UPDATE SKIP LOCKED",
        )
        .bind(&room_sids)
        .fetch_all(&mut *conn)
        .await?;
        locked.extend(rows);
    }
    Ok(locked)
}

/// The meeting each (room name, time) falls in: the latest-started meeting of the room name that
/// had started by then and had not ended before. Heartbeats carry no room sid (the token names
/// the room): they count for that meeting only, whatever the order they are applied in. `None`
/// where no meeting of the name was running.
pub async fn meetings_at(conn: &mut PgConnection, moments: &[(&str, i64)]) -> Result<Vec<Option<String>>, sqlx::Error> {
    if moments.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = moments.iter().map(|(name, _)| *name).collect();
    let times: Vec<OffsetDateTime> = moments.iter().map(|(_, at)| timestamp(*at)).collect();
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT DISTINCT ON (h.n) h.n, m.room_sid
         FROM unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS h (room_name, at, n)
         JOIN meetings m ON m.room_name = h.room_name AND m.started_at <= h.at
                        AND (m.ended_at IS NULL OR m.ended_at >= h.at)
         ORDER BY h.n, m.started_at DESC, m.room_sid DESC",
    )
    .bind(&names)
    .bind(&times)
    .fetch_all(&mut *conn)
    .await?;
    let mut found = vec![None; moments.len()];
    for (n, room_sid) in rows {
        if let Some(slot) = usize::try_from(n - 1).ok().and_then(|i| found.get_mut(i)) {
            *slot = Some(room_sid);
        }
    }
    Ok(found)
}

/// The meetings of a room name (of every room name if `None`), in room-sid order.
pub async fn room_sids(pool: &PgPool, room_name: Option<&str>) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT room_sid FROM meetings WHERE ($1::text IS NULL OR room_name = $1) ORDER BY room_sid")
        .bind(room_name)
        .fetch_all(pool)
        .await
}

/// Meetings whose derived attendance must be rebuilt from the log (after a migration).
pub async fn needing_recompute(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT room_sid FROM meetings WHERE needs_recompute ORDER BY room_sid").fetch_all(pool).await
}

/// The room name of each meeting.
pub async fn room_names_of(
    conn: &mut PgConnection,
    room_sids: &BTreeSet<String>,
) -> Result<BTreeMap<String, String>, sqlx::Error> {
    let room_sids: Vec<&str> = room_sids.iter().map(String::as_str).collect();
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT room_sid, room_name FROM meetings WHERE room_sid = ANY($1)")
            .bind(&room_sids)
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Stores the meetings' spans, room sid → span. One statement.
pub async fn write_spans(conn: &mut PgConnection, spans: &BTreeMap<String, MeetingSpan>) -> Result<(), sqlx::Error> {
    if spans.is_empty() {
        return Ok(());
    }
    let room_sids: Vec<&str> = spans.keys().map(String::as_str).collect();
    let started: Vec<Option<OffsetDateTime>> = spans.values().map(|s| s.started_at_ms.map(timestamp)).collect();
    let ended: Vec<Option<OffsetDateTime>> = spans.values().map(|s| s.ended_at_ms.map(timestamp)).collect();
    let ended_by: Vec<Option<&str>> = spans.values().map(|s| s.ended_by.map(|by| by.as_str())).collect();
    sqlx::query(
        "UPDATE meetings m SET started_at = s.started_at, ended_at = s.ended_at, ended_by = s.ended_by
         FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[])
              AS s (room_sid, started_at, ended_at, ended_by)
         WHERE m.room_sid = s.room_sid",
    )
    .bind(&room_sids)
    .bind(&started)
    .bind(&ended)
    .bind(&ended_by)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Marks a meeting's derived attendance as rebuilt from the log.
pub async fn mark_rebuilt(conn: &mut PgConnection, room_sid: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE meetings SET needs_recompute = false WHERE room_sid = $1 AND needs_recompute")
        .bind(room_sid)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Every room name with a meeting.
pub async fn room_names(conn: &mut PgConnection) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT DISTINCT room_name FROM meetings ORDER BY room_name").fetch_all(&mut *conn).await
}
