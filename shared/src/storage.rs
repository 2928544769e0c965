//! Attendance in PostgreSQL: the event log, the participants and their cycles, and the presence
//! outbox.
//!
//! Invariant: after every commit, a participant's row and cycles equal the attendance rule
//! applied to the events in the log ([`recompute_participants`] is the only writer). That makes
//! applying an event idempotent and order-independent, whichever replica applies it. Changes to a
//! room are serialized by locking its `rooms` row ([`lock_free_rooms`]): waiting only in name
//! order, or skipping the rooms another transaction holds, so that two transactions never wait
//! on each other in a cycle.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::migrate::Migrator;
use sqlx::{PgConnection, Row as _};
use time::OffsetDateTime;

use crate::attendance::{self, Attendance, Fact};
use crate::event::WebhookEvent;

/// The schema, embedded in every binary and applied at start-up. sqlx holds an advisory lock
/// while migrating, so replicas starting together are safe.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// What the event log keeps of one event.
#[derive(Debug, Clone)]
pub struct LoggedEvent<'a> {
    pub event: &'a WebhookEvent,
    pub payload: &'a str,
    pub received_at_ms: Option<i64>,
    pub stream_sequence: Option<u64>,
}

/// A participant whose "present now" flipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    pub room_name: String,
    pub identity: String,
    pub present: bool,
    pub changed_at_ms: i64,
}

/// Converts unix milliseconds to a timestamp (saturating at the representable range).
pub fn timestamp(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Converts a timestamp to unix milliseconds.
pub fn unix_ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn non_empty(s: Option<&String>) -> Option<&str> {
    s.map(String::as_str).filter(|s| !s.is_empty())
}

/// Inserts events into the log, one statement for all; an event whose id is already there is
/// left as it is. Returns the ids inserted. Ids must be distinct. Fails as a whole if PostgreSQL
/// refuses any event's data (the caller then finds which, one at a time).
pub async fn insert_events(
    conn: &mut PgConnection,
    events: &[LoggedEvent<'_>],
) -> Result<BTreeSet<String>, sqlx::Error> {
    if events.is_empty() {
        return Ok(BTreeSet::new());
    }
    let ids: Vec<&str> = events.iter().map(|l| l.event.id.as_str()).collect();
    let types: Vec<&str> = events.iter().map(|l| l.event.event.as_str()).collect();
    let created: Vec<Option<OffsetDateTime>> =
        events.iter().map(|l| l.event.created_at.map(|s| timestamp(s.saturating_mul(1000)))).collect();
    let received: Vec<Option<OffsetDateTime>> = events.iter().map(|l| l.received_at_ms.map(timestamp)).collect();
    let room_names: Vec<Option<&str>> =
        events.iter().map(|l| non_empty(l.event.room.as_ref().map(|r| &r.name))).collect();
    let room_sids: Vec<Option<&str>> =
        events.iter().map(|l| non_empty(l.event.room.as_ref().map(|r| &r.sid))).collect();
    let identities: Vec<Option<&str>> =
        events.iter().map(|l| non_empty(l.event.participant.as_ref().map(|p| &p.identity))).collect();
    let participant_sids: Vec<Option<&str>> =
        events.iter().map(|l| non_empty(l.event.participant.as_ref().map(|p| &p.sid))).collect();
    let sequences: Vec<Option<i64>> =
        events.iter().map(|l| l.stream_sequence.and_then(|s| i64::try_from(s).ok())).collect();
    let payloads: Vec<&str> = events.iter().map(|l| l.payload).collect();
    sqlx::query_scalar(
        "INSERT INTO webhook_events
             (event_id, event_type, created_at, received_at, room_name, room_sid, identity, participant_sid,
              stream_sequence, payload)
         SELECT event_id, event_type, created_at, received_at, room_name, room_sid, identity, participant_sid,
                stream_sequence, payload::jsonb
         FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::int8[], $10::text[])
              AS e (event_id, event_type, created_at, received_at, room_name, room_sid, identity, participant_sid,
                    stream_sequence, payload)
         ON CONFLICT (event_id) DO NOTHING
         RETURNING event_id",
    )
    .bind(&ids)
    .bind(&types)
    .bind(&created)
    .bind(&received)
    .bind(&room_names)
    .bind(&room_sids)
    .bind(&identities)
    .bind(&participant_sids)
    .bind(&sequences)
    .bind(&payloads)
    .fetch_all(&mut *conn)
    .await
    .map(|inserted: Vec<String>| inserted.into_iter().collect())
}

/// Creates the rows of rooms not seen before, in a statement of its own (not inside the
/// caller's transaction), so that locking them later never waits on another transaction's
/// uncommitted insert of the same room.
pub async fn create_rooms(pool: &sqlx::PgPool, names: &BTreeSet<String>) -> Result<(), sqlx::Error> {
    if names.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    sqlx::query("INSERT INTO rooms (name) SELECT unnest($1::text[]) ORDER BY 1 ON CONFLICT (name) DO NOTHING")
        .bind(&names)
        .execute(pool)
        .await?;
    Ok(())
}

/// Locks the rooms of `wait_for`, waiting for them in name order, then those of `if_free` that
/// no other transaction holds, without waiting. Returns every room locked. The rows must exist
/// ([`create_rooms`]). A transaction only ever waits before it skips, and waits in name order,
/// so no cycle of waits can form.
pub async fn lock_free_rooms(
    conn: &mut PgConnection,
    wait_for: &BTreeSet<String>,
    if_free: &BTreeSet<String>,
) -> Result<BTreeSet<String>, sqlx::Error> {
    let mut locked = BTreeSet::new();
    if !wait_for.is_empty() {
        let names: Vec<&str> = wait_for.iter().map(String::as_str).collect();
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT name FROM rooms WHERE name = ANY($1) ORDER BY name FOR UPDATE")
                .bind(&names)
                .fetch_all(&mut *conn)
                .await?;
        locked.extend(rows);
    }
    let names: Vec<&str> = if_free.difference(wait_for).map(String::as_str).collect();
    if !names.is_empty() {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT name FROM rooms WHERE name = ANY($1) ORDER BY name FOR UPDATE SKIP LOCKED")
                .bind(&names)
                .fetch_all(&mut *conn)
                .await?;
        locked.extend(rows);
    }
    Ok(locked)
}

/// Identities with events in a room instance (those a room_finished may close).
pub async fn identities_in_room_instance(
    conn: &mut PgConnection,
    room_name: &str,
    room_sid: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT identity FROM webhook_events
         WHERE room_name = $1 AND room_sid = $2 AND identity IS NOT NULL ORDER BY identity",
    )
    .bind(room_name)
    .bind(room_sid)
    .fetch_all(&mut *conn)
    .await
}

/// Every identity with events in a room.
pub async fn identities_in_room(conn: &mut PgConnection, room_name: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT identity FROM webhook_events WHERE room_name = $1 AND identity IS NOT NULL ORDER BY identity",
    )
    .bind(room_name)
    .fetch_all(&mut *conn)
    .await
}

/// The facts the rule needs for each participant (room name, identity): its own events, the
/// room_finished events of the room instances it was in, and the sweeper's closures. Two
/// statements for any number of participants.
pub async fn load_facts_of(
    conn: &mut PgConnection,
    participants: &[(String, String)],
) -> Result<BTreeMap<(String, String), Vec<Fact>>, sqlx::Error> {
    let rooms: Vec<&str> = participants.iter().map(|p| p.0.as_str()).collect();
    let identities: Vec<&str> = participants.iter().map(|p| p.1.as_str()).collect();
    let events: Vec<(String, String, String)> = sqlx::query_as(
        "WITH p AS (SELECT DISTINCT * FROM unnest($1::text[], $2::text[]) AS p (room_name, identity))
         SELECT p.room_name, p.identity, e.payload::text FROM p
         JOIN webhook_events e ON e.room_name = p.room_name AND e.identity = p.identity
         UNION ALL
         SELECT p.room_name, p.identity, f.payload::text FROM p
         JOIN webhook_events f ON f.room_name = p.room_name AND f.event_type = 'room_finished'
         WHERE f.room_sid IN (SELECT e.room_sid FROM webhook_events e
                              WHERE e.room_name = p.room_name AND e.identity = p.identity)",
    )
    .bind(&rooms)
    .bind(&identities)
    .fetch_all(&mut *conn)
    .await?;
    let closures: Vec<(String, String, String, String, OffsetDateTime)> = sqlx::query_as(
        "SELECT c.room_name, c.identity, c.participant_sid, c.closed_by, c.closed_at FROM cycle_closures c
         JOIN (SELECT DISTINCT * FROM unnest($1::text[], $2::text[]) AS p (room_name, identity)) p
           USING (room_name, identity)",
    )
    .bind(&rooms)
    .bind(&identities)
    .fetch_all(&mut *conn)
    .await?;

    let mut facts: BTreeMap<(String, String), Vec<Fact>> =
        participants.iter().map(|participant| (participant.clone(), Vec::new())).collect();
    for (room_name, identity, payload) in events {
        // Only events that parsed are logged; a failure here would be a bug, not bad input.
        match WebhookEvent::parse(payload.as_bytes()).ok().map(|e| Fact::from_event(&e)) {
            Some(Ok(Some(fact))) => facts.entry((room_name, identity)).or_default().push(fact),
            Some(Ok(None)) => {}
            _ => tracing::error!(room_name, identity, "a logged event no longer parses; ignored"),
        }
    }
    for (room_name, identity, participant_sid, closed_by, closed_at) in closures {
        let Some(closed_by) = attendance::ClosedBy::parse(&closed_by) else { continue };
        let fact = Fact {
            event_id: format!("closure:{participant_sid}:{}", closed_by.as_str()),
            created_at_ms: unix_ms(closed_at),
            room_name: room_name.clone(),
            room_sid: String::new(),
            kind: attendance::FactKind::Closure { identity: identity.clone(), participant_sid, closed_by },
        };
        facts.entry((room_name, identity)).or_default().push(fact);
    }
    Ok(facts)
}

/// What caused a recompute, for the presence outbox: an event id (or `recompute`, `sweeper`)
/// and the trace context to continue when the change is published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cause {
    pub event_id: String,
    pub traceparent: Option<String>,
}

impl Cause {
    pub fn named(event_id: &str) -> Self {
        Cause { event_id: event_id.to_owned(), traceparent: None }
    }
}

/// Recomputes participants, (room name, identity) → what caused it, from the log and stores the
/// results; writes a presence change to the outbox for each whose "present now" flipped. A fixed
/// number of statements whatever their number. The rooms must be locked by the caller's
/// transaction. Returns the presence changes written.
pub async fn recompute_participants(
    conn: &mut PgConnection,
    participants: &BTreeMap<(String, String), Cause>,
) -> Result<Vec<PresenceChange>, sqlx::Error> {
    if participants.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<(String, String)> = participants.keys().cloned().collect();
    let facts = load_facts_of(conn, &keys).await?;
    let computed: Vec<(&str, Attendance)> = facts
        .iter()
        .filter_map(|((room_name, identity), facts)| {
            Some((room_name.as_str(), attendance::participant_attendance(identity, facts)?))
        })
        .collect();
    if computed.is_empty() {
        return Ok(Vec::new());
    }
    let rooms: Vec<&str> = computed.iter().map(|(room, _)| *room).collect();
    let identities: Vec<&str> = computed.iter().map(|(_, a)| a.identity.as_str()).collect();
    let was_present: BTreeMap<(String, String), bool> = sqlx::query_as::<_, (String, String, bool)>(
        "SELECT room_name, identity, present FROM participants
         JOIN unnest($1::text[], $2::text[]) AS p (room_name, identity) USING (room_name, identity)",
    )
    .bind(&rooms)
    .bind(&identities)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|(room_name, identity, present)| ((room_name, identity), present))
    .collect();
    write_attendance(conn, &computed).await?;

    let changes: Vec<(PresenceChange, &Cause)> = computed
        .iter()
        .filter_map(|(room_name, attendance)| {
            let key = ((*room_name).to_owned(), attendance.identity.clone());
            if was_present.get(&key).copied().unwrap_or(false) == attendance.present {
                return None;
            }
            let change = PresenceChange {
                room_name: key.0.clone(),
                identity: key.1.clone(),
                present: attendance.present,
                changed_at_ms: presence_changed_at(attendance),
            };
            Some((change, &participants[&key]))
        })
        .collect();
    if !changes.is_empty() {
        let rooms: Vec<&str> = changes.iter().map(|(c, _)| c.room_name.as_str()).collect();
        let identities: Vec<&str> = changes.iter().map(|(c, _)| c.identity.as_str()).collect();
        let event_ids: Vec<&str> = changes.iter().map(|(_, cause)| cause.event_id.as_str()).collect();
        let present: Vec<bool> = changes.iter().map(|(c, _)| c.present).collect();
        let changed_at: Vec<OffsetDateTime> = changes.iter().map(|(c, _)| timestamp(c.changed_at_ms)).collect();
        let traceparents: Vec<Option<&str>> = changes.iter().map(|(_, cause)| cause.traceparent.as_deref()).collect();
        // In the order given, so that the outbox ids follow it.
        sqlx::query(
            "INSERT INTO presence_outbox (room_name, identity, present, changed_at, event_id, traceparent)
             SELECT room_name, identity, present, changed_at, event_id, traceparent
             FROM unnest($1::text[], $2::text[], $3::bool[], $4::timestamptz[], $5::text[], $6::text[])
                  WITH ORDINALITY AS c (room_name, identity, present, changed_at, event_id, traceparent, n)
             ORDER BY n",
        )
        .bind(&rooms)
        .bind(&identities)
        .bind(&present)
        .bind(&changed_at)
        .bind(&event_ids)
        .bind(&traceparents)
        .execute(&mut *conn)
        .await?;
    }
    Ok(changes.into_iter().map(|(change, _)| change).collect())
}

/// When the participant became present (its latest open cycle's start) or absent (its last left).
fn presence_changed_at(attendance: &Attendance) -> i64 {
    if attendance.present {
        attendance.cycles.iter().filter(|c| c.left_at_ms.is_none()).map(|c| c.joined_at_ms).max().unwrap_or_default()
    } else {
        attendance.last_left_at_ms.unwrap_or_default()
    }
}

/// Stores computed attendance, (room name, attendance) each: the participants' rows and cycles.
async fn write_attendance(conn: &mut PgConnection, computed: &[(&str, Attendance)]) -> Result<(), sqlx::Error> {
    let rooms: Vec<&str> = computed.iter().map(|(room, _)| *room).collect();
    let column = |f: fn(&Attendance) -> &str| computed.iter().map(|(_, a)| f(a)).collect::<Vec<&str>>();
    let present: Vec<bool> = computed.iter().map(|(_, a)| a.present).collect();
    let attended: Vec<i64> = computed.iter().map(|(_, a)| a.attended_ms).collect();
    let count = |n: i64| i32::try_from(n).unwrap_or(i32::MAX);
    let joins: Vec<i32> = computed.iter().map(|(_, a)| count(a.join_count)).collect();
    let leaves: Vec<i32> = computed.iter().map(|(_, a)| count(a.leave_count)).collect();
    let first_joined: Vec<Option<OffsetDateTime>> =
        computed.iter().map(|(_, a)| a.first_joined_at_ms.map(timestamp)).collect();
    let last_left: Vec<Option<OffsetDateTime>> =
        computed.iter().map(|(_, a)| a.last_left_at_ms.map(timestamp)).collect();
    sqlx::query(
        "INSERT INTO participants
             (room_name, identity, name, metadata, kind, present, attended_ms, join_count, leave_count,
              first_joined_at, last_left_at, updated_at)
         SELECT *, now() FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bool[],
                                     $7::int8[], $8::int4[], $9::int4[], $10::timestamptz[], $11::timestamptz[])
         ORDER BY 1, 2
         ON CONFLICT (room_name, identity) DO UPDATE SET
             name = excluded.name, metadata = excluded.metadata, kind = excluded.kind, present = excluded.present,
             attended_ms = excluded.attended_ms, join_count = excluded.join_count,
             leave_count = excluded.leave_count, first_joined_at = excluded.first_joined_at,
             last_left_at = excluded.last_left_at, updated_at = now()",
    )
    .bind(&rooms)
    .bind(column(|a| a.identity.as_str()))
    .bind(column(|a| a.name.as_str()))
    .bind(column(|a| a.metadata.as_str()))
    .bind(column(|a| a.kind.as_str()))
    .bind(&present)
    .bind(&attended)
    .bind(&joins)
    .bind(&leaves)
    .bind(&first_joined)
    .bind(&last_left)
    .execute(&mut *conn)
    .await?;

    sqlx::query(
        "DELETE FROM cycles USING unnest($1::text[], $2::text[]) AS p (room_name, identity)
         WHERE cycles.room_name = p.room_name AND cycles.identity = p.identity",
    )
    .bind(&rooms)
    .bind(column(|a| a.identity.as_str()))
    .execute(&mut *conn)
    .await?;
    let cycles: Vec<(&str, &str, &attendance::Cycle)> = computed
        .iter()
        .flat_map(|(room, a)| a.cycles.iter().map(move |cycle| (*room, a.identity.as_str(), cycle)))
        .collect();
    if cycles.is_empty() {
        return Ok(());
    }
    let cycle_rooms: Vec<&str> = cycles.iter().map(|c| c.0).collect();
    let cycle_identities: Vec<&str> = cycles.iter().map(|c| c.1).collect();
    let sids: Vec<&str> = cycles.iter().map(|c| c.2.participant_sid.as_str()).collect();
    let room_sids: Vec<&str> = cycles.iter().map(|c| c.2.room_sid.as_str()).collect();
    let joined: Vec<OffsetDateTime> = cycles.iter().map(|(_, _, c)| timestamp(c.joined_at_ms)).collect();
    let left: Vec<Option<OffsetDateTime>> = cycles.iter().map(|(_, _, c)| c.left_at_ms.map(timestamp)).collect();
    let closed_by: Vec<Option<&str>> = cycles.iter().map(|(_, _, c)| c.closed_by.map(|b| b.as_str())).collect();
    sqlx::query(
        "INSERT INTO cycles (room_name, identity, participant_sid, room_sid, joined_at, left_at, closed_by)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                              $6::timestamptz[], $7::text[])",
    )
    .bind(&cycle_rooms)
    .bind(&cycle_identities)
    .bind(&sids)
    .bind(&room_sids)
    .bind(&joined)
    .bind(&left)
    .bind(&closed_by)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

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
            attendance.cycles.push(attendance::Cycle {
                participant_sid,
                room_sid: row.try_get("room_sid")?,
                joined_at_ms: unix_ms(row.try_get("joined_at")?),
                left_at_ms: row.try_get::<Option<OffsetDateTime>, _>("left_at")?.map(unix_ms),
                closed_by: row
                    .try_get::<Option<String>, _>("closed_by")?
                    .as_deref()
                    .and_then(attendance::ClosedBy::parse),
            });
        }
    }
    Ok(room)
}

/// Records client heartbeats (keeping each participant's latest) and removes the
/// heartbeat-timeout estimates they prove wrong: the participant was still there. Returns the
/// participants that had such an estimate removed (the caller then recomputes them). Two
/// statements for any number of heartbeats. The rooms must be locked.
pub async fn record_heartbeats(
    conn: &mut PgConnection,
    heartbeats: &[(&str, &str, i64)],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    if heartbeats.is_empty() {
        return Ok(Vec::new());
    }
    let rooms: Vec<&str> = heartbeats.iter().map(|h| h.0).collect();
    let identities: Vec<&str> = heartbeats.iter().map(|h| h.1).collect();
    let times: Vec<OffsetDateTime> = heartbeats.iter().map(|h| timestamp(h.2)).collect();
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

/// RFC 3339 in UTC with milliseconds (`2026-11-25T10:00:00.000Z`), the API's time format.
pub fn rfc3339_ms(ms: i64) -> String {
    let at = timestamp(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_with_milliseconds_in_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_495_151_045), "2026-11-24T04:39:11.045Z");
        assert_eq!(unix_ms(timestamp(1_795_495_151_045)), 1_795_495_151_045);
    }
}
