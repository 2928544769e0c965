//! The read model, for display: meetings, participants' stored attendance and cycles per
//! meeting, a room name's total over its meetings, and last heartbeats. Reads only.

use std::collections::BTreeMap;

use sqlx::{PgConnection, Row as _};
use time::OffsetDateTime;

use crate::domain::attendance::{self, Attendance, ClosedBy, Cycle};
use crate::domain::meeting::{EndedBy, MeetingSpan};
use crate::domain::time::{timestamp, unix_ms};

/// A participant's total over every meeting of a room name (a course total).
pub async fn load_participant(
    conn: &mut PgConnection,
    room_name: &str,
    identity: &str,
) -> Result<Option<Attendance>, sqlx::Error> {
    Ok(load_room_totals(conn, room_name, Some(identity)).await?.remove(identity))
}

/// Every participant's total over every meeting of a room name, by identity.
pub async fn load_room(conn: &mut PgConnection, room_name: &str) -> Result<BTreeMap<String, Attendance>, sqlx::Error> {
    load_room_totals(conn, room_name, None).await
}

/// Every participant's attendance in one meeting, by identity.
pub async fn load_meeting(
    conn: &mut PgConnection,
    room_sid: &str,
) -> Result<BTreeMap<String, Attendance>, sqlx::Error> {
    let per_meeting = load_per_meeting(conn, Scope::Meeting(room_sid)).await?;
    Ok(per_meeting.into_iter().map(|(_, attendance)| (attendance.identity.clone(), attendance)).collect())
}

async fn load_room_totals(
    conn: &mut PgConnection,
    room_name: &str,
    identity: Option<&str>,
) -> Result<BTreeMap<String, Attendance>, sqlx::Error> {
    let mut by_identity: BTreeMap<String, Vec<Attendance>> = BTreeMap::new();
    for (_, attendance) in load_per_meeting(conn, Scope::Room { room_name, identity }).await? {
        by_identity.entry(attendance.identity.clone()).or_default().push(attendance);
    }
    Ok(by_identity
        .into_iter()
        .filter_map(|(identity, meetings)| Some((identity, attendance::course_total(&meetings)?)))
        .collect())
}

enum Scope<'a> {
    Room { room_name: &'a str, identity: Option<&'a str> },
    Meeting(&'a str),
}

/// The stored attendance per (meeting, participant) in a scope, in meeting order (by start) for
/// each identity. One statement, so that totals and cycles come from one snapshot even while a
/// worker commits, whatever the room's size.
async fn load_per_meeting(conn: &mut PgConnection, scope: Scope<'_>) -> Result<Vec<(String, Attendance)>, sqlx::Error> {
    // One statement per scope, its key a plain condition: a condition that may be switched off
    // (`$1 IS NULL OR ...`) cannot use an index once the plan is generic, and a meeting was read
    // by scanning every participant of every meeting.
    const SELECT: &str = "SELECT p.room_sid, p.identity, p.name, p.metadata, p.kind, p.present, p.attended_ms,
                p.join_count, p.leave_count, p.first_joined_at, p.last_left_at,
                c.participant_sid, c.joined_at, c.left_at, c.closed_by
         FROM meeting_participants p
         JOIN meetings m USING (room_sid)
         LEFT JOIN cycles c USING (room_sid, identity)";
    const ORDER: &str =
        "ORDER BY p.identity, m.started_at NULLS LAST, m.created_at, p.room_sid, c.joined_at, c.participant_sid";
    let query = match scope {
        Scope::Room { room_name, identity: None } => {
            sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT} WHERE p.room_name = $1 {ORDER}"))).bind(room_name)
        }
        Scope::Room { room_name, identity: Some(identity) } => {
            sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT} WHERE p.room_name = $1 AND p.identity = $2 {ORDER}")))
                .bind(room_name)
                .bind(identity)
        }
        Scope::Meeting(room_sid) => {
            sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT} WHERE p.room_sid = $1 {ORDER}"))).bind(room_sid)
        }
    };
    let rows = query.fetch_all(&mut *conn).await?;
    let mut per_meeting: Vec<(String, Attendance)> = Vec::new();
    for row in rows {
        let room_sid: String = row.try_get("room_sid")?;
        let identity: String = row.try_get("identity")?;
        let same = per_meeting.last().is_some_and(|(sid, a)| *sid == room_sid && a.identity == identity);
        if !same {
            per_meeting.push((
                room_sid.clone(),
                Attendance {
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
                },
            ));
        }
        if let Some(participant_sid) = row.try_get::<Option<String>, _>("participant_sid")? {
            let (_, attendance) = per_meeting.last_mut().expect("pushed above");
            attendance.cycles.push(Cycle {
                participant_sid,
                room_sid,
                joined_at_ms: unix_ms(row.try_get("joined_at")?),
                left_at_ms: row.try_get::<Option<OffsetDateTime>, _>("left_at")?.map(unix_ms),
                closed_by: row.try_get::<Option<String>, _>("closed_by")?.as_deref().and_then(ClosedBy::parse),
            });
        }
    }
    Ok(per_meeting)
}

/// The last heartbeat of each participant of a room name (or of one), over its meetings, for
/// those whose client sends them.
pub async fn last_heartbeats(
    conn: &mut PgConnection,
    room_name: &str,
    identity: Option<&str>,
) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, OffsetDateTime)> = sqlx::query_as(
        "SELECT h.identity, max(h.last_heartbeat_at) FROM meeting_heartbeats h JOIN meetings m USING (room_sid)
         WHERE m.room_name = $1 AND ($2::text IS NULL OR h.identity = $2)
         GROUP BY h.identity",
    )
    .bind(room_name)
    .bind(identity)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(identity, at)| (identity, unix_ms(at))).collect())
}

/// A meeting as the read API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeetingSummary {
    pub room_sid: String,
    pub room_name: String,
    pub span: MeetingSpan,
    pub people: i64,
    pub bots: i64,
    /// People present now.
    pub present_now: i64,
}

/// Where a page of meetings starts: after the meeting that ended the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeetingsAfter {
    pub started_at_ms: i64,
    pub room_sid: String,
}

/// Which meetings of a room name to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeetingsQuery {
    /// Started at or after this.
    pub since_ms: Option<i64>,
    /// Started before this.
    pub until_ms: Option<i64>,
    pub after: Option<MeetingsAfter>,
    pub limit: i64,
}

const MEETING_SUMMARY: &str = "SELECT m.room_sid, m.room_name, m.started_at, m.ended_at, m.ended_by,
        count(p.identity) FILTER (WHERE NOT p.is_bot) AS people,
        count(p.identity) FILTER (WHERE p.is_bot) AS bots,
        count(p.identity) FILTER (WHERE p.present AND NOT p.is_bot) AS present_now
    FROM meetings m LEFT JOIN meeting_participants p USING (room_sid)";

fn meeting_summary(row: &sqlx::postgres::PgRow) -> Result<MeetingSummary, sqlx::Error> {
    let at = |column: &str| -> Result<Option<i64>, sqlx::Error> {
        Ok(row.try_get::<Option<OffsetDateTime>, _>(column)?.map(unix_ms))
    };
    Ok(MeetingSummary {
        room_sid: row.try_get("room_sid")?,
        room_name: row.try_get("room_name")?,
        span: MeetingSpan {
            started_at_ms: at("started_at")?,
            ended_at_ms: at("ended_at")?,
            ended_by: row.try_get::<Option<String>, _>("ended_by")?.as_deref().and_then(EndedBy::parse),
        },
        people: row.try_get("people")?,
        bots: row.try_get("bots")?,
        present_now: row.try_get("present_now")?,
    })
}

/// A room name's meetings, newest first (by start, then room sid). Meetings not rebuilt yet, or
/// with no start, are left out.
pub async fn list_meetings(
    conn: &mut PgConnection,
    room_name: &str,
    query: &MeetingsQuery,
) -> Result<Vec<MeetingSummary>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{MEETING_SUMMARY}
         WHERE m.room_name = $1 AND m.started_at IS NOT NULL AND NOT m.needs_recompute
           AND ($2::timestamptz IS NULL OR m.started_at >= $2) AND ($3::timestamptz IS NULL OR m.started_at < $3)
           AND ($4::timestamptz IS NULL OR (m.started_at, m.room_sid) < ($4, $5::text))
         GROUP BY m.room_sid
         ORDER BY m.started_at DESC, m.room_sid DESC
         LIMIT $6"
    )))
    .bind(room_name)
    .bind(query.since_ms.map(timestamp))
    .bind(query.until_ms.map(timestamp))
    .bind(query.after.as_ref().map(|after| timestamp(after.started_at_ms)))
    .bind(query.after.as_ref().map(|after| after.room_sid.as_str()))
    .bind(query.limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(meeting_summary).collect()
}

/// One meeting, if it exists and was rebuilt.
pub async fn meeting(conn: &mut PgConnection, room_sid: &str) -> Result<Option<MeetingSummary>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{MEETING_SUMMARY} WHERE m.room_sid = $1 AND NOT m.needs_recompute GROUP BY m.room_sid"
    )))
    .bind(room_sid)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(meeting_summary).transpose()
}

/// The last heartbeat of each participant of a meeting whose client sends them.
pub async fn meeting_heartbeats(conn: &mut PgConnection, room_sid: &str) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, OffsetDateTime)> =
        sqlx::query_as("SELECT identity, last_heartbeat_at FROM meeting_heartbeats WHERE room_sid = $1")
            .bind(room_sid)
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows.into_iter().map(|(identity, at)| (identity, unix_ms(at))).collect())
}
