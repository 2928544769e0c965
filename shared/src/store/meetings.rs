//! The `meetings` table: one row per meeting (room sid), with its room name and span. Its row
//! lock serializes every change to the meeting's attendance (workers, sweepers, recompute):
//! [`lock_meetings`] is the one way to take it.
//!
//! Invariant: a transaction waits for meetings only in room-sid order, and only before it skips
//! any, so no cycle of waits (deadlock) can form between replicas.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use crate::domain::meeting::{MeetingSpan, RoomTimeouts};
use crate::domain::time::{timestamp, unix_ms};

/// Creates the rows of meetings not seen before, room sid → room name, in a statement of its
/// own (not inside the caller's transaction), so that locking them later never waits on another
/// transaction's uncommitted insert of the same meeting.
pub async fn create_meetings(pool: &PgPool, meetings: &BTreeMap<String, String>) -> Result<(), sqlx::Error> {
    create_meetings_and_find_heartbeats(pool, meetings, &[]).await.map(drop)
}

/// The meetings a transaction locked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locked {
    pub meetings: BTreeSet<String>,
    /// The sealed ones among them (past the retention: never changed again).
    pub sealed: BTreeSet<String>,
    /// Those whose span follows their participants (no room_started to start them, or an
    /// inferred end to check): only these need their span recomputed when a participant changes.
    pub span_follows_participants: BTreeSet<String>,
}

impl Locked {
    pub fn is_empty(&self) -> bool {
        self.meetings.is_empty()
    }

    pub fn contains(&self, room_sid: &str) -> bool {
        self.meetings.contains(room_sid)
    }
}

/// Locks the meetings of `wait_for`, waiting for them in room-sid order, then those of
/// `if_free` that no other transaction holds, without waiting. Returns every meeting locked. The
/// rows must exist ([`create_meetings`]). A transaction only ever waits before it skips, and
/// waits in order, so no cycle of waits can form.
pub async fn lock_meetings(
    conn: &mut PgConnection,
    wait_for: &BTreeSet<String>,
    if_free: &BTreeSet<String>,
) -> Result<Locked, sqlx::Error> {
    let mut locked = Locked::default();
    let mut lock = async |room_sids: Vec<&str>, skip_locked: &str| -> Result<(), sqlx::Error> {
        if room_sids.is_empty() {
            return Ok(());
        }
        // Scalar subqueries, not EXISTS: an EXISTS may be planned as one hashed scan of every
        // room_started ever logged.
        let rows: Vec<(String, bool, bool)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT m.room_sid, m.sealed_at IS NOT NULL,
                    (SELECT true FROM webhook_events e
                     WHERE e.room_sid = m.room_sid AND e.event_type = 'room_started' LIMIT 1) IS NULL
                    OR (SELECT true FROM meeting_end_estimates x WHERE x.room_sid = m.room_sid) IS NOT NULL
             FROM meetings m WHERE m.room_sid = ANY($1)
             ORDER BY m.room_sid FOR UPDATE OF m {skip_locked}"
        )))
        .bind(&room_sids)
        .fetch_all(&mut *conn)
        .await?;
        for (room_sid, sealed, follows_participants) in rows {
            if sealed {
                locked.sealed.insert(room_sid.clone());
            }
            if follows_participants {
                locked.span_follows_participants.insert(room_sid.clone());
            }
            locked.meetings.insert(room_sid);
        }
        Ok(())
    };
    lock(wait_for.iter().map(String::as_str).collect(), "").await?;
    lock(if_free.difference(wait_for).map(String::as_str).collect(), "SKIP LOCKED").await?;
    Ok(locked)
}

/// A heartbeat's identity, room name and time.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatAt<'a> {
    pub room_name: &'a str,
    pub identity: &'a str,
    pub at_ms: i64,
}

/// Where a heartbeat falls, as stored. Heartbeats carry no room sid (the token names the room):
/// one counts for the meeting of its room name running at its time only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatMeeting {
    /// The latest-started meeting of the room name that had started by then and had not ended
    /// before.
    pub running: Option<String>,
    /// Whether the identity has joined that meeting.
    pub joined: bool,
    /// Meetings of the room name created in the last minute that their events have not started
    /// yet: another transaction may be applying the events that start them.
    pub in_flight: Vec<String>,
}

impl HeartbeatMeeting {
    /// The heartbeat's meeting is known for sure: one is running, the identity joined it, and no
    /// later one may be on its way. Otherwise the events that tell may not be applied yet (the
    /// join, or the start of the next meeting, applied by another replica or still in the
    /// stream).
    pub fn is_certain(&self) -> bool {
        self.running.is_some() && self.joined && self.in_flight.is_empty()
    }
}

/// Where each heartbeat falls ([`HeartbeatMeeting`]). Index probes per heartbeat, whatever the
/// number of meetings and participants.
pub async fn heartbeat_meetings(
    conn: &mut PgConnection,
    heartbeats: &[HeartbeatAt<'_>],
) -> Result<Vec<HeartbeatMeeting>, sqlx::Error> {
    if heartbeats.is_empty() {
        return Ok(Vec::new());
    }
    find_heartbeat_meetings(&mut *conn, heartbeats, None).await
}

/// [`create_meetings`] and [`heartbeat_meetings`] (as stored before the creation) in one round
/// trip, outside any transaction: what a batch does before it locks.
pub async fn create_meetings_and_find_heartbeats(
    pool: &PgPool,
    meetings: &BTreeMap<String, String>,
    heartbeats: &[HeartbeatAt<'_>],
) -> Result<Vec<HeartbeatMeeting>, sqlx::Error> {
    if meetings.is_empty() && heartbeats.is_empty() {
        return Ok(Vec::new());
    }
    find_heartbeat_meetings(&mut *pool.acquire().await?, heartbeats, Some(meetings)).await
}

/// Per heartbeat ($1 room name, $2 identity, $3 time): its ordinal, the meeting running, whether
/// the identity joined it, the meetings in flight. Scalar and array subqueries, not EXISTS or
/// joins: the planner may turn those into a scan of a whole table it believes small.
const FIND_HEARTBEAT_MEETINGS: &str = "
    SELECT h.n, m.room_sid,
           coalesce((SELECT true FROM meeting_participants p
                     WHERE p.room_sid = m.room_sid AND p.identity = h.identity), false),
           ARRAY(SELECT f.room_sid FROM meetings f
                 WHERE f.room_name = h.room_name AND f.started_at IS NULL
                   AND f.created_at > now() - interval '1 minute'
                 ORDER BY f.room_sid)
    FROM unnest($1::text[], $2::text[], $3::timestamptz[]) WITH ORDINALITY AS h (room_name, identity, at, n)
    LEFT JOIN LATERAL (
        SELECT room_sid FROM meetings
        WHERE room_name = h.room_name AND started_at <= h.at AND (ended_at IS NULL OR ended_at >= h.at)
        ORDER BY started_at DESC, room_sid DESC LIMIT 1
    ) m ON true";

/// [`FIND_HEARTBEAT_MEETINGS`], creating the meetings of `to_create` first if given.
async fn find_heartbeat_meetings(
    conn: &mut PgConnection,
    heartbeats: &[HeartbeatAt<'_>],
    to_create: Option<&BTreeMap<String, String>>,
) -> Result<Vec<HeartbeatMeeting>, sqlx::Error> {
    let names: Vec<&str> = heartbeats.iter().map(|h| h.room_name).collect();
    let identities: Vec<&str> = heartbeats.iter().map(|h| h.identity).collect();
    let times: Vec<OffsetDateTime> = heartbeats.iter().map(|h| timestamp(h.at_ms)).collect();
    // Built once: this runs for every batch.
    static CREATE_THEN_FIND: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WITH created AS (
                 INSERT INTO meetings (room_sid, room_name)
                 SELECT * FROM unnest($4::text[], $5::text[]) ORDER BY 1 ON CONFLICT (room_sid) DO NOTHING
             )
             {FIND_HEARTBEAT_MEETINGS}"
        )
    });
    let statement: &'static str = match to_create {
        None => FIND_HEARTBEAT_MEETINGS,
        Some(_) => CREATE_THEN_FIND.as_str(),
    };
    let mut query = sqlx::query_as::<_, (i64, Option<String>, bool, Vec<String>)>(sqlx::AssertSqlSafe(statement))
        .bind(&names)
        .bind(&identities)
        .bind(&times);
    if let Some(to_create) = to_create {
        query = query
            .bind(to_create.keys().map(String::as_str).collect::<Vec<_>>())
            .bind(to_create.values().map(String::as_str).collect::<Vec<_>>());
    }
    let rows = query.fetch_all(&mut *conn).await?;
    let mut found = vec![HeartbeatMeeting::default(); heartbeats.len()];
    for (n, running, joined, in_flight) in rows {
        if let Some(slot) = usize::try_from(n - 1).ok().and_then(|i| found.get_mut(i)) {
            *slot = HeartbeatMeeting { running, joined, in_flight };
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

/// Stores the meetings' spans and room timeouts, room sid → them. One statement.
pub async fn write_spans(
    conn: &mut PgConnection,
    spans: &BTreeMap<String, (MeetingSpan, RoomTimeouts)>,
) -> Result<(), sqlx::Error> {
    if spans.is_empty() {
        return Ok(());
    }
    let room_sids: Vec<&str> = spans.keys().map(String::as_str).collect();
    let started: Vec<Option<OffsetDateTime>> = spans.values().map(|(s, _)| s.started_at_ms.map(timestamp)).collect();
    let ended: Vec<Option<OffsetDateTime>> = spans.values().map(|(s, _)| s.ended_at_ms.map(timestamp)).collect();
    let ended_by: Vec<Option<&str>> = spans.values().map(|(s, _)| s.ended_by.map(|by| by.as_str())).collect();
    let seconds = |s: Option<u32>| s.and_then(|s| i32::try_from(s).ok());
    let empty: Vec<Option<i32>> = spans.values().map(|(_, t)| seconds(t.empty_s)).collect();
    let departure: Vec<Option<i32>> = spans.values().map(|(_, t)| seconds(t.departure_s)).collect();
    sqlx::query(
        "UPDATE meetings m SET started_at = s.started_at, ended_at = s.ended_at, ended_by = s.ended_by,
                               empty_timeout_s = s.empty_timeout_s, departure_timeout_s = s.departure_timeout_s
         FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::int4[], $6::int4[])
              AS s (room_sid, started_at, ended_at, ended_by, empty_timeout_s, departure_timeout_s)
         WHERE m.room_sid = s.room_sid
           -- Most batches change no span: no new row version then.
           AND (m.started_at, m.ended_at, m.ended_by, m.empty_timeout_s, m.departure_timeout_s)
               IS DISTINCT FROM (s.started_at, s.ended_at, s.ended_by, s.empty_timeout_s, s.departure_timeout_s)",
    )
    .bind(&room_sids)
    .bind(&started)
    .bind(&ended)
    .bind(&ended_by)
    .bind(&empty)
    .bind(&departure)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A running meeting with no one in it, that LiveKit should have closed by now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleMeeting {
    pub room_sid: String,
    pub started_at_ms: i64,
    pub latest_left_ms: Option<i64>,
    pub timeouts: RoomTimeouts,
}

/// Running meetings (rebuilt, not ended) with no open cycle that started before `started_before_ms`
/// (at most 1 000 a call, oldest first): candidates for an inferred end.
pub async fn idle_meetings(pool: &PgPool, started_before_ms: i64) -> Result<Vec<IdleMeeting>, sqlx::Error> {
    let mut connection = pool.acquire().await?;
    idle_meetings_where(&mut connection, "m.started_at < $1", IdleFilter::StartedBefore(started_before_ms)).await
}

enum IdleFilter<'a> {
    StartedBefore(i64),
    Meeting(&'a str),
}

async fn idle_meetings_where(
    conn: &mut PgConnection,
    condition: &'static str,
    filter: IdleFilter<'_>,
) -> Result<Vec<IdleMeeting>, sqlx::Error> {
    type Row = (String, OffsetDateTime, Option<OffsetDateTime>, Option<i32>, Option<i32>);
    let query = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(format!(
        "SELECT m.room_sid, m.started_at, max(p.last_left_at), m.empty_timeout_s, m.departure_timeout_s
         FROM meetings m LEFT JOIN meeting_participants p USING (room_sid)
         WHERE {condition} AND m.ended_at IS NULL AND m.started_at IS NOT NULL AND NOT m.needs_recompute
           AND NOT EXISTS (SELECT 1 FROM cycles c WHERE c.room_sid = m.room_sid AND c.left_at IS NULL)
         GROUP BY m.room_sid
         ORDER BY m.started_at LIMIT 1000"
    )));
    let query = match filter {
        IdleFilter::StartedBefore(ms) => query.bind(timestamp(ms)),
        IdleFilter::Meeting(room_sid) => query.bind(room_sid.to_owned()),
    };
    let rows = query.fetch_all(&mut *conn).await?;
    let seconds = |s: Option<i32>| s.and_then(|s| u32::try_from(s).ok());
    Ok(rows
        .into_iter()
        .map(|(room_sid, started_at, latest_left, empty, departure)| IdleMeeting {
            room_sid,
            started_at_ms: unix_ms(started_at),
            latest_left_ms: latest_left.map(unix_ms),
            timeouts: RoomTimeouts { empty_s: seconds(empty), departure_s: seconds(departure) },
        })
        .collect())
}

/// The meeting, if it is still running (rebuilt, not ended) with no open cycle.
pub async fn idle_meeting(conn: &mut PgConnection, room_sid: &str) -> Result<Option<IdleMeeting>, sqlx::Error> {
    let rows = idle_meetings_where(&mut *conn, "m.room_sid = $1", IdleFilter::Meeting(room_sid)).await?;
    Ok(rows.into_iter().next())
}

/// Records the sweeper's inferred end of a meeting (locked by the caller's transaction).
pub async fn record_inferred_end(conn: &mut PgConnection, room_sid: &str, ended_at_ms: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO meeting_end_estimates (room_sid, ended_at) VALUES ($1, $2)
         ON CONFLICT (room_sid) DO UPDATE SET ended_at = excluded.ended_at",
    )
    .bind(room_sid)
    .bind(timestamp(ended_at_ms))
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
